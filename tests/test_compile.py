"""Compiled update and planner (``compile=true``) against their eager twins, on tiny widths.

The fast tests check the pieces the compiled paths are built from against the eager code they replace
(bitwise); the ``slow`` ones compile (tens of seconds each on 2 cores, inductor's cache makes reruns
faster) and compare numbers to float tolerance.
"""

import copy

import pytest
import torch
from conftest import tiny_cfg

from tdmpc.agent import TDMPC, UpdateNoise, compile_enabled
from tdmpc.planner import PlanNoise, plan_step

OBS, ACT = 5, 2


def _agent(compile_setting="false", **kw):
    cfg = tiny_cfg(compile=compile_setting, **{"model__dropout": 0.0, **kw})
    torch.manual_seed(0)
    return TDMPC(OBS, ACT, 125, cfg, torch.device("cpu"))


def _batch(agent, seed=0):
    g = torch.Generator().manual_seed(seed)
    H, B = agent.cfg.planner.horizon, agent.cfg.optim.batch_size
    return (torch.randn(H + 1, B, OBS, generator=g), torch.rand(H, B, ACT, generator=g) * 2 - 1,
            torch.rand(H, B, 1, generator=g), torch.zeros(H, B, 1))


def _noise(agent, seed=1):
    torch.manual_seed(seed)
    H, B = agent.cfg.planner.horizon, agent.cfg.optim.batch_size
    return UpdateNoise.draw(H, B, ACT, len(agent.model.qs), torch.device("cpu"))


def test_compile_setting():
    cpu = torch.device("cpu")
    assert compile_enabled("true", cpu) and compile_enabled(True, cpu)
    assert not compile_enabled("false", cpu) and not compile_enabled(False, cpu)
    assert not compile_enabled("auto", cpu)  # measured not to pay on CPU (docs/speed.md)
    from tdmpc.config import ConfigError

    with pytest.raises(ConfigError, match="compile.*auto\\|true\\|false"):
        tiny_cfg(compile="maybe")


def test_forward_indexed_equals_the_list_forward():
    agent = _agent(model__num_q=3)
    x = torch.randn(4, 7, 16 + ACT)
    for members in ([2, 0], [1, 1], [0]):
        want = agent.model.qs(x, members=members)
        got = agent.model.qs.forward_indexed(x, torch.tensor(members))
        assert got.shape == (len(members), 4, 7, 21) and torch.equal(got, want)
    w = agent.model.qs.forward_indexed(x, torch.tensor([0, 1]), detach=True)
    assert not w.requires_grad


@pytest.mark.parametrize("eval_mode", [True, False])
def test_plan_step_is_the_eager_planner_given_the_same_noise(eval_mode):
    """``plan_step`` (compiled and exported) computes, bit for bit, what ``MPPIPlanner.plan(noise=...)`` does."""
    agent = _agent()
    z = agent.model.encode(torch.randn(1, OBS))
    for prev in (None, torch.rand(agent.cfg.planner.horizon, ACT)):
        noise = PlanNoise.draw(agent.cfg.planner, ACT, 2, torch.Generator().manual_seed(3))
        agent.planner.prev_mean = None if prev is None else prev.clone()
        want = agent.planner.plan(z, eval_mode=eval_mode, noise=noise)
        zeros = torch.zeros(agent.cfg.planner.horizon, ACT)
        with torch.no_grad():
            got, mean = plan_step(agent.model, agent.cfg.planner, agent.discount, z,
                                  zeros if prev is None else prev, noise, eval_mode)
        assert torch.equal(got, want) and torch.equal(mean, agent.planner.prev_mean)


def test_update_with_noise_follows_the_draws():
    """The update's random draws are those passed in: two eager updates with the same noise are identical,
    with other noise they differ (so a compiled-vs-eager comparison with shared noise is meaningful)."""
    a, b, c = _agent(), _agent(), _agent()
    batch = _batch(a)
    la = a._update(*batch, noise=_noise(a, 1))
    lb = b._update(*batch, noise=_noise(b, 1))
    lc = c._update(*batch, noise=_noise(c, 2))
    assert all(torch.equal(la[k], lb[k]) for k in la)
    assert not torch.equal(la["pi_loss"], lc["pi_loss"])
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)


def test_losses_stay_tensors_until_logged():
    agent = _agent()
    out = agent.update(_batch(agent))
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad for v in out.values())


def test_an_update_given_its_noise_captures_the_gates_of_the_list_path():
    """An update given its noise (Q members as tensors), run eagerly (as a compiled agent runs it while an
    untraceable hook is registered): its captured gate derivatives equal those of the same update with the
    members as lists (the path that always ran the hooks), for every channel, the latent and the Q members
    included."""
    from pruning.config import TrackingConfig
    from pruning.tracker import ImportanceTracker

    caps = []
    for as_lists in (False, True):
        agent = _agent()
        if as_lists:
            def as_list(*a, q=agent.model.Q, members=None, **k):
                return q(*a, members=members.tolist() if isinstance(members, torch.Tensor) else members, **k)
            agent.model.Q = as_list
        tracker = ImportanceTracker(agent.model, TrackingConfig(metrics=["fisher"], snapshot_interval=0),
                                    samples=agent.cfg.optim.batch_size)
        agent.model.train()
        for step in range(2):  # the second: the zero-initialised reward output layer has moved (gates != 0)
            tracker.gates.reset()
            out = agent._update(*_batch(agent, step), noise=_noise(agent, step))
        caps.append((out, tracker.gates.take().gates))
    (out, got), (want_out, want) = caps
    assert all(torch.equal(out[k], want_out[k]) for k in out)
    assert got.shape == want.shape and bool((want.abs().sum(0) > 0).all())
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-12)


@pytest.fixture(scope="module")
def compiled_pair():
    """An eager agent and a compiled copy with the same weights and optimiser state."""
    eager = _agent()
    compiled = _agent()
    compiled.load_state_dict(copy.deepcopy(eager.state_dict()))
    compiled.set_compile(True)
    return eager, compiled


@pytest.mark.slow
def test_compiled_update_equals_the_eager_update(compiled_pair):
    eager, compiled = compiled_pair
    for step in range(3):
        batch, noise = _batch(eager, step), _noise(eager, step)
        eager.model.train(), compiled.model.train()
        want = eager._update(*batch, noise=noise)
        # compiled once: later updates run the same graphs (a recompile raises here)
        with torch._dynamo.config.patch(error_on_recompile=step > 0):
            got = compiled._run_compiled(*batch, noise=noise)
        eager.model.eval(), compiled.model.eval()
        for k in want:
            assert torch.allclose(got[k], want[k], rtol=1e-4, atol=1e-5), (step, k, got[k], want[k])
        # the gradients themselves (after clipping): Adam's steps hide a gradient off by a constant factor
        for (name, p), q in zip(eager.model.named_parameters(), compiled.model.parameters()):
            assert (p.grad is None) == (q.grad is None), name
            if p.grad is not None:
                scale = float(p.grad.abs().max())
                torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5 * max(scale, 1e-3), msg=name)
    for (name, p), q in zip(eager.model.named_parameters(), compiled.model.parameters()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-5), name


@pytest.mark.slow
def test_compiled_update_draws_the_eager_dropout_masks():
    """With dropout on (here 0.3 on the Q members' first layer) the compiled update draws its masks with
    ATen's generator (``UPDATE_INDUCTOR_OPTIONS``: ``fallback_random``) in the eager update's order, so from the
    same RNG state both give the same losses; from another RNG state the eager update differs (dropout bites)."""
    from tdmpc.agent import UPDATE_INDUCTOR_OPTIONS

    assert UPDATE_INDUCTOR_OPTIONS["fallback_random"]
    eager, compiled, other = (_agent(model__dropout=0.3) for _ in range(3))
    for a in (eager, compiled, other):  # the zero-initialised Q outputs moved, so that the masks matter
        g = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for p in a.model.qs.parameters():
                if not p.any():
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
    compiled.set_compile(True)
    for step in range(2):
        batch = _batch(eager, step)
        for a in (eager, compiled, other):
            a.model.train()
        want = eager._update(*batch, noise=_noise(eager, step))  # _noise seeds the global RNG, then draws
        got = compiled._run_compiled(*batch, noise=_noise(compiled, step))
        noise = _noise(other, step)
        torch.manual_seed(1000 + step)  # the same noise, other dropout masks
        differ = other._update(*batch, noise=noise)
        for k in want:
            assert torch.allclose(got[k], want[k], rtol=1e-4, atol=1e-6), (step, k, got[k], want[k])
        assert not torch.allclose(differ["value_loss"], want["value_loss"], rtol=1e-3), (step, differ, want)


@pytest.mark.slow
def test_compiled_planner_equals_the_eager_planner(compiled_pair):
    eager, compiled = compiled_pair
    compiled.load_state_dict(copy.deepcopy(eager.state_dict()))
    obs = torch.randn(OBS)
    for eval_mode in (True, False):
        eager.planner.reset(), compiled.planner.reset()
        for t in range(3):  # the warm start is carried inside both planners
            noise = PlanNoise.draw(eager.cfg.planner, ACT, 2, torch.Generator().manual_seed(t))
            want = eager.act(obs, eval_mode=eval_mode, noise=noise)
            # one compile per eval_mode: no recompile at its later calls (e.g. on an eager-side cache)
            with torch._dynamo.config.patch(error_on_recompile=t > 0):
                got = compiled.act(obs, eval_mode=eval_mode, noise=noise)
            assert torch.allclose(got, want, atol=1e-5), (t, got, want)
            assert torch.allclose(compiled.planner.prev_mean, eager.planner.prev_mean, atol=1e-5)


@pytest.mark.slow
def test_the_compiled_planner_compiles_once_per_gate_hook_state(compiled_pair):
    """With ``gate_interval > 1`` the tracker registers and removes its gate hooks around gate updates, and the
    compiled planner guards on the modules' hooks: it compiles at most once with them and once without, then
    reuses both graphs (no recompile per toggle), and acts the same either way (the hooks do nothing without
    gradients)."""
    from pruning.config import TrackingConfig
    from pruning.tracker import ImportanceTracker

    eager, compiled = compiled_pair
    compiled.load_state_dict(copy.deepcopy(eager.state_dict()))
    tracker = ImportanceTracker(compiled.model, TrackingConfig(metrics=["fisher"], snapshot_interval=0, gate_interval=2),
                                samples=compiled.cfg.optim.batch_size)
    obs = torch.randn(OBS)
    noise = PlanNoise.draw(eager.cfg.planner, ACT, 2, torch.Generator().manual_seed(3))
    try:
        eager.planner.reset()
        want = eager.act(obs, eval_mode=True, noise=noise)
        for t in range(6):
            tracker.set_capture(t % 2 == 0)
            assert (tracker.gates is not None) == (t % 2 == 0)
            compiled.planner.reset()
            with torch._dynamo.config.patch(error_on_recompile=t >= 2):
                got = compiled.act(obs, eval_mode=True, noise=noise)
            assert torch.allclose(got, want, atol=1e-5), (t, got, want)
    finally:
        tracker.close()


@pytest.mark.slow
def test_an_update_with_module_hooks_runs_eagerly(compiled_pair):
    """A hook that does not declare itself traceable (`TRACEABLE_HOOK`) is not traced: the agent runs that update
    eagerly, and the hook fires."""
    _, compiled = compiled_pair
    seen = []
    handle = compiled.model.reward[0].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    try:
        assert compiled._hooked()
        compiled.update(_batch(compiled))
    finally:
        handle.remove()
    assert seen and not compiled._hooked()


@pytest.mark.slow
def test_tracking_scores_equal_between_compiled_and_eager_updates(compiled_pair):
    """Every registered metric scores a compiled update as it scores the eager update of the same batch and
    noise, the gate metrics (``fisher``, ``bayes``) included: the gate hooks are traced into the compiled graph
    (their gate leaves, ``pruning.gates``), not run eagerly; the eager agent runs the backward-hook path. Then
    the hooks are removed and the hook-free graph runs again (a cached one: the graphs guard on the hooks)."""
    from pruning.config import TrackingConfig
    from pruning.metrics import metric_names
    from pruning.tracker import ImportanceTracker

    eager, compiled = compiled_pair
    compiled.load_state_dict(copy.deepcopy(eager.state_dict()))
    for a in (eager, compiled):  # one eager update each: the zero-initialised output layers move (gradients != 0)
        a.model.train()
        a._update(*_batch(eager, 19), noise=_noise(eager, 19))
        a.model.eval()
    gate_free = ["grad_acc", "grad_sq", "taylor", "l1", "l2", "l1_group", "l2_group", "random"]
    for step, metrics in enumerate((gate_free, list(metric_names()), gate_free)):
        trackers = [ImportanceTracker(a.model, TrackingConfig(metrics=metrics, snapshot_interval=0),
                                      samples=a.cfg.optim.batch_size) for a in (eager, compiled)]
        try:  # the pair is shared by the module's later tests: never leave hooks on it
            gated = trackers[1].gates is not None
            assert gated == (step == 1) and not compiled._hooked()  # the gate hooks are traceable
            batch, noise = _batch(eager, 20 + step), _noise(eager, 20 + step)
            eager.model.train(), compiled.model.train()
            eager._update(*batch, noise=noise)
            with torch._dynamo.config.patch(error_on_recompile=step == 2):  # hooks gone: the first graph again
                compiled._run_compiled(*batch, noise=noise)
            eager.model.eval(), compiled.model.eval()
            if gated:  # the compiled graph left its evidence in the gate leaves, no eager hook wrote a buffer
                assert not trackers[1].gates._written
                assert all(leaf.grad is not None for leaf in trackers[1].gates._leaves)
            for t in trackers:
                t.step(1)
            for m in metrics:
                want, got = trackers[0].scores(m), trackers[1].scores(m)
                assert want.keys() == got.keys()
                for name in want:
                    scale = float(want[name].abs().max())
                    assert scale > 0, (m, name)
                    torch.testing.assert_close(got[name], want[name], rtol=1e-3, atol=1e-5 * scale,
                                               msg=f"{m} {name}")
            if gated:  # the same hooks removed and registered again (gate_interval > 1): no recompile
                trackers[1].set_capture(False)
                trackers[1].set_capture(True)
                eager.model.train(), compiled.model.train()
                eager._update(*batch, noise=noise)  # the pair stays equal for the next step
                with torch._dynamo.config.patch(error_on_recompile=True):
                    compiled._run_compiled(*batch, noise=noise)
                eager.model.eval(), compiled.model.eval()
        finally:
            for t in trackers:
                t.close()


@pytest.mark.slow
def test_a_pruned_model_is_recompiled_and_still_matches(compiled_pair):
    from pruning import model_groups, prune

    eager, compiled = compiled_pair
    compiled.load_state_dict(copy.deepcopy(eager.state_dict()))
    for agent in (eager, compiled):
        groups = model_groups(agent.model, couplings=True)
        prune(groups, {g.name: torch.arange(g.size, dtype=torch.float32) for g in groups}, 0.5, scope="global")
        agent.build_optimizers()
    assert eager.model.widths() == compiled.model.widths()
    obs = torch.randn(OBS)
    noise = PlanNoise.draw(eager.cfg.planner, ACT, 2, torch.Generator().manual_seed(5))
    eager.planner.reset(), compiled.planner.reset()
    assert torch.allclose(compiled.act(obs, eval_mode=True, noise=noise),
                          eager.act(obs, eval_mode=True, noise=noise), atol=1e-5)
    batch, noise = _batch(eager, 9), _noise(eager, 9)
    eager.model.train(), compiled.model.train()
    want, got = eager._update(*batch, noise=noise), compiled._run_compiled(*batch, noise=noise)
    assert all(torch.allclose(got[k], want[k], rtol=1e-4, atol=1e-5) for k in want)


def _train(tmp_path, name, steps, compile_setting):
    from tdmpc.trainer import Trainer

    cfg = tiny_cfg(steps=steps, eval_freq=2000, checkpoint_freq=2000, compile=compile_setting)
    t = Trainer(cfg, tmp_path / name)
    t.train()
    return t


@pytest.mark.slow
def test_a_compiled_run_resumes_exactly_and_eager_and_compiled_resume_each_other(tmp_path):
    import pandas as pd

    # One process, so the runs after the first may reuse its compiled code (dynamo's and inductor's caches)
    # where a separate process would build the same code again from the same graphs; the checks below are
    # about the arithmetic and the checkpoint, which are the same either way.
    full = _train(tmp_path, "full", 3000, "true")
    _train(tmp_path, "part", 2000, "true")  # "killed" right after its checkpoint at 2000 ...
    resumed = _train(tmp_path, "part", 3000, "true")  # ... and resumed
    a = pd.read_csv(tmp_path / "full" / "train.csv")
    b = pd.read_csv(tmp_path / "part" / "train.csv")
    assert (a["episode_return"].values == b["episode_return"].values).all()
    for (k, p), q in zip(full.agent.model.state_dict().items(), resumed.agent.model.state_dict().values()):
        assert torch.equal(p, q), k
    # an eager checkpoint continues compiled and vice versa (compile is free to change on resume)
    _train(tmp_path, "eager", 2000, "false")
    cross = _train(tmp_path, "eager", 3000, "true")
    assert cross.agent.compiled and cross.env_step == 3000
    back = _train(tmp_path, "part", 4000, "false")
    assert not back.agent.compiled and back.env_step == 4000
