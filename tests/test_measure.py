"""Parameters, FLOPs and latency (pruning/measure.py) and loading pruned models (pruning/serialize.py).

Analytic FLOPs are checked for equality against ``torch.utils.flop_counter.FlopCounterMode`` on the real
forward calls (the planner included), for dense and structurally pruned models.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from conftest import tiny_cfg
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from pruning import model_groups, prune
from pruning.measure import component_flops, count_params, measure_latency, mlp_flops
from pruning.serialize import resize_to_state_dict
from pruning.study.cost_model import plan_flops, policy_action_flops, tdmpc_latency
from tdmpc.config import ModelConfig, PlannerConfig
from tdmpc.planner import MPPIPlanner
from tdmpc.world_model import WorldModel

OBS, ACT = 5, 2


def small_cfg(width: int = 32, latent: int = 32, num_q: int = 3) -> ModelConfig:
    return ModelConfig(enc_dim=width, mlp_dim=width, latent_dim=latent, num_enc_layers=2, num_q=num_q, num_bins=21)


def planner_cfg(num_pi_trajs: int = 3) -> PlannerConfig:
    return PlannerConfig(iterations=2, num_samples=12, num_elites=4, num_pi_trajs=num_pi_trajs, horizon=3)


def counted(fn) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def pruned_model(ratio: float, prune_latent: bool = True, num_q: int = 3, seed: int = 0) -> WorldModel:
    model = WorldModel(OBS, ACT, small_cfg(num_q=num_q))
    groups = model_groups(model, couplings=prune_latent)
    gen = torch.Generator().manual_seed(seed)
    if ratio > 0:
        prune(groups, {g.name: torch.rand(g.size, generator=gen) for g in groups}, ratio, scope="global")
    return model.eval()


# ----------------------------------------------------------------------------- params


def test_count_params_per_component_total_and_target_separate():
    model = WorldModel(OBS, ACT, small_cfg(32, 32))
    counts = count_params(model)
    assert list(counts) == ["encoder", "dynamics", "reward", "qs", "policy", "total", "target_qs"]
    # By hand from the architecture: Linear in*out + out, LayerNorm 2*width.
    lin = lambda i, o: i * o + o  # noqa: E731
    za = 32 + ACT
    assert counts["encoder"] == lin(OBS, 32) + 64 + lin(32, 32) + 64
    assert counts["dynamics"] == lin(za, 32) + 64 + lin(32, 32) + 64 + lin(32, 32) + 64
    assert counts["reward"] == lin(za, 32) + 64 + lin(32, 32) + 64 + lin(32, 21)
    assert counts["qs"] == 3 * counts["reward"]
    assert counts["policy"] == lin(32, 32) + 64 + lin(32, 32) + 64 + lin(32, 2 * ACT)
    assert counts["total"] == sum(counts[c] for c in model.components)
    assert counts["target_qs"] == counts["qs"]
    assert counts["total"] + counts["target_qs"] == sum(p.numel() for p in model.parameters())


def test_params_drop_as_expected_for_per_group_ratio():
    model = WorldModel(OBS, ACT, small_cfg(32, 32))
    groups = model_groups(model)
    gen = torch.Generator().manual_seed(1)
    prune(groups, {g.name: torch.rand(g.size, generator=gen) for g in groups}, 0.5, scope="per_group")
    half = WorldModel(OBS, ACT, small_cfg(16, 16))
    assert count_params(model) == count_params(half)
    assert plan_flops(model, planner_cfg()) == plan_flops(half, planner_cfg())
    # Hidden-hidden layers shrink 4x, input / output layers 2x: the dense count is between 2x and 4x.
    dense = WorldModel(OBS, ACT, small_cfg(32, 32))
    assert 2 < count_params(dense)["total"] / count_params(model)["total"] < 4


def test_count_params_rejects_models_without_components():
    with pytest.raises(ValueError, match="components"):
        count_params(nn.Linear(2, 2))


# ----------------------------------------------------------------------------- FLOPs


@settings(max_examples=25, deadline=None)
@given(dims=st.lists(st.integers(1, 9), min_size=2, max_size=5), batch=st.integers(1, 7))
def test_mlp_flops_equal_flop_counter(dims, batch):
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers += [nn.Linear(dims[i], dims[i + 1]), nn.LayerNorm(dims[i + 1]), nn.Mish()]
    net = nn.Sequential(*layers)
    expected = sum(2 * batch * a * b for a, b in zip(dims, dims[1:]))
    assert mlp_flops(net, batch) == expected == counted(lambda: net(torch.randn(batch, dims[0])))


def test_component_flops_equal_flop_counter_per_component():
    model = pruned_model(0.4)
    flops = component_flops(model, batch=6)
    z, a = torch.randn(6, model.encoder[-3].out_features), torch.randn(6, ACT)
    za = torch.cat([z, a], -1)
    calls = {"encoder": lambda: model.encoder(torch.randn(6, OBS)), "dynamics": lambda: model.dynamics(za),
             "reward": lambda: model.reward(za), "qs": lambda: model.qs(za), "policy": lambda: model.policy(z)}
    for name, call in calls.items():
        assert flops[name] == counted(call), name
    assert flops["total"] == sum(flops[c] for c in calls)


@pytest.mark.parametrize(
    ("ratio", "prune_latent", "num_q", "num_pi_trajs"),
    [(0.0, True, 3, 3), (0.5, True, 3, 3), (0.5, False, 3, 0), (0.3, True, 1, 2), (0.7, True, 2, 3)],
)
def test_plan_and_policy_flops_equal_flop_counter_on_real_calls(ratio, prune_latent, num_q, num_pi_trajs):
    model = pruned_model(ratio, prune_latent, num_q)
    pcfg = planner_cfg(num_pi_trajs)
    planner = MPPIPlanner(model, pcfg, ACT, discount=0.99)
    obs = torch.randn(1, OBS)
    analytic = plan_flops(model, pcfg)
    parts = plan_flops(model, pcfg, breakdown=True)
    assert parts["total"] == analytic == sum(v for k, v in parts.items() if k != "total")
    assert counted(lambda: planner.plan(model.encode(obs), eval_mode=True)) == analytic
    assert counted(lambda: planner.plan(model.encode(obs))) == analytic  # warm-started call: same work
    assert counted(lambda: model.pi(model.encode(obs))) == policy_action_flops(model)
    # The Q term evaluates min(2, num_q) members at num_samples + num_pi_trajs rows per iteration.
    n = pcfg.num_samples + num_pi_trajs
    assert parts["q"] == pcfg.iterations * min(2, num_q) * mlp_flops(model.qs.members[0], n)
    assert (parts["pi_rollouts"] == 0) == (num_pi_trajs == 0)


def test_plan_flops_fall_with_pruning_and_follow_the_widths():
    dense, pruned = pruned_model(0.0), pruned_model(0.5)
    pcfg = planner_cfg()
    fall = plan_flops(dense, pcfg) / plan_flops(pruned, pcfg)
    assert 2 < fall < 4.5
    with pytest.raises(ValueError, match="TD-MPC"):
        policy_action_flops(_NotTdmpc())
    with pytest.raises(ValueError, match="TD-MPC"):
        plan_flops(_NotTdmpc(), pcfg)


class _NotTdmpc(nn.Module):
    @property
    def components(self):
        return {"encoder": nn.Linear(2, 2)}


# ----------------------------------------------------------------------------- latency


def test_measure_latency_returns_plain_dict_and_validates_clock():
    calls = []
    out = measure_latency(lambda: calls.append(1), min_run_time=0.01, warmup=2)
    assert set(out) == {"median_ms", "iqr_ms", "repeats"}
    assert out["median_ms"] > 0 and out["iqr_ms"] >= 0 and out["repeats"] >= 1 and len(calls) > 2
    x = torch.randn(64, 64)
    small = measure_latency(lambda: x[:4, :4] @ x[:4, :4], min_run_time=0.05, clock="thread")
    big = measure_latency(lambda: x @ x @ x @ x, min_run_time=0.05, clock="thread")
    assert big["median_ms"] > small["median_ms"]
    with pytest.raises(ValueError, match="clock"):
        measure_latency(lambda: None, clock="cycles")
    with pytest.raises(ValueError, match="num_threads=1"):
        measure_latency(lambda: None, num_threads=2, clock="thread")


def test_tdmpc_latency_measures_policy_and_plan():
    model = pruned_model(0.5)
    planner = MPPIPlanner(model, planner_cfg(), ACT, discount=0.99)
    threads = torch.get_num_threads()
    lat = tdmpc_latency(model, planner, min_run_time=0.02)
    assert set(lat) == {"policy", "plan"}
    assert all(set(v) == {"median_ms", "iqr_ms", "repeats"} for v in lat.values())
    assert lat["plan"]["median_ms"] > lat["policy"]["median_ms"] > 0  # planning runs the policy and more
    assert torch.get_num_threads() == threads
    assert not model.training and planner.prev_mean.shape == (3, ACT)


def test_tdmpc_latency_times_the_actions_without_recording_a_graph(monkeypatch):
    """As an acting agent: no autograd graph (with one, the policy action took ~40 % longer)."""
    import pruning.study.cost_model as cost_model

    model = pruned_model(0.5)
    planner = MPPIPlanner(model, planner_cfg(), ACT, discount=0.99)
    graphs = []

    def once(fn, **kw):
        graphs.append(fn().requires_grad)
        return {"median_ms": 1.0, "iqr_ms": 0.0, "repeats": 1}
    monkeypatch.setattr(cost_model, "measure_latency", once)
    cost_model.tdmpc_latency(model, planner)
    assert graphs == [False, False]


def test_mish_inference_path_is_bit_identical_to_the_autograd_function():
    from tdmpc.layers import Mish, _MishFunction

    x = torch.cat([torch.randn(4000) * 6, torch.tensor([-100.0, -20.0, 0.0, 19.9, 20.0, 21.0, 100.0])])
    with torch.no_grad():
        fast = Mish()(x)
    assert torch.equal(fast, _MishFunction.apply(x))
    torch.testing.assert_close(fast, torch.nn.functional.mish(x), atol=1e-6, rtol=1e-6)
    xg = x.clone().requires_grad_(True)
    Mish()(xg).sum().backward()  # the training path still has its fused backward
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


# ----------------------------------------------------------------------------- loading pruned models


def _perturbed(model: WorldModel, seed: int) -> WorldModel:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


def test_resize_then_load_reproduces_pruned_world_model(tmp_path):
    model = _perturbed(WorldModel(OBS, ACT, small_cfg()), 7)  # target Qs now differ from the online Qs
    gen = torch.Generator().manual_seed(8)
    groups = model_groups(model)
    prune(model, {g.name: torch.rand(g.size, generator=gen) for g in groups}, 0.45, scope="global")
    path = tmp_path / "pruned.pt"
    torch.save({"model": model.state_dict(), "widths": model.widths()}, path)

    state = torch.load(path, weights_only=True)
    fresh = WorldModel(OBS, ACT, small_cfg())
    with pytest.raises(RuntimeError, match="size mismatch"):
        fresh.load_state_dict(state["model"])
    resized = resize_to_state_dict(fresh, state["model"])
    assert "target_qs.members.0.0" in resized and "encoder.0" in resized
    assert fresh.widths() == state["widths"] == model.widths()
    fresh.load_state_dict(state["model"])
    assert resize_to_state_dict(fresh, state["model"]) == []  # idempotent
    assert all(not p.requires_grad for p in fresh.target_qs.parameters())
    assert all(p.requires_grad for p in fresh.qs.parameters())
    for m in fresh.modules():
        if isinstance(m, nn.LayerNorm):
            assert m.normalized_shape == (m.weight.shape[0],)

    model.eval(), fresh.eval()
    obs, a = torch.randn(9, OBS), torch.rand(9, ACT) * 2 - 1
    z = model.encode(obs)
    assert torch.equal(fresh.encode(obs), z)
    assert torch.equal(fresh.next(z, a), model.next(z, a))
    assert torch.equal(fresh.reward_logits(z, a), model.reward_logits(z, a))
    assert torch.equal(fresh.policy(z), model.policy(z))
    for target in (False, True):
        assert torch.equal(fresh.Q(z, a, "all", target=target), model.Q(z, a, "all", target=target))
    assert not torch.equal(model.Q(z, a, "all", target=True), model.Q(z, a, "all"))


def test_resize_rejects_inconsistent_shapes_and_changes_nothing():
    net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    bad = {"0.weight": torch.zeros(2, 3), "0.bias": torch.zeros(3), "1.weight": torch.zeros(4)}
    with pytest.raises(ValueError, match="Linear '0'"):
        resize_to_state_dict(net, bad)
    with pytest.raises(ValueError, match="LayerNorm '1'"):
        resize_to_state_dict(net, {"1.weight": torch.zeros(2), "1.bias": torch.zeros(3)})
    assert net[0].weight.shape == (4, 3) and net[1].weight.shape == (4,)
    prefixed = {"model.0.weight": torch.zeros(2, 3), "model.0.bias": torch.zeros(2)}
    assert resize_to_state_dict(net, prefixed, prefix="model.") == ["0"]
    assert net[0].out_features == 2 and net[0].bias.shape == (2,)


def _batch(cfg, gen: torch.Generator):
    H, B = cfg.planner.horizon, cfg.optim.batch_size
    return (torch.randn(H + 1, B, OBS, generator=gen), torch.rand(H, B, ACT, generator=gen) * 2 - 1,
            torch.rand(H, B, 1, generator=gen), torch.zeros(H, B, 1))


def test_pruned_agent_checkpoint_loads_into_fresh_agent_and_training_continues(tmp_path):
    from tdmpc.agent import TDMPC

    cfg = tiny_cfg()
    gen = torch.Generator().manual_seed(9)
    agent = TDMPC(OBS, ACT, 100, cfg, torch.device("cpu"))
    agent.update(_batch(cfg, gen))  # Adam state exists
    groups = model_groups(agent.model)
    prune(agent.model, {g.name: torch.rand(g.size, generator=gen) for g in groups}, 0.5,
          optimizers=[agent.optim, agent.pi_optim])
    agent.update(_batch(cfg, gen))
    torch.save(agent.state_dict(), tmp_path / "agent.pt")

    state = torch.load(tmp_path / "agent.pt", weights_only=True)
    fresh = TDMPC(OBS, ACT, 100, tiny_cfg(), torch.device("cpu"))
    resize_to_state_dict(fresh.model, state["model"])
    fresh.build_optimizers()
    fresh.load_state_dict(state)
    assert fresh.model.widths() == state["widths"]
    assert state["widths"]["dynamics"][0] < cfg.model.mlp_dim  # really pruned
    assert count_params(fresh.model) == count_params(agent.model)

    batch = _batch(cfg, gen)
    torch.manual_seed(3)
    out_a = agent.update(batch)
    torch.manual_seed(3)
    out_b = fresh.update(batch)
    assert out_a == out_b
    for (n, p), (_, q) in zip(agent.model.state_dict().items(), fresh.model.state_dict().items()):
        assert torch.equal(p, q), n
    torch.manual_seed(4)
    act_a = agent.act(torch.randn(OBS), eval_mode=True)
    torch.manual_seed(4)
    act_b = fresh.act(torch.randn(OBS), eval_mode=True)
    assert torch.equal(act_a, act_b)

