"""Groups and structural pruning (pruning/groups.py, pruning/prune.py).

References are computed here from the dense weights by index selection, independently of the
implementation; Torch-Pruning's DependencyGraph is the oracle for the groups of plain MLPs.
"""

from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning import apply_pruning, build_groups, model_groups, prune, select_channels
from tdmpc.config import ModelConfig
from tdmpc.layers import Mish as TdmpcMish
from tdmpc.world_model import WorldModel

OBS, ACT = 5, 2


def small_cfg(width: int = 32, latent: int = 32) -> ModelConfig:
    return ModelConfig(enc_dim=width, mlp_dim=width, latent_dim=latent, num_enc_layers=2, num_q=3, num_bins=21)


def random_mlp(rng: random.Random, style: str) -> nn.Sequential:
    """2-4 Linear layers of random widths; hidden blocks per ``style``."""
    n = rng.randint(2, 4)
    dims = [rng.randint(2, 7) for _ in range(n + 1)]
    layers: list[nn.Module] = []
    for i in range(n):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < n - 1:
            if style == "relu":
                layers.append(nn.ReLU())
            elif style == "ln_mish":
                layers += [nn.LayerNorm(dims[i + 1]), nn.Mish()]
            else:  # TD-MPC's own Mish and a Dropout
                layers += [nn.LayerNorm(dims[i + 1]), TdmpcMish(), nn.Dropout(0.1)]
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------- reference helpers


def plan_sequential(seq: nn.Sequential, in_keep: torch.Tensor, outs: dict[int, torch.Tensor]) -> dict:
    """Kept ``(out, in)`` indices of every Linear / LayerNorm of ``seq`` (``outs``: Linear index -> kept rows)."""
    plan, cur = {}, in_keep
    for i, m in enumerate(seq):
        if isinstance(m, nn.Linear):
            out = outs.get(i, torch.arange(m.out_features))
            plan[m], cur = (out, cur), out
        elif isinstance(m, nn.LayerNorm):
            plan[m] = (cur, None)
    return plan


def ref_forward(seq: nn.Sequential, plan: dict, x: torch.Tensor) -> torch.Tensor:
    """Forward of the dense ``seq`` restricted to the kept indices of ``plan`` (eval mode)."""
    for m in seq:
        if isinstance(m, nn.Linear):
            out, inp = plan[m]
            x = F.linear(x, m.weight[out][:, inp], m.bias[out])
        elif isinstance(m, nn.LayerNorm):
            out, _ = plan[m]
            x = F.layer_norm(x, (len(out),), m.weight[out], m.bias[out], m.eps)
        elif isinstance(m, nn.Dropout):
            continue
        else:
            x = m(x)
    return x


def select(t: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor | None) -> torch.Tensor:
    """``t[rows][:, cols]`` (``t[rows]`` when ``cols`` is None)."""
    return t[rows] if cols is None else t[rows][:, cols]


def keep_to_outs(keep: dict[str, torch.Tensor], prefix: str) -> dict[int, torch.Tensor]:
    """``{"mlp/3": idx}`` -> ``{3: idx}`` for the groups of one Sequential."""
    return {int(n.rsplit("/", 1)[1]): idx for n, idx in keep.items() if n.rsplit("/", 1)[0] == prefix}


def random_keep(groups, gen: torch.Generator) -> dict[str, torch.Tensor]:
    keep = {}
    for g in groups:
        k = int(torch.randint(1, g.size + 1, (1,), generator=gen))
        keep[g.name] = torch.randperm(g.size, generator=gen)[:k]
    return keep


# ----------------------------------------------------------------------------- 1. Torch-Pruning oracle


@pytest.mark.parametrize("style", ["relu", "ln_mish", "ln_tdmpc_mish_dropout"])
def test_hidden_groups_match_torch_pruning(style):
    tp = pytest.importorskip("torch_pruning")
    rng = random.Random(f"groups-{style}")
    for _ in range(4):
        net = random_mlp(rng, style).eval()
        linears = [m for m in net if isinstance(m, nn.Linear)]
        dg = tp.DependencyGraph().build_dependency(net, example_inputs=torch.randn(2, linears[0].in_features))
        oracle = set()
        for grp in dg.get_all_groups(ignored_layers=[linears[-1]], root_module_types=[nn.Linear]):
            touched = frozenset(
                (dep.target.module, "out" if dg.is_out_channel_pruning_fn(dep.handler) else "in")
                for dep, _ in grp
                if isinstance(dep.target.module, (nn.Linear, nn.LayerNorm))
            )
            root = grp[0].dep.target.module
            oracle.add((root, len(grp[0].idxs), touched))
        ours = {
            (g.slices[0].module, g.size, frozenset((s.module, "out" if s.dim == 0 else "in") for s in g.slices))
            for g in build_groups({"mlp": net}, elementwise=(TdmpcMish,))
        }
        assert ours == oracle
        assert len(ours) == len(linears) - 1


# ----------------------------------------------------------------------------- 2. laws on MLPs


def test_pruned_relu_mlp_equals_dense_with_outgoing_weights_zeroed():
    rng, gen = random.Random(1), torch.Generator().manual_seed(1)
    for _ in range(6):
        net = random_mlp(rng, "relu")
        groups = build_groups({"mlp": net}, elementwise=(TdmpcMish,))
        for g in groups:  # channel i of every slice is row i of channel_views
            views = list(g.channel_views())
            assert torch.equal(views[0], net[int(g.name.split("/")[1])].weight.detach())
            assert all(v.shape[0] == g.size for v in views)
        keep = random_keep(groups, gen)
        zeroed = copy.deepcopy(net)
        with torch.no_grad():
            for name, idx in keep.items():
                k = int(name.split("/")[1])
                removed = torch.ones(net[k].out_features, dtype=torch.bool)
                removed[idx] = False
                zeroed[k + 2].weight[:, removed] = 0.0  # Linear -> ReLU -> next Linear
        apply_pruning(keep, groups)
        x = torch.randn(11, net[0].in_features, generator=gen)
        torch.testing.assert_close(net(x), zeroed(x), atol=1e-5, rtol=0)
        for name, idx in keep.items():
            assert net[int(name.split("/")[1])].out_features == len(idx)


@pytest.mark.parametrize("style", ["ln_mish", "ln_tdmpc_mish_dropout"])
def test_pruned_layernorm_mlp_equals_index_selection_reference(style):
    rng, gen = random.Random(f"ln-{style}"), torch.Generator().manual_seed(2)
    for _ in range(6):
        net = random_mlp(rng, style).eval()
        dense = copy.deepcopy(net)
        groups = build_groups({"mlp": net}, elementwise=(TdmpcMish,))
        keep = random_keep(groups, gen)
        apply_pruning(keep, groups)
        kept = {k: torch.sort(v).values for k, v in keep.items()}
        plan = plan_sequential(dense, torch.arange(dense[0].in_features), keep_to_outs(kept, "mlp"))
        x = torch.randn(9, dense[0].in_features, generator=gen)
        torch.testing.assert_close(net(x), ref_forward(dense, plan, x), atol=1e-5, rtol=1e-5)
        for m in net:
            if isinstance(m, nn.LayerNorm):
                assert m.normalized_shape == (m.weight.shape[0],)


# ----------------------------------------------------------------------------- 3. TD-MPC world model


def tdmpc_plans(dense: WorldModel, keep: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Reference plans per sequential of the dense model, from the TD-MPC layout (independent of groups)."""
    lat = keep["latent"]
    za = torch.cat([lat, dense.cfg.latent_dim + torch.arange(ACT)])
    plans = {
        "encoder": plan_sequential(dense.encoder, torch.arange(OBS), {0: keep["encoder/0"], 3: lat}),
        "dynamics": plan_sequential(
            dense.dynamics, za, {0: keep["dynamics/0"], 3: keep["dynamics/3"], 6: lat}
        ),
        "reward": plan_sequential(dense.reward, za, {0: keep["reward/0"], 3: keep["reward/3"]}),
        "policy": plan_sequential(dense.policy, lat, {0: keep["policy/0"], 3: keep["policy/3"]}),
    }
    for m in range(len(dense.qs)):
        outs = {0: keep[f"qs/{m}/0"], 4: keep[f"qs/{m}/4"]}
        plans[f"qs/{m}"] = plan_sequential(dense.qs.members[m], za, outs)
        plans[f"target_qs/{m}"] = plan_sequential(dense.target_qs.members[m], za, outs)
    return plans


def world_loss(model: WorldModel, gen: torch.Generator) -> torch.Tensor:
    obs = torch.randn(6, OBS, generator=gen)
    a = torch.rand(6, ACT, generator=gen) * 2 - 1
    z = model.encode(obs)
    out = [model.next(z, a), model.reward_logits(z, a), model.Q(z, a, "all"), model.policy(z)]
    return sum((o - 0.1).pow(2).mean() for o in out)


def test_tdmpc_world_model_pruned_equals_reference_and_optimizer_continues():
    gen = torch.Generator().manual_seed(3)
    model = WorldModel(obs_dim=OBS, action_dim=ACT, cfg=small_cfg())
    with torch.no_grad():  # non-zero heads and a target that differs from the online Qs
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(3):
        opt.zero_grad()
        world_loss(model, gen).backward()
        opt.step()
    dense = copy.deepcopy(model).eval()
    old_state = {n: {k: v.clone() for k, v in opt.state[p].items()} for n, p in model.named_parameters()
                 if p in opt.state}

    groups = model_groups(model)
    names = [g.name for g in groups]
    assert names == ["encoder/0", "dynamics/0", "dynamics/3", "reward/0", "reward/3", "qs/0/0", "qs/0/4",
                     "qs/1/0", "qs/1/4", "qs/2/0", "qs/2/4", "policy/0", "policy/3", "latent"]
    scores = {g.name: torch.rand(g.size, generator=gen) for g in groups}
    keep = prune(model, scores, 0.5, scope="per_group", optimizers=[opt])

    # Selection: the highest-scoring half of every group; the latent in whole simplices of 8.
    for g in groups:
        if g.kind == "hidden":
            expected = torch.sort(torch.argsort(scores[g.name])[g.size // 2:]).values
        else:
            units = torch.sort(torch.argsort(scores[g.name].reshape(-1, 8).sum(1))[2:]).values
            expected = (units[:, None] * 8 + torch.arange(8)).flatten()
        assert torch.equal(keep[g.name], expected), g.name
    assert not torch.equal(keep["qs/0/0"], keep["qs/1/0"])  # per-member indices

    # Widths, tied shapes and parameter count: exactly a freshly built model of half the widths.
    fresh = WorldModel(obs_dim=OBS, action_dim=ACT, cfg=small_cfg(16, 16))
    assert model.widths() == fresh.widths()
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in fresh.state_dict().items()}
    assert [p.shape for p in model.qs.parameters()] == [p.shape for p in model.target_qs.parameters()]
    n_dense, n_pruned = (sum(p.numel() for p in m.parameters()) for m in (dense, model))
    assert n_pruned == sum(p.numel() for p in fresh.parameters()) < n_dense
    assert all(not p.requires_grad for p in model.target_qs.parameters())

    # Every output against the index-selection reference from the dense weights.
    model.eval()
    plans = tdmpc_plans(dense, keep)
    obs = torch.randn(7, OBS, generator=gen)
    a = torch.rand(7, ACT, generator=gen) * 2 - 1
    z = model.encode(obs)
    torch.testing.assert_close(z, ref_forward(dense.encoder, plans["encoder"], obs), atol=1e-5, rtol=1e-5)
    za = torch.cat([z, a], -1)
    checks = {
        "dynamics": (model.next(z, a), ref_forward(dense.dynamics, plans["dynamics"], za)),
        "reward": (model.reward_logits(z, a), ref_forward(dense.reward, plans["reward"], za)),
        "policy": (model.policy(z), ref_forward(dense.policy, plans["policy"], z)),
    }
    for target, net in ((False, dense.qs), (True, dense.target_qs)):
        prefix = "target_qs" if target else "qs"
        ref = torch.stack([ref_forward(m, plans[f"{prefix}/{i}"], za) for i, m in enumerate(net.members)])
        checks[prefix] = (model.Q(z, a, "all", target=target), ref)
    for name, (got, ref) in checks.items():
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5, msg=name)

    # Parameters and Adam moments are the selected slices of the dense ones; step is kept.
    dense_names = {m: n for n, m in dense.named_modules()}
    pruned_modules = dict(model.named_modules())
    opt_params = {p for g in opt.param_groups for p in g["params"]}
    assert opt_params == {p for p in model.parameters() if p.requires_grad}
    for plan in plans.values():
        for dm, (out, inp) in plan.items():
            mname = dense_names[dm]
            pm = pruned_modules[mname]
            for pname in ("weight", "bias"):
                cols = inp if pname == "weight" else None
                assert torch.equal(getattr(pm, pname), select(getattr(dm, pname), out, cols)), (mname, pname)
                full = f"{mname}.{pname}"
                if full in old_state:
                    st = opt.state[getattr(pm, pname)]
                    for key in ("exp_avg", "exp_avg_sq"):
                        assert torch.equal(st[key], select(old_state[full][key], out, cols)), (full, key)
                    assert int(st["step"]) == int(old_state[full]["step"]) == 3

    # Training continues: Adam steps without shape errors and moves the pruned parameters.
    model.train()
    before = [p.detach().clone() for p in opt.param_groups[0]["params"]]
    for _ in range(2):
        opt.zero_grad()
        world_loss(model, gen).backward()
        opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, opt.param_groups[0]["params"]))
    assert all(int(s["step"]) == 5 for s in opt.state.values())
    model.soft_update_target(0.01)


def test_prune_latent_flag_and_global_scope_on_world_model():
    gen = torch.Generator().manual_seed(4)
    model = WorldModel(obs_dim=OBS, action_dim=ACT, cfg=small_cfg())
    assert "latent" not in [g.name for g in model_groups(model, couplings=False)]
    groups = model_groups(model)
    total = sum(g.size for g in groups)
    scores = {g.name: torch.rand(g.size, generator=gen) for g in groups}
    scores["latent"] = scores["latent"] * 0.1  # cheap latent: whole simplices are removed first
    keep = prune(groups, scores, 0.5, scope="global")
    removed = total - sum(len(v) for v in keep.values())
    assert total // 2 - 8 < removed <= total // 2
    assert len(keep["latent"]) % 8 == 0 and len(keep["latent"]) < 32
    assert len({len(keep[f"qs/{m}/0"]) for m in range(3)}) == 1
    model.eval()
    z = model.encode(torch.randn(3, OBS))
    assert z.shape == (3, len(keep["latent"]))
    assert model.Q(z, torch.zeros(3, ACT), "all", target=True).shape == (3, 3, 21)


# ----------------------------------------------------------------------------- 4. constraints and bad input


def test_min_channels_never_violated():
    rng, gen = random.Random(5), torch.Generator().manual_seed(5)
    for _ in range(8):
        net = random_mlp(rng, "relu")
        groups = build_groups({"mlp": net}, elementwise=(TdmpcMish,))
        min_ch = rng.randint(1, 4)
        scope = rng.choice(["global", "per_component", "per_group"])
        sizes = {g.name: g.size for g in groups}
        scores = {g.name: torch.rand(g.size, generator=gen) * (0.01 if i == 0 else 1) for i, g in enumerate(groups)}
        keep = prune(groups, scores, rng.choice([0.5, 0.9, 0.99]), scope=scope, min_channels=min_ch)
        for name, idx in keep.items():
            assert len(idx) >= min(min_ch, sizes[name])
            assert torch.equal(idx, torch.sort(idx).values)
    net = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    groups = build_groups({"mlp": net}, elementwise=(TdmpcMish,))
    keep = select_channels(groups, {"mlp/0": torch.zeros(6), "mlp/2": torch.ones(5)}, 0.9, min_channels=2)
    assert [len(keep["mlp/0"]), len(keep["mlp/2"])] == [2, 2]  # 9 asked, only 4 + 3 removable
    with pytest.raises(ValueError, match="min_channels"):
        apply_pruning({"mlp/0": [0]}, groups, min_channels=2)


@pytest.mark.parametrize("ratio", [1.0, 1.5, -0.1, float("nan")])
def test_bad_ratio_rejected(ratio):
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    groups = build_groups({"mlp": net}, elementwise=(TdmpcMish,))
    with pytest.raises(ValueError, match="ratio"):
        prune(groups, {"mlp/0": torch.rand(4)}, ratio)
    with pytest.raises(ValueError, match="ratio"):
        prune(groups, {"mlp/0": torch.rand(4)}, 0.5, scope="per_component", per_component_ratios={"mlp": ratio})


def test_bad_input_rejected_and_model_untouched():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    groups = build_groups({"mlp": net}, elementwise=(TdmpcMish,))
    bad_calls = [
        ("unknown group", lambda: prune(groups, {"mlp/9": torch.rand(4)}, 0.5)),
        ("unknown group", lambda: apply_pruning({"nope": [0]}, groups)),
        (r"\[0, 4\)", lambda: apply_pruning({"mlp/0": [0, 4]}, groups)),
        ("duplicates", lambda: apply_pruning({"mlp/0": [1, 1]}, groups)),
        ("integer", lambda: apply_pruning({"mlp/0": torch.tensor([0.0, 1.0])}, groups)),
        ("expected 4 scores", lambda: prune(groups, {"mlp/0": torch.rand(3)}, 0.5)),
        ("finite", lambda: prune(groups, {"mlp/0": torch.tensor([0.0, float("nan"), 1.0, 2.0])}, 0.5)),
        ("scope", lambda: prune(groups, {"mlp/0": torch.rand(4)}, 0.5, scope="layer")),
        ("unknown component", lambda: prune(groups, {"mlp/0": torch.rand(4)}, 0.5, scope="per_component",
                                            per_component_ratios={"decoder": 0.5})),
    ]
    for match, call in bad_calls:
        with pytest.raises(ValueError, match=match):
            call()
    assert net[0].out_features == 4 and net[2].weight.shape == (2, 4)


def test_ensemble_members_keep_equal_widths_with_per_member_indices():
    gen = torch.Generator().manual_seed(6)
    model = WorldModel(obs_dim=OBS, action_dim=ACT, cfg=small_cfg(8, 16))
    groups = model_groups(model)
    # Member m prefers a different half of the channels: indices differ, counts are equal.
    scores = {}
    for g in groups:
        s = torch.rand(g.size, generator=gen)
        if g.name.startswith("qs/"):
            m = int(g.name.split("/")[1])
            s = s + 10 * (torch.arange(g.size) % 3 == m)
        scores[g.name] = s
    keep = select_channels(groups, scores, 0.5, scope="per_component")
    for layer in (0, 4):
        kept = [keep[f"qs/{m}/{layer}"] for m in range(3)]
        assert len({len(k) for k in kept}) == 1
        assert len({tuple(k.tolist()) for k in kept}) == 3
    with pytest.raises(ValueError, match="same number of channels"):
        apply_pruning({"qs/0/0": [0, 1, 2], "qs/1/0": [0, 1], "qs/2/0": [0, 1, 2]}, groups)
    with pytest.raises(ValueError, match="same number of channels"):
        apply_pruning({"qs/0/0": [0, 1, 2]}, groups)
    with pytest.raises(ValueError, match="score all or none"):
        select_channels(groups, {"qs/0/0": torch.rand(8)}, 0.5)
    with pytest.raises(ValueError, match="whole units of 8"):
        apply_pruning({"latent": list(range(12))}, groups)
    apply_pruning(keep, groups)
    model.eval()
    q = model.Q(model.encode(torch.randn(2, OBS)), torch.zeros(2, ACT), "all")
    assert q.shape == (3, 2, 21)


def test_a_width_no_group_can_remove_is_reported_by_name():
    class Gate(nn.Module):  # not elementwise as far as the walk knows
        def forward(self, x):
            return x * torch.sigmoid(x.sum(-1, keepdim=True))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(3, 4), Gate(), nn.Linear(4, 2))
            self.ok = nn.Sequential(nn.Linear(3, 4), Gate(), nn.Linear(4, 2))

        @property
        def components(self):
            return {"net": self.net, "ok": self.ok}

        def elementwise_modules(self):
            return ()

    with pytest.warns(UserWarning, match=r"component 'net': the width of net/0 \(Linear: in_features=3, "
                                         r"out_features=4.*followed by Gate"):
        assert model_groups(Model()) == []

    class Declared(Model):
        def elementwise_modules(self):  # the model says Gate acts per channel: groups, no warning
            return (Gate,)

    import warnings as _w

    with _w.catch_warnings():
        _w.simplefilter("error")
        assert [g.name for g in model_groups(Declared())] == ["net/0", "ok/0"]


class _Seq(nn.Module):
    def __init__(self, *layers):
        super().__init__()
        self.net = nn.Sequential(*layers)

    @property
    def components(self):
        return {"net": self.net}


def test_a_module_with_parameters_used_twice_in_a_sequential_is_refused():
    """``children()`` lists a reused module once: the walk used to pair the wrong layers and prune the shared one
    with two different index sets. Now refused by name; a reused activation (no parameters) is fine and the group
    names follow the ``Sequential`` s own indices."""
    torch.manual_seed(0)
    lin, norm = nn.Linear(8, 8), nn.LayerNorm(8)
    with pytest.raises(ValueError, match=r"net: layer 4 \(Linear\) is the same module as layer 2"):
        model_groups(_Seq(nn.Linear(4, 8), nn.ReLU(), lin, nn.ReLU(), lin, nn.ReLU(), nn.Linear(8, 2)))
    with pytest.raises(ValueError, match=r"layer 4 \(LayerNorm\) is the same module as layer 1"):
        model_groups(_Seq(nn.Linear(4, 8), norm, nn.ReLU(), nn.Linear(8, 8), norm, nn.ReLU(), nn.Linear(8, 2)))
    act = nn.ReLU()
    model = _Seq(nn.Linear(4, 6), act, nn.Linear(6, 5), act, nn.Linear(5, 3), act, nn.Linear(3, 2))
    groups = model_groups(model)
    assert [g.name for g in groups] == ["net/0", "net/2", "net/4"]
    x = torch.randn(7, 4)
    dense = model.net(x)
    drop = {"net/0": [1, 4], "net/2": [0], "net/4": [2]}
    masked = copy.deepcopy(model)
    with torch.no_grad():  # reference: the removed channels' consumer columns zeroed (no LayerNorm follows)
        for name, cols in drop.items():
            masked.net[int(name.split("/")[1]) + 2].weight[:, cols] = 0
    prune(groups, {g.name: torch.tensor([0.0 if i in drop[g.name] else 1.0 for i in range(g.size)])
                   for g in groups}, 0.34, scope="per_group")
    assert [model.net[i].out_features for i in (0, 2, 4)] == [4, 4, 2]
    torch.testing.assert_close(model.net(x), masked.net(x), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(dense, model.net(x))


def test_linears_with_a_computed_weight_are_not_sliced():
    """A parametrized (``weight_norm``) or old-style ``spectral_norm`` Linear used to be grouped, and pruning it
    failed halfway (a corrupted model). Its width is now reported as not prunable, and slicing it by hand is
    refused before anything changes."""
    from torch.nn.utils import parametrizations, spectral_norm

    torch.manual_seed(0)
    for wrap in (parametrizations.weight_norm, spectral_norm):
        model = _Seq(nn.Linear(4, 8), nn.ReLU(), wrap(nn.Linear(8, 6)), nn.ReLU(), nn.Linear(6, 2))
        with pytest.warns(UserWarning, match=r"net/2 \(Linear: in_features=8, out_features=6.*weight is computed"):
            groups = model_groups(model)
        assert groups == []  # net/0's consumer and net/2 itself are computed: nothing can be sliced
        from pruning.groups import Group, ParamSlice

        bad = Group("x", "net", "hidden", 6, slices=[ParamSlice(model.net[2], "weight", 0, 0),
                                                     ParamSlice(model.net[4], "weight", 1, 0)])
        shapes = [tuple(p.shape) for p in model.parameters()]
        with pytest.raises(ValueError, match="not a plain parameter"):
            apply_pruning({"x": [0, 1, 2]}, [bad])
        assert [tuple(p.shape) for p in model.parameters()] == shapes
        assert model.net(torch.randn(3, 4)).shape == (3, 2)


def test_a_tied_copy_must_match_its_twin_parameter_for_parameter():
    online = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    no_bias = nn.Sequential(nn.Linear(4, 8, bias=False), nn.ReLU(), nn.Linear(8, 2))
    longer = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2), nn.Tanh())
    with pytest.raises(ValueError, match=r"tied module '0': parameters differ"):
        build_groups({"pi": online}, tied=[(online, no_bias)])
    with pytest.raises(ValueError, match=r"tied copy has module\(s\) \['3'\]"):
        build_groups({"pi": online}, tied=[(online, longer)])
    twin = copy.deepcopy(online)
    (g,) = build_groups({"pi": online}, tied=[(online, twin)])
    assert [s.tied for s in g.slices] == [False] * 3 + [True] * 3


def test_optimizer_state_that_cannot_be_sliced_is_refused_before_anything_changes():
    adafactor = getattr(torch.optim, "Adafactor", None)
    if adafactor is None:
        pytest.skip("torch.optim.Adafactor needs torch >= 2.5")
    torch.manual_seed(0)
    model = _Seq(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = adafactor(model.parameters())
    model.net(torch.randn(5, 4)).square().sum().backward()
    opt.step()
    groups = model_groups(model)
    with pytest.raises(ValueError, match=r"Adafactor state 'row_var' of shape \(8, 1\) for a parameter of shape "
                                         r"\(8, 4\) is not element-wise"):
        prune(groups, {"net/0": torch.arange(8.0)}, 0.5, optimizers=[opt])
    assert model.net[0].weight.shape == (8, 4) and model.net[2].weight.shape == (2, 8)
    prune(groups, {"net/0": torch.arange(8.0)}, 0.5)  # without it: pruned; the optimiser is rebuilt by the user
    opt = adafactor(model.parameters())
    model.net(torch.randn(5, 4)).square().sum().backward()
    opt.step()
    assert model.net[0].weight.shape == (4, 4)
