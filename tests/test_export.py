"""Export to ONNX (pruning/study/export.py), the torch-free runtime (pruning/deploy.py) and the closed-loop check.

Tiny agents with random weights (normal, std 0.3: the zero-initialised reward and Q heads of a fresh model
would make every trajectory's value 0 and the elite choice a tie), dense and pruned (latent included).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_cfg

from pruning.config import PruningConfigError
from pruning.deploy import Controller, DeployError
from pruning.study.export import load_agent, run_export_cli, write_controller
from tdmpc.agent import TDMPC
from tdmpc.checkpoint import CHECKPOINT_FORMAT, save_atomic
from tdmpc.planner import PlanNoise

ROOT = Path(__file__).resolve().parents[1]
TASK = "point-mass-easy"  # obs 4, action 2, action repeat 4
TOL = 1e-4

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.export's pytree deprecation notice


def _checkpoint(path: Path, pruned: bool, **overrides) -> Path:
    """A minimal training checkpoint (format, config, agent) of a tiny random agent, optionally pruned
    (``overrides``: more :func:`tiny_cfg` settings)."""
    from pruning import model_groups, prune

    cfg = tiny_cfg(task=TASK, model__num_q=3, **overrides)  # 3 members: which two the terminal value averages matters
    torch.manual_seed(1)
    agent = TDMPC(4, 2, 250, cfg, torch.device("cpu"))
    with torch.no_grad():
        for p in agent.model.parameters():
            p.normal_(0.0, 0.3)
    if pruned:
        groups = model_groups(agent.model, couplings=True)
        gen = torch.Generator().manual_seed(0)
        prune(groups, {g.name: torch.rand(g.size, generator=gen) for g in groups}, 0.5, scope="global")
        agent.build_optimizers()
    save_atomic({"format": CHECKPOINT_FORMAT, "config": dataclasses.asdict(cfg), "agent": agent.state_dict()}, path)
    return path


@pytest.fixture(scope="module", params=["dense", "pruned"])
def exported(request, tmp_path_factory):
    """``(checkpoint, export dir, agent)`` of a dense and of a pruned tiny agent. The tests compare against
    the agent that was exported: exporting must leave it usable (tracing must not leave fake tensors in it)."""
    root = tmp_path_factory.mktemp(request.param)
    ckpt = _checkpoint(root / "checkpoint.pt", pruned=request.param == "pruned")
    agent, cfg, env_spec, digest = load_agent(ckpt)
    out = write_controller(agent, cfg, env_spec, root / "export", checkpoint=ckpt, checkpoint_sha256=digest)
    return ckpt, out, agent


def _replace_checkpoint(path: Path) -> None:
    """Overwrite ``path`` with another checkpoint (every weight + 1), as a training run writing its next one."""
    from tdmpc.checkpoint import load_checkpoint

    state = load_checkpoint(path)
    with torch.no_grad():
        for v in state["agent"]["model"].values():
            if v.is_floating_point():
                v.add_(1.0)
    save_atomic(state, path)


def _noise(inputs: dict[str, np.ndarray]) -> PlanNoise:
    t = {k: torch.from_numpy(v.copy()) for k, v in inputs.items()}
    return PlanNoise(pi_eps=t["pi_eps"], sample_eps=t["sample_eps"], terminal_eps=t["terminal_eps"],
                     q_members=t["q_members"], gumbel_u=t["gumbel_u"], action_eps=torch.zeros(2))


def _plans_like_torch(ctrl: Controller, agent: TDMPC, obs: np.ndarray, step: int) -> dict[str, np.ndarray]:
    """One planned action of ``ctrl`` equals the agent's on the same inputs (the warm start too, from step 1);
    returns the inputs."""
    action = ctrl.act(obs)
    inputs = ctrl.last_inputs
    agent.planner.prev_mean = torch.from_numpy(inputs["prev_mean"].copy()) if step else None
    ref = agent.act(torch.from_numpy(obs), eval_mode=True, noise=_noise(inputs)).numpy()
    assert action.shape == (2,) and np.abs(action - ref).max() < TOL
    assert np.abs(ctrl.prev_mean - agent.planner.prev_mean.numpy()).max() < TOL
    return inputs


def _acts_like_the_policy_mean(ctrl: Controller, agent: TDMPC, n: int) -> None:
    obs = torch.randn(n, 4)
    with torch.no_grad():
        ref = agent.model.pi(agent.model.encode(obs))[0].numpy()
    got = np.stack([ctrl.act(o) for o in obs.numpy()])
    assert np.abs(got - ref).max() < TOL and np.abs(ref).max() > 0.05


@pytest.mark.slow
def test_controller_json_describes_the_model_and_the_checkpoint(exported):
    import onnx

    ckpt, out, agent = exported
    spec = json.loads((out / "controller.json").read_text())
    assert spec["widths"] == agent.model.widths()
    assert spec["latent_dim"] == agent.model.widths()["encoder"][-1]
    assert (spec["obs_dim"], spec["action_dim"], spec["task"], spec["action_repeat"]) == (4, 2, TASK, 4)
    assert spec["planner"] == {"iterations": 2, "horizon": 3, "num_samples": 16, "num_elites": 4,
                                "num_pi_trajs": 2, "min_std": 0.05, "max_std": 2.0, "temperature": 0.5,
                                "mpc": True}
    assert spec["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert spec["exports"]["planner"]["exporter"] == "dynamo"
    shapes = {s["name"]: s["shape"] for s in spec["planner_inputs"]}
    assert shapes == {"obs": [1, 4], "prev_mean": [3, 2], "sample_eps": [2, 3, 16, 2], "terminal_eps": [2, 18, 2],
                      "q_members": [2, 2], "gumbel_u": [4], "pi_eps": [3, 2, 2]}
    for name in ("policy.onnx", "planner.onnx"):
        onnx.checker.check_model(str(out / name), full_check=True)


def test_pruned_checkpoint_is_smaller_latent_included(exported):
    ckpt, out, _ = exported
    widths = json.loads((out / "controller.json").read_text())["widths"]
    if ckpt.parent.name.startswith("pruned"):
        assert widths["encoder"][-1] == 8 and widths["dynamics"][-1] == 8  # latent 16 -> 8 (one simplex)
        assert sum(widths["policy"][:-1]) < 64
    else:
        assert widths["encoder"] == [32, 16]


def test_exported_planner_gives_the_torch_planners_action(exported):
    ckpt, out, agent = exported
    ctrl = Controller.load(out, seed=5)
    rng = np.random.default_rng(0)
    for step in range(4):
        obs = rng.standard_normal(4).astype(np.float32)
        inputs = _plans_like_torch(ctrl, agent, obs, step)
        assert (np.abs(inputs["prev_mean"]).max() > 0.05) == (step > 0)  # the warm start is in use
        if step > 0:  # the comparison is sensitive: without the warm start the torch plan differs
            agent.planner.prev_mean = None
            agent.act(torch.from_numpy(obs), eval_mode=True, noise=_noise(inputs))
            assert np.abs(agent.planner.prev_mean.numpy() - ctrl.prev_mean).max() > 1e-3
    other = ctrl.plan(obs, inputs["prev_mean"], ctrl.draw_noise())[1]  # the noise matters, too
    assert np.abs(other - ctrl.prev_mean).max() > 1e-3


def test_planner_inputs_are_checked_and_cast_for_both_formats(exported):
    """A .pt2 package read float64 noise as float32 bytes (another action, no error) and a short input past its
    end; onnxruntime refused both. Controller.plan now casts every input to controller.json's dtype and refuses
    a wrong shape, a missing or unknown input and fractional member indices, before either backend runs."""
    _, out, _ = exported
    ctrl = Controller.load(out, seed=5)
    obs, prev = np.linspace(-1, 1, 4).astype(np.float32), np.zeros((ctrl.horizon, ctrl.action_dim), np.float32)
    noise = ctrl.draw_noise()
    want = ctrl.plan(obs, prev, noise)
    wide = {k: v.astype(np.float64 if v.dtype == np.float32 else np.int32) for k, v in noise.items()}
    got = ctrl.plan(obs, prev.astype(np.float64), wide)
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
    assert {k: v.dtype for k, v in ctrl.last_inputs.items()} == {s["name"]: np.dtype(s["dtype"])
                                                                for s in ctrl.spec["planner_inputs"]}
    bad = [({**noise, "gumbel_u": noise["gumbel_u"][:-1]}, r"'gumbel_u' has shape \[\d+\], controller.json says"),
           ({k: v for k, v in noise.items() if k != "sample_eps"}, "planner inputs must be"),
           ({**noise, "extra": np.zeros(1)}, "planner inputs must be"),
           ({**noise, "q_members": noise["q_members"] + 0.5}, "'q_members' must hold integers"),
           ({**noise, "sample_eps": "x"}, "'sample_eps' must be numbers"),
           ({**noise, "q_members": np.full_like(noise["q_members"], 3)}, r"Q-member indices in \[0, 3\)"),
           ({**noise, "prev_mean": prev}, r"noise must not hold \['prev_mean'\]")]
    for given, match in bad:
        with pytest.raises(DeployError, match=match):
            ctrl.plan(obs, prev, given)
    with pytest.raises(DeployError, match="'prev_mean' has shape"):
        ctrl.plan(obs, prev[:-1], noise)
    assert ctrl.action_repeat == json.loads((out / "controller.json").read_text())["action_repeat"]


def test_a_nan_difference_is_not_recorded_as_zero():
    """max(0.0, nan) is 0.0: a step where the exported or the torch action was NaN counted as equal."""
    from pruning.study.deploy_check import _max_abs_diff

    assert _max_abs_diff(np.array([0.1, np.nan]), np.zeros(2)) == np.inf
    assert _max_abs_diff(np.zeros(2), np.array([np.inf, 0.0])) == np.inf
    assert _max_abs_diff(np.array([0.5, -0.25]), np.zeros(2)) == 0.5


def test_pt2_threads_zero_keeps_torchs_default_and_the_export_reads_public_bounds(monkeypatch):
    """num_threads=0 (documented: the runtime's default) failed for pt2 as a 'cannot load' error; the export read
    the envs' private _act_low/_act_high, so an env following the protocol without them crashed."""
    from pruning import deploy_pt2
    from pruning.study.export import task_spec

    calls = []
    monkeypatch.setattr(deploy_pt2.torch, "set_num_threads", calls.append)
    monkeypatch.setattr(deploy_pt2.torch._inductor, "aoti_load_package", lambda path: None)
    deploy_pt2.Pt2Session(Path("x.pt2"), ["obs"], ["action"], num_threads=0)
    deploy_pt2.Pt2Session(Path("x.pt2"), ["obs"], ["action"], num_threads=3)
    assert calls == [3]

    import gymnasium as gym

    import tdmpc.envs

    class Bare:  # the protocol's required attributes only
        observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
        action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        action_repeat, episode_length = 2, 50

        def close(self):
            pass

    monkeypatch.setattr(tdmpc.envs, "make_env", lambda task, seed, repeat: Bare())
    spec = task_spec("anything", None)
    assert spec["action_low"] == [-1.0, -1.0] and spec["action_high"] == [1.0, 1.0] and spec["action_repeat"] == 2
    bounded = Bare()
    bounded.action_low, bounded.action_high = np.array([-2.0, 0.0]), np.array([2.0, 5.0])
    monkeypatch.setattr(tdmpc.envs, "make_env", lambda task, seed, repeat: bounded)
    assert task_spec("anything", None)["action_high"] == [2.0, 5.0]


def test_exported_policy_gives_the_policy_mean(exported):
    ckpt, out, agent = exported
    _acts_like_the_policy_mean(Controller.load(out, mode="policy"), agent, 5)


def test_ort_op_profile_splits_the_planners_kernel_time_by_operator_kind(exported, tmp_path):
    """benchmarks/ort_op_profile.py: every node of every run is attributed to an operator type and kind, the
    kinds add up to the kernel total and the kernels fit inside onnxruntime's own model_run time."""
    import shutil

    from benchmarks.ort_op_profile import KINDS, kind, profile

    d = shutil.copytree(exported[1], tmp_path / "export")
    prof = profile(d, calls=3, warmup=1)
    assert set(prof["kinds_ms"]) == set(KINDS)
    assert sum(prof["kinds_ms"].values()) == pytest.approx(prof["kernel_ms"])
    assert sum(prof["ops_ms"].values()) == pytest.approx(prof["kernel_ms"])
    assert 0 < prof["kernel_ms"] <= prof["model_run_ms"]
    assert prof["kinds_ms"]["matmul"] > 0 and prof["kinds_ms"]["elementwise"] > 0
    assert {"Gemm", "LayerNormalization"} <= set(prof["ops_ms"]) or "FusedMatMul" in prof["ops_ms"]
    assert prof["node_runs_per_call"] > 50  # an unrolled planner: iterations x horizon x every layer
    assert kind("Gemm") == "matmul" and kind("Mul") == "elementwise" and kind("Concat") == "data"
    assert kind("SomethingNew") == "other"


def test_runtime_imports_and_acts_without_torch(exported, tmp_path):
    _, out, _ = exported
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text("import sys\nfor m in ('torch', 'dm_control', 'hydra', 'mujoco'):\n"
                                           "    sys.modules[m] = None  # importing it raises ImportError\n")
    code = ("import json, sys, numpy as np\n"
            "from pruning.deploy import Controller\n"
            "try:\n    import torch\n    hidden = False\nexcept ImportError:\n    hidden = True\n"
            f"c = Controller.load({str(out)!r}, seed=3)\n"
            "acts = [c.act(np.full(4, 0.1 * k, np.float32)).tolist() for k in range(3)]\n"
            "print(json.dumps({'hidden': hidden, 'acts': acts}))\n")
    env = {"PYTHONPATH": f"{shim}{os.pathsep}{ROOT}", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    ctrl = Controller.load(out, seed=3)
    expected = [ctrl.act(np.full(4, 0.1 * k, np.float32)).tolist() for k in range(3)]
    assert result["hidden"] is True and np.allclose(result["acts"], expected, atol=0, rtol=0)


@pytest.mark.slow
def test_closed_loop_check_via_the_cli(tmp_path):
    ckpt = _checkpoint(tmp_path / "checkpoint.pt", pruned=True)
    args = [sys.executable, str(ROOT / "scripts" / "export.py"), f"checkpoint={ckpt}", "format=onnx",
            f"out={tmp_path / 'out'}", "check=true", "episodes=2", "max_episode_steps=60"]
    env = {**os.environ, "MUJOCO_GL": "disable", "WANDB_MODE": "disabled"}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "return_onnx" in proc.stdout and "within spread" in proc.stdout
    check = json.loads((tmp_path / "out" / "check.json").read_text())
    assert [r["seed"] for r in check["episodes"]] == [1, 2] and check["summary"]["steps"] == 2 * 15
    assert check["summary"]["max_action_diff"] < TOL and check["summary"]["steps_diff_gt_tol"] == 0
    assert check["summary"]["max_mean_diff"] < TOL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "out"]  # Hydra wrote nothing


def test_policy_check_returns_equal_the_torch_agents(exported):
    from pruning.study.deploy_check import run_check

    ckpt, out, _ = exported
    result = run_check(ckpt, out, episodes=2, seed=3, mode="policy", max_episode_steps=60)
    for row in result["episodes"]:  # deterministic policy, same env seed: the same episode
        assert row["steps"] == 15 and abs(row["return_onnx"] - row["return_torch"]) < 1e-3
    assert result["summary"]["max_action_diff"] < TOL


@pytest.mark.slow
def test_missing_checkpoint_and_unknown_key_are_one_line_exit_2(tmp_path):
    missing = tmp_path / "nope" / "checkpoint.pt"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "export.py"), f"checkpoint={missing}"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "MUJOCO_GL": "disable"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: checkpoint not found: {missing}"]
    assert not (tmp_path / "nope").exists()
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "export.py"), f"checkpoint={missing}", "bogus=1"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "MUJOCO_GL": "disable"})  # a Hydra-level error: one line too
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "bogus" in proc.stderr


@pytest.mark.parametrize("override, line", [
    ({"format": "tflite"}, "error: invalid config: format='tflite'; allowed: onnx|pt2"),
    ({"episodes": 0}, "error: invalid config: episodes=0; allowed: an integer >= 1"),
    ({"mode": "mpc"}, "error: invalid config: mode='mpc'; allowed: null|plan|policy"),
])
def test_bad_settings_exit_2_with_one_line(tmp_path, capsys, override, line):
    with pytest.raises(SystemExit) as exit_info:
        run_export_cli({"checkpoint": str(tmp_path / "checkpoint.pt"), **override})
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [line]


def test_a_controller_acts_as_its_agent_did_unless_told_otherwise(tmp_path):
    from pruning.study.deploy_check import run_check

    ckpt = _checkpoint(tmp_path / "checkpoint.pt", pruned=False, planner__mpc=False)  # acts with its policy
    agent, cfg, env_spec, digest = load_agent(ckpt)
    out = write_controller(agent, cfg, env_spec, tmp_path / "out", checkpoint=ckpt, checkpoint_sha256=digest)
    ctrl = Controller.load(out)
    assert ctrl.mode == "policy" and ctrl.planner_session is None
    assert Controller.load(out, mode="plan").mode == "plan"  # asked for explicitly: the planner graph runs
    with pytest.raises(PruningConfigError, match="mode='plan'; allowed: policy .the checkpoint's agent does not plan"):
        run_check(ckpt, out, episodes=1, mode="plan", max_episode_steps=8)
    assert run_check(ckpt, out, episodes=1, max_episode_steps=8)["summary"]["max_action_diff"] < TOL


def test_plan_noise_replays_a_plan_whatever_the_global_rng():
    cfg = tiny_cfg(task=TASK)
    agent = TDMPC(4, 2, 250, cfg, torch.device("cpu"))
    noise = PlanNoise.draw(cfg.planner, 2, 2, torch.Generator().manual_seed(0))
    obs = torch.randn(4)
    actions = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        agent.planner.reset()
        actions.append(agent.act(obs, eval_mode=False, noise=noise))
    assert torch.equal(actions[0], actions[1])
    assert noise.q_members.shape == (2, 2) and all(len(set(r.tolist())) == 2 for r in noise.q_members)


def test_the_runtimes_noise_has_the_distributions_of_the_torch_planners(exported):
    """The closed-loop check replays the runtime's own noise on the PyTorch side, so it cannot see a wrong noise
    distribution (a reviewer's constant gumbel_u and 0.1-scaled sample_eps passed it): the draws are compared here
    with PlanNoise.draw's, entry by entry, in shape, dtype, range and moments (two-sample KS for the continuous
    ones; members: distinct pairs in range, every pair about equally often)."""
    from scipy.stats import ks_2samp

    _, out, _ = exported
    ctrl = Controller.load(out, seed=3)
    spec = ctrl.spec
    cfg = tiny_cfg(task=TASK, model__num_q=3)
    draws = [ctrl.draw_noise() for _ in range(400)]
    gen = torch.Generator().manual_seed(3)
    ref = [PlanNoise.draw(cfg.planner, spec["action_dim"], 3, gen) for _ in range(400)]
    for s in ctrl.noise_specs:
        ours = np.stack([d[s["name"]] for d in draws])
        theirs = torch.stack([getattr(r, s["name"]) for r in ref]).numpy()
        assert ours.shape == theirs.shape and ours.dtype == np.dtype(s["dtype"]), s["name"]
        if s["distribution"] == "members":
            assert (ours[..., 0] != ours[..., 1]).all() and ours.min() == 0 and ours.max() == 2
            pairs = np.unique(ours.reshape(-1, 2), axis=0, return_counts=True)[1]
            assert len(pairs) == 6 and pairs.min() > 0.7 * pairs.mean()  # the 6 ordered pairs of 3 members
        else:
            assert ks_2samp(ours.ravel(), theirs.ravel()).pvalue > 1e-3, s["name"]
            if s["distribution"] == "uniform":
                assert 0.0 <= ours.min() and ours.max() < 1.0


@pytest.mark.slow
def test_pt2_export_plans_and_acts_like_the_torch_agent(tmp_path):
    """format=pt2 (AOTInductor packages) through the same Controller: planner and policy equal the agent."""
    # one planner iteration over a horizon of 2: AOTInductor compiles C++ per kernel, and the unrolled graph's size
    # sets the compile time (the arithmetic is that of the ONNX tests above)
    ckpt = _checkpoint(tmp_path / "checkpoint.pt", pruned=True, planner__iterations=1, planner__horizon=2)
    agent, cfg, env_spec, digest = load_agent(ckpt)
    out = write_controller(agent, cfg, env_spec, tmp_path / "pt2", checkpoint=ckpt, fmt="pt2",
                           checkpoint_sha256=digest)
    spec = json.loads((out / "controller.json").read_text())
    assert spec["files"] == {"policy": "policy.pt2", "planner": "planner.pt2"} and spec["artifact_format"] == "pt2"
    assert spec["exports"]["planner"]["exporter"] == "aoti"
    ctrl = Controller.load(out, seed=5)
    rng = np.random.default_rng(0)
    for step in range(3):
        _plans_like_torch(ctrl, agent, rng.standard_normal(4).astype(np.float32), step)
    _acts_like_the_policy_mean(Controller.load(out, mode="policy"), agent, 3)


SMALL_PLANNER = {"planner__iterations": 1, "planner__horizon": 1}  # a small planner graph: a fast export


def test_recorded_sha256_is_of_the_bytes_whose_weights_were_exported(tmp_path, monkeypatch):
    """The checkpoint is replaced while the graphs are exported (a live training run writing its next one):
    controller.json names the bytes the exported weights came from, not the file as it is afterwards."""
    import pruning.study.export as export

    ckpt = _checkpoint(tmp_path / "checkpoint.pt", pruned=False, **SMALL_PLANNER)
    original = tmp_path / "original.pt"
    original.write_bytes(ckpt.read_bytes())
    export_graph = export.export_graph

    def export_then_replace(*args, **kwargs):
        info = export_graph(*args, **kwargs)
        if ckpt.read_bytes() == original.read_bytes():
            _replace_checkpoint(ckpt)
        return info

    monkeypatch.setattr(export, "export_graph", export_then_replace)
    out = export.export_controller(ckpt, tmp_path / "out")
    recorded = json.loads((out / "controller.json").read_text())["checkpoint_sha256"]
    assert recorded == hashlib.sha256(original.read_bytes()).hexdigest()
    assert recorded != hashlib.sha256(ckpt.read_bytes()).hexdigest()  # the file was replaced meanwhile
    _acts_like_the_policy_mean(Controller.load(out, mode="policy"), load_agent(original)[0], 5)


def test_check_records_the_sha256_of_the_checkpoint_it_loaded(exported, tmp_path, monkeypatch):
    """The checkpoint is replaced during the check's episodes: check.json names the bytes the agent came from."""
    import shutil

    from pruning.study import deploy_check

    ckpt = Path(shutil.copy(exported[0], tmp_path / "checkpoint.pt"))
    out = shutil.copytree(exported[1], tmp_path / "export")
    loaded = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    torch_episode = deploy_check._torch_episode

    def episode_then_replace(*args, **kwargs):
        row = torch_episode(*args, **kwargs)
        _replace_checkpoint(ckpt)
        return row

    monkeypatch.setattr(deploy_check, "_torch_episode", episode_then_replace)
    result = deploy_check.run_check(ckpt, out, episodes=1, seed=3, mode="policy", max_episode_steps=8)
    assert result["checkpoint_sha256"] == loaded != hashlib.sha256(ckpt.read_bytes()).hexdigest()


def test_failed_reexport_leaves_the_previous_controller_intact(tmp_path, monkeypatch):
    """A re-export into a folder holding a controller fails at the planner, as ONNX and as pt2 packages: the
    folder still holds the previous controller's files, unchanged, and nothing else. A successful re-export
    then replaces all three."""
    import pruning.study.export as export

    first = _checkpoint(tmp_path / "a.pt", pruned=False, **SMALL_PLANNER)
    second = _checkpoint(tmp_path / "b.pt", pruned=True, **SMALL_PLANNER)
    out = export.export_controller(first, tmp_path / "out")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["controller.json", "planner.onnx", "policy.onnx"]

    def fail_at_the_planner(write):
        def wrapped(module, args, path, *rest, **kwargs):
            if path.name.startswith("planner"):
                raise RuntimeError("planner export failed (simulated)")
            return write(module, args, path, *rest, **kwargs)
        return wrapped

    def fake_pt2(module, args, path):  # no minutes of compiling: a file in the package's place is enough here
        path.write_bytes(b"not a package")
        return {"exporter": "aoti", "compile_s": 0.0}

    with monkeypatch.context() as m:
        m.setattr(export, "export_graph", fail_at_the_planner(export.export_graph))
        m.setattr(export, "export_pt2", fail_at_the_planner(fake_pt2))
        for fmt in ("onnx", "pt2"):
            with pytest.raises(RuntimeError, match="simulated"):
                export.export_controller(second, out, fmt=fmt)
            assert {p.name: p.read_bytes() for p in out.iterdir()} == before, fmt
    _acts_like_the_policy_mean(Controller.load(out, mode="policy"), load_agent(first)[0], 3)

    export.export_controller(second, out)
    assert sorted(p.name for p in out.iterdir()) == ["controller.json", "planner.onnx", "policy.onnx"]
    assert json.loads((out / "controller.json").read_text())["checkpoint"] == str(second)
    _acts_like_the_policy_mean(Controller.load(out, mode="policy"), load_agent(second)[0], 3)


def test_checkpoint_trained_with_online_wandb_exports_without_a_wandb_key(tmp_path, monkeypatch):
    """The stored logger settings are not validated again: logger.wandb.mode=online needs a W&B API key to
    train, not to export the checkpoint on another machine."""
    from pruning.study.export import export_controller
    from tdmpc import wandb_mode
    from tdmpc.checkpoint import load_checkpoint
    from tdmpc.config import ConfigError, TrainConfig, from_dict, validate

    ckpt = _checkpoint(tmp_path / "checkpoint.pt", pruned=False, **SMALL_PLANNER)
    state = load_checkpoint(ckpt)
    state["config"]["logger"]["wandb"]["mode"] = "online"
    save_atomic(state, ckpt)
    monkeypatch.setattr(wandb_mode, "wandb_api_key_configured", lambda: False)  # no key on this machine
    with pytest.raises(ConfigError, match="logger.wandb.mode"):  # what validating the stored logger would raise
        validate(from_dict(TrainConfig, state["config"]))
    out = export_controller(ckpt, tmp_path / "out")
    assert json.loads((out / "controller.json").read_text())["checkpoint_sha256"] == \
        hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert Controller.load(out).act(np.zeros(4, np.float32)).shape == (2,)


def test_the_runtime_refuses_bad_observations_in_one_line(exported):
    """A NaN observation used to give a NaN action (and warm start) silently; a dict, an (obs, info) pair or a batch
    gave numpy tracebacks or a misleading count. The observation is copied: a caller reusing its buffer does not
    change ``last_inputs``."""
    _, out, _ = exported
    ctrl = Controller.load(out, mode="plan", seed=0)
    obs = np.linspace(-1, 1, 4, dtype=np.float32)
    for bad, match in ((np.array([0.1, np.nan, 0.2, np.inf]), r"observation entries \[1, 3\] are not finite"),
                       ({"position": obs}, "must be an array of 4 numbers, got a dict"),
                       ((obs, {}), r"got a tuple \(env.reset\(\) returns \(obs, info\): pass obs\)"),
                       (np.stack([obs, obs]), r"shape \(2, 4\): the controller expects one observation of 4 entries"),
                       (obs[:3], r"shape \(3,\)"), ("abcd", "got a str")):
        with pytest.raises(DeployError, match=match):
            ctrl.act(bad)
    assert np.all(ctrl.prev_mean == 0)  # nothing was planned
    ctrl.act(tuple(float(v) for v in obs))  # a tuple of numbers is an observation (only (obs, info) is refused)
    ctrl.reset()
    buf = obs.copy()
    action = ctrl.act(buf)
    buf[:] = 5.0  # the robot's next sensor read into the same array
    assert np.array_equal(ctrl.last_inputs["obs"][0], obs)
    replay, _ = ctrl.plan(ctrl.last_inputs["obs"], ctrl.last_inputs["prev_mean"],
                          {k: v for k, v in ctrl.last_inputs.items() if k not in ("obs", "prev_mean")})
    assert np.array_equal(replay, action)
    for kw, match in (({"seed": -1}, "seed must be an integer >= 0"), ({"num_threads": "2"}, "num_threads must be")):
        with pytest.raises(DeployError, match=match):
            Controller.load(out, **kw)


def test_the_runtime_refuses_files_that_do_not_belong_together(exported, tmp_path):
    """Graphs of two exports in one folder used to load (a dense controller.json acting with pruned graphs, or a
    crash at the first call); a damaged controller.json or .onnx gave tracebacks. Each is now one line."""
    import shutil

    ckpt, out, _ = exported
    other = tmp_path / "other"
    agent, cfg, env_spec, digest = load_agent(_checkpoint(tmp_path / "other.pt", pruned=True, planner__horizon=2))
    write_controller(agent, cfg, env_spec, other, checkpoint=tmp_path / "other.pt", checkpoint_sha256=digest)
    mixed = Path(shutil.copytree(out, tmp_path / "mixed"))
    shutil.copy(other / "planner.onnx", mixed / "planner.onnx")
    with pytest.raises(DeployError, match="planner.onnx in .* is not the file controller.json was written with"):
        Controller.load(mixed, mode="plan")
    Controller.load(mixed, mode="policy")  # the policy file is its own: policy mode loads
    spec = json.loads((mixed / "controller.json").read_text())
    del spec["file_sha256"]  # an export from before the hashes: the shapes are still compared
    (mixed / "controller.json").write_text(json.dumps(spec))
    with pytest.raises(DeployError, match=r"planner.onnx: input 'prev_mean' is \[2, 2\], controller.json says \[3, 2\]"):
        Controller.load(mixed, mode="plan")
    for text, match in (("{not json", "cannot be read as JSON"), ("[1, 2]", "is not a ca-prune/controller/v1 file"),
                        (json.dumps({**spec, "files": {"planner": "../planner.onnx"}}), "is not a file name in"),
                        (json.dumps({k: v for k, v in spec.items() if k != "obs_dim"}), r"missing \['obs_dim'\]")):
        (mixed / "controller.json").write_text(text)
        with pytest.raises(DeployError, match=match):
            Controller.load(mixed, mode="plan")
    (mixed / "controller.json").write_text(json.dumps(spec))
    (mixed / "planner.onnx").write_bytes((out / "planner.onnx").read_bytes()[:100])
    with pytest.raises(DeployError, match="cannot load .*planner.onnx"):
        Controller.load(mixed, mode="plan")


def test_a_hashed_graph_is_loaded_from_the_bytes_that_were_checked(exported, monkeypatch):
    """The runtime used to hash planner.onnx and then let onnxruntime open the path again: a file replaced between
    the two reads was loaded unchecked. Now each graph is read once and the session is built from those bytes."""
    import onnxruntime as ort

    from pruning import deploy

    _, out, _ = exported
    reads, built = [], []
    real_read, real_session = Path.read_bytes, ort.InferenceSession

    def read_bytes(self):
        reads.append(self.name)
        return real_read(self)

    def session(model, *args, **kwargs):
        built.append(model)
        return real_session(model, *args, **kwargs)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    monkeypatch.setattr(deploy.ort, "InferenceSession", session)
    Controller.load(out, mode="plan")
    assert reads.count("planner.onnx") == 1 and "policy.onnx" not in reads
    assert built == [(out / "planner.onnx").read_bytes()]  # bytes, not the path


def test_the_check_refuses_a_checkpoint_replaced_since_the_export(exported, tmp_path):
    """check=true used to compare the export with whatever the checkpoint path held (another agent: every action
    different, "within spread: True", exit 0). A re-export removes the previous check.json."""
    import shutil

    from pruning.study.deploy_check import run_check

    ckpt = Path(shutil.copy(exported[0], tmp_path / "checkpoint.pt"))
    out = Path(shutil.copytree(exported[1], tmp_path / "export"))
    (out / "check.json").write_text("{}")
    _replace_checkpoint(ckpt)
    with pytest.raises(PruningConfigError, match="replaced since the export"):
        run_check(ckpt, out, episodes=1, mode="policy", max_episode_steps=8)
    agent, cfg, env_spec, digest = load_agent(ckpt)
    write_controller(agent, cfg, env_spec, out, checkpoint=ckpt, checkpoint_sha256=digest)
    assert not (out / "check.json").exists()
    result = run_check(ckpt, out, episodes=1, mode="policy")  # one episode: no spread to judge by
    assert result["summary"]["within_spread"] is None
    assert result["episode_length"] == 250 and result["episodes"][0]["steps"] == 250  # the task's own limit


def test_export_into_a_file_is_one_line_exit_2(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "checkpoint.pt", pruned=False)
    with pytest.raises(SystemExit) as exit_info:
        run_export_cli({"checkpoint": str(ckpt), "out": str(ckpt)})
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: invalid config: out={ckpt}; allowed: a folder (created if missing), not a file or a path below one"]


def test_export_cli_user_errors_and_ctrl_c_are_one_line(tmp_path, capsys, monkeypatch):
    """out= a folder that cannot be created and Ctrl-C printed tracebacks (exit 1 / 130 with 84-267 lines)."""
    import pruning.study.export as export

    ckpt = _checkpoint(tmp_path / "checkpoint.pt", pruned=False)
    with pytest.raises(SystemExit) as exit_info:
        run_export_cli({"checkpoint": str(ckpt), "out": "/proc/ca-prune-nope"})
    assert exit_info.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: invalid config: out=/proc/ca-prune-nope; allowed: a folder that can be created")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "export_controller", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        run_export_cli({"checkpoint": str(ckpt), "out": str(tmp_path / "out")})
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        "interrupted: an unfinished export leaves the output folder's files as they were"]


@pytest.mark.slow
def test_the_torchscript_exporter_fails_in_one_line(tmp_path, capsys):
    """exporter=torchscript is allowed (auto falls back to it) but cannot translate the planner: one line, exit 2."""
    ckpt = _checkpoint(tmp_path / "checkpoint.pt", pruned=False)
    with pytest.raises(SystemExit) as exit_info:
        run_export_cli({"checkpoint": str(ckpt), "out": str(tmp_path / "out"), "exporter": "torchscript"})
    assert exit_info.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: exporter=torchscript failed (") and "use exporter=auto or dynamo" in line
    assert not (tmp_path / "out" / "controller.json").exists()
