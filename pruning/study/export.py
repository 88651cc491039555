"""Export a (pruned) TD-MPC checkpoint to ONNX: ``policy.onnx``, ``planner.onnx`` and ``controller.json``.

    python scripts/export.py checkpoint=RUN_DIR/checkpoint.pt format=onnx [out=DIR] [check=true episodes=N]
    python scripts/export.py checkpoint=RUN_DIR/checkpoint.pt format=pt2     # policy.pt2, planner.pt2

``format=pt2`` writes the same two graphs as AOTInductor packages (``torch.export`` then
``torch._inductor.aoti_compile_and_package``: compiled C++ kernels, loaded with
``torch._inductor.aoti_load_package``; running them needs libtorch, not the Python training stack). It
plans faster than onnxruntime on some CPUs and slower on others (``benchmarks/pt2_latency.py``,
``docs/deploy.md``: faster on a Xeon VM, 5 % slower on an EPYC VM); compiling it takes a minute or two per graph. :class:`pruning.deploy.Controller` loads either format.

- ``policy.onnx``: ``obs (1, obs_dim)`` -> ``action (1, A)``, the deterministic policy prior
  (``tanh`` of the policy mean, ``TDMPC.act(obs, eval_mode=True)`` with ``planner.mpc=false``).
- ``planner.onnx``: one planned action, the full MPPI step of :meth:`tdmpc.planner.MPPIPlanner.plan` in
  evaluation mode (no exploration noise) with the checkpoint's iterations, horizon, samples, elites,
  temperature and policy-prior trajectories. Inputs: ``obs (1, obs_dim)``, ``prev_mean (H, A)`` (the warm
  start: the ``mean`` output of the previous step of the episode, zeros after a reset; zeros are exactly
  the planner's "no warm start") and the random draws of :class:`tdmpc.planner.PlanNoise` (``pi_eps``
  (absent when ``num_pi_trajs=0``), ``sample_eps``, ``terminal_eps``, ``q_members``, ``gumbel_u``).
  Outputs: ``action (A,)`` in [-1, 1] and ``mean (H, A)``, the next warm start. The noise is **passed in**,
  not generated inside the graph, so that the exported planner and the PyTorch planner given the same
  noise give the same action (to float rounding, ``tests/test_export.py`` checks 1e-4; except when two
  trajectories' values are closer than that rounding and the elite order flips, see ``docs/deploy.md``).
- ``controller.json``: widths, observation and action specs (actions are in [-1, 1], mapped linearly to
  ``action_low .. action_high`` by the env), planner settings, input shapes and distributions, task,
  action repeat, the source checkpoint's sha256 (of the bytes the exported weights were loaded from) and
  the git commit.

The files are written into a temporary folder inside the output folder and moved into place only once
every one of them is written: a failed export leaves an existing controller there as it was, and the
folder holds no ``controller.json`` while its graphs are being replaced, so it never loads with the files
of two exports.

The graphs are :class:`PolicyGraph` and :class:`PlanGraph`, ``nn.Module`` wrappers of the world model
that run the planner's arithmetic with the noise as arguments; they are exported with
``torch.onnx.export`` and checked with ``onnx.checker``. The runtime that loads them without torch is
:mod:`pruning.deploy`. Like :mod:`pruning.study.prune_job`, this module is TD-MPC glue and imports ``tdmpc``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from pruning.serialize import resize_to_state_dict
from pruning.study.export_graphs import PlanGraph, PolicyGraph
from tdmpc.run_dir import file_sha256
from tdmpc.temp_file import remove_abandoned_dirs

CONTROLLER_FORMAT = "ca-prune/controller/v1"
POLICY_FILE, PLANNER_FILE, CONTROLLER_FILE = "policy.onnx", "planner.onnx", "controller.json"
FORMATS = ("onnx", "pt2")
#: ``format -> (policy file, planner file)``
FILES = {"onnx": (POLICY_FILE, PLANNER_FILE), "pt2": ("policy.pt2", "planner.pt2")}
EXPORTERS = ("auto", "dynamo", "torchscript")


def task_spec(task: str, action_repeat: int | None) -> dict:
    """``obs_dim``, ``action_dim``, ``action_low``, ``action_high``, ``episode_length``, ``action_repeat`` of
    a dm_control task (``tdmpc.envs.make_env``)."""
    from tdmpc.envs import make_env

    env = make_env(task, 0, action_repeat)
    # the env's own bounds, which its actions in [-1, 1] are mapped onto (optional in the env protocol)
    action_dim = int(env.action_space.shape[0])
    low, high = (getattr(env, f"action_{side}", np.full(action_dim, sign)) for side, sign in (("low", -1.0), ("high", 1.0)))
    spec = {"obs_dim": int(env.observation_space.shape[0]), "action_dim": action_dim,
            "action_low": [float(x) for x in low], "action_high": [float(x) for x in high],
            "episode_length": int(env.episode_length), "action_repeat": int(env.action_repeat)}
    env.close()
    return spec


def load_agent(checkpoint: str | Path) -> tuple[Any, Any, dict, str]:
    """``(agent, train_cfg, env_spec, sha256)`` of a training or prune-job checkpoint: the agent on the CPU,
    in eval mode, and the hex sha256 of the very bytes it was loaded from
    (:func:`tdmpc.checkpoint.read_checkpoint`).

    The agent is a fresh ``tdmpc.agent.TDMPC`` resized to the stored (possibly pruned) widths
    (:func:`pruning.serialize.resize_to_state_dict`) with the stored model weights; optimiser state is
    not loaded. The stored training config is validated again without its device, compile and logger
    settings (they do not shape the agent; an ``online`` W&B logger would need an API key here).
    ``env_spec`` holds ``obs_dim``, ``action_dim``, ``action_low``, ``action_high`` and ``episode_length``
    of the task. Raises ``tdmpc.checkpoint.CheckpointError`` (one line) for a missing, corrupt or foreign file.
    """
    from tdmpc.agent import TDMPC
    from tdmpc.checkpoint import CheckpointError, read_checkpoint
    from tdmpc.config import TrainConfig, from_dict, validate

    path = Path(checkpoint).expanduser()
    state, digest = read_checkpoint(path)
    saved = state.get("config")
    if not isinstance(saved, dict) or "agent" not in state or "model" not in state["agent"]:
        raise CheckpointError(f"{path} is not a TD-MPC training checkpoint (no config/agent)")
    # A prune job's config adds keys ("prune", "trained_env_steps") to the training config: keep its fields.
    # The logger settings (W&B) are dropped, device and compile overridden: none of them shapes the agent.
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg_dict = {k: v for k, v in saved.items() if k in fields and k not in ("pruning", "logger")}
    cfg_dict.update(device="cpu", compile=False)
    cfg = validate(from_dict(TrainConfig, cfg_dict))
    env_spec = task_spec(cfg.task, cfg.action_repeat)
    agent = TDMPC(env_spec["obs_dim"], env_spec["action_dim"], env_spec["episode_length"], cfg, torch.device("cpu"))
    if resize_to_state_dict(agent.model, state["agent"]["model"]):
        agent.build_optimizers()
    agent.model.load_state_dict(state["agent"]["model"])
    agent.model.eval()
    return agent, cfg, env_spec, digest


# ------------------------------------------------------------------------------------------ export


def plan_input_specs(planner_cfg: Any, action_dim: int, obs_dim: int, num_q: int) -> list[dict]:
    """Name, shape, dtype and distribution of every ``planner.onnx`` input, in the graph's order.

    ``distribution``: ``observation``, ``warm_start`` (the previous ``mean`` output shifted inside the
    graph; zeros after a reset), ``normal`` (standard normal), ``uniform`` ([0, 1)) or ``members`` (each
    row: two distinct Q-members drawn without replacement from ``range(num_q)``, the same member twice when
    ``num_q=1``). The draws are those of :class:`tdmpc.planner.PlanNoise`.
    """
    H, P, N, A = planner_cfg.horizon, planner_cfg.num_pi_trajs, planner_cfg.num_samples, action_dim
    iters, E = planner_cfg.iterations, planner_cfg.num_elites
    specs = [
        {"name": "obs", "shape": [1, obs_dim], "dtype": "float32", "distribution": "observation"},
        {"name": "prev_mean", "shape": [H, A], "dtype": "float32", "distribution": "warm_start"},
        {"name": "sample_eps", "shape": [iters, H, N, A], "dtype": "float32", "distribution": "normal"},
        {"name": "terminal_eps", "shape": [iters, N + P, A], "dtype": "float32", "distribution": "normal"},
        {"name": "q_members", "shape": [iters, 2], "dtype": "int64", "distribution": "members", "num_q": num_q},
        {"name": "gumbel_u", "shape": [E], "dtype": "float32", "distribution": "uniform"},
    ]
    if P > 0:
        specs.append({"name": "pi_eps", "shape": [H, P, A], "dtype": "float32", "distribution": "normal"})
    return specs


def plan_inputs(obs: torch.Tensor, prev_mean: torch.Tensor | None, noise: Any) -> dict[str, torch.Tensor]:
    """``planner.onnx`` inputs by name from an observation ``(obs_dim,)``, a warm start ``(H, A)`` or
    ``None`` (no warm start) and a :class:`tdmpc.planner.PlanNoise`."""
    inputs = {"obs": obs.reshape(1, -1).float(),
              "prev_mean": torch.zeros_like(noise.sample_eps[0, :, 0]) if prev_mean is None else prev_mean,
              "sample_eps": noise.sample_eps, "terminal_eps": noise.terminal_eps,
              "q_members": noise.q_members.long(), "gumbel_u": noise.gumbel_u}
    if noise.pi_eps.shape[1] > 0:
        inputs["pi_eps"] = noise.pi_eps
    return inputs


def export_graph(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
                 exporter: str = "auto") -> dict:
    """``torch.onnx.export`` ``module(*args)`` to ``path``, check it with ``onnx.checker``; returns
    ``{"exporter", "opset", "fallback_reason"}``.

    ``exporter="auto"`` uses the dynamo exporter (``torch.export`` + onnxscript): it is the maintained
    one, and the TorchScript exporter cannot translate ``aten::expm1`` (the two-hot decoding's symexp)
    so it fails on ``planner.onnx``. Only if dynamo raises, ``auto`` retries with the TorchScript
    exporter (``dynamo=False``) and records why in ``fallback_reason``.
    """
    import onnx

    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    kw = {"input_names": input_names, "output_names": output_names}
    used, reason = ("torchscript" if exporter == "torchscript" else "dynamo"), None
    with torch.no_grad():
        try:
            if used == "dynamo":
                torch.onnx.export(module, args, str(path), dynamo=True, external_data=False, verbose=False, **kw)
            else:
                torch.onnx.export(module, args, str(path), dynamo=False, **kw)
        except Exception as err:  # noqa: BLE001 - any exporter failure: fall back once, else re-raise
            if exporter != "auto":
                raise
            used, reason = "torchscript", f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300]}"
            torch.onnx.export(module, args, str(path), dynamo=False, **kw)
    onnx.checker.check_model(str(path), full_check=True)
    opset = next(o.version for o in onnx.load(str(path), load_external_data=False).opset_import if o.domain == "")
    return {"exporter": used, "opset": int(opset), "fallback_reason": reason}


#: Inductor settings of the AOTInductor packages. ``freezing``: the exported weights are constants, which lets
#: inductor fold computations on the weights alone (such as the Q ensemble's stacking of its members' weights
#: at every call) and prepare the weights for its matrix multiplies at build time; which of these gives the
#: gain was not measured. Measured (``python benchmarks/pt2_latency.py``, random-weight CPU preset, 1 thread,
#: round 2, session 11): the dense planned action 16.0 -> 11.9 ms, at 50 % of the planned-action FLOPs removed
#: 9.9 -> 7.9 ms, the same outputs to 1e-7 (``docs/deploy.md``).
PT2_INDUCTOR_CONFIGS = {"freezing": True}


def export_pt2(module: nn.Module, args: tuple, path: Path) -> dict:
    """``torch.export`` ``module(*args)`` (static shapes) and compile it with AOTInductor into the package
    ``path``; returns ``{"exporter": "aoti", "compile_s"}``. The package is loaded back and run once on
    ``args``: a package that does not reproduce the module's outputs to 1e-4 raises ``RuntimeError``."""
    t0 = time.perf_counter()
    with torch.no_grad():
        want = copy.deepcopy(module)(*args)  # on a copy: tracing leaves fake tensors in the module's caches
        program = torch.export.export(module, args)
        torch._inductor.aoti_compile_and_package(program, package_path=str(path), inductor_configs=PT2_INDUCTOR_CONFIGS)
        got = torch._inductor.aoti_load_package(str(path))(*args)
    got, want = (got if isinstance(got, (tuple, list)) else (got,)), (want if isinstance(want, tuple) else (want,))
    diffs = [float((g - w).abs().max()) for g, w in zip(got, want)]
    diff = max(diffs) if all(d == d for d in diffs) else float("nan")  # max() would drop a NaN after the first
    if len(got) != len(want) or not diff <= 1e-4:  # (a NaN difference fails too)
        raise RuntimeError(f"{path.name}: the compiled package differs from the module by {diff:.3g}")
    return {"exporter": "aoti", "compile_s": round(time.perf_counter() - t0, 1)}


def controller_spec(agent: Any, cfg: Any, env_spec: dict, checkpoint: Path | None, exports: dict,
                    fmt: str = "onnx", checkpoint_sha256: str | None = None) -> dict:
    """The content of ``controller.json`` (see the module docstring); ``checkpoint`` and
    ``checkpoint_sha256`` (the sha256 of the bytes the agent was loaded from) may be ``None``."""
    import onnx

    from pruning.study.provenance import git_commit

    model, p = agent.model, cfg.planner
    planner = {k: getattr(p, k) for k in ("iterations", "horizon", "num_samples", "num_elites", "num_pi_trajs",
                                          "min_std", "max_std", "temperature", "mpc")}
    return {
        "format": CONTROLLER_FORMAT, "task": cfg.task, "action_repeat": env_spec["action_repeat"],
        "episode_length": env_spec["episode_length"], "model_size": cfg.model_size,
        "obs_dim": env_spec["obs_dim"], "action_dim": env_spec["action_dim"],
        "action_low": env_spec["action_low"], "action_high": env_spec["action_high"],
        "action_range": [-1.0, 1.0],  # actions out of both graphs; the env maps them linearly onto low..high
        "widths": model.widths(), "num_q": len(model.qs), "latent_dim": model.widths()["encoder"][-1],
        "discount": float(agent.discount), "planner": planner,
        "files": dict(zip(("policy", "planner"), FILES[fmt])), "artifact_format": fmt,
        "policy_inputs": [{"name": "obs", "shape": [1, env_spec["obs_dim"]], "dtype": "float32"}],
        "policy_outputs": [{"name": "action", "shape": [1, env_spec["action_dim"]], "dtype": "float32"}],
        "planner_inputs": plan_input_specs(p, env_spec["action_dim"], env_spec["obs_dim"], len(model.qs)),
        "planner_outputs": [{"name": "action", "shape": [env_spec["action_dim"]], "dtype": "float32"},
                            {"name": "mean", "shape": [p.horizon, env_spec["action_dim"]], "dtype": "float32"}],
        "noise": "passed in as inputs (pruning.deploy draws them with numpy); see docs/deploy.md",
        "exports": exports, "checkpoint": None if checkpoint is None else str(checkpoint),
        "checkpoint_sha256": checkpoint_sha256,
        "git_commit": git_commit(), "torch": torch.__version__, "onnx": onnx.__version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _fsync(path: Path) -> None:
    """Flush a written file to disk (before it is renamed into place)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def write_controller(agent: Any, cfg: Any, env_spec: dict, out_dir: str | Path, exporter: str = "auto",
                     checkpoint: Path | None = None, fmt: str = "onnx",
                     checkpoint_sha256: str | None = None) -> Path:
    """Export ``agent`` (a ``TDMPC`` in eval mode) into ``out_dir``: the policy and planner graphs in ``fmt``
    (``onnx``: ``policy.onnx``, ``planner.onnx``; ``pt2``: ``policy.pt2``, ``planner.pt2``) and
    ``controller.json`` (``checkpoint``, ``checkpoint_sha256``: the source file and the sha256 of the bytes
    the agent was loaded from, as returned by :func:`load_agent`, named there; both ``None`` for an agent
    built in memory). ``env_spec`` as returned by :func:`load_agent`. Returns ``out_dir``.

    Every file is written into a temporary folder in ``out_dir`` first; only when all are written is an
    existing ``controller.json`` removed, the graphs moved into place (``os.replace``) and ``controller.json``
    moved in last. A failed export leaves the files of ``out_dir`` as they were."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if (checkpoint is None) != (checkpoint_sha256 is None):
        raise ValueError("checkpoint and checkpoint_sha256 go together (both from load_agent, or both None)")
    from tdmpc.planner import PlanNoise

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        from pruning.config import PruningConfigError

        allowed = ("a folder (created if missing), not a file or a path below one"
                   if isinstance(err, (FileExistsError, NotADirectoryError))
                   else f"a folder that can be created ({err.strerror or err})")
        raise PruningConfigError(f"invalid config: out={out}; allowed: {allowed}") from None
    # Exported from copies: tracing runs the model on fake tensors, and a cache filled then (the two-hot
    # bins of ``TwoHot.bins``) would break the caller's model for eager use afterwards.
    model = copy.deepcopy(agent.model).eval()
    obs = torch.zeros(1, env_spec["obs_dim"])
    policy_file, planner_file = FILES[fmt]
    noise = PlanNoise.draw(cfg.planner, env_spec["action_dim"], len(model.qs), torch.Generator().manual_seed(0))
    inputs = plan_inputs(obs[0], None, noise)
    graph = PlanGraph(copy.deepcopy(agent.model).eval(), cfg.planner, agent.discount).eval()
    remove_abandoned_dirs(out, ".export-")  # left by an export killed while it wrote
    tmp = Path(tempfile.mkdtemp(prefix=f".export-{os.getpid()}-", dir=out))  # same folder: os.replace is atomic
    try:
        if fmt == "pt2":
            exports = {"policy": export_pt2(PolicyGraph(model).eval(), (obs,), tmp / policy_file),
                       "planner": export_pt2(graph, tuple(inputs.values()), tmp / planner_file)}
        else:
            exports = {"policy": export_graph(PolicyGraph(model).eval(), (obs,), tmp / policy_file, ["obs"],
                                              ["action"], exporter),
                       "planner": export_graph(graph, tuple(inputs.values()), tmp / planner_file, list(inputs),
                                               ["action", "mean"], exporter)}
        spec = controller_spec(agent, cfg, env_spec, checkpoint, exports, fmt, checkpoint_sha256)
        # the runtime refuses a graph file of another export beside this controller.json (pruning.deploy)
        spec["file_sha256"] = {kind: file_sha256(tmp / name) for kind, name in spec["files"].items()}
        (tmp / CONTROLLER_FILE).write_text(json.dumps(spec, indent=2) + "\n")
        for name in (policy_file, planner_file, CONTROLLER_FILE):
            _fsync(tmp / name)
        # No controller.json while the graphs are replaced: the folder never loads with files of two exports;
        # a check of the previous export (check.json) no longer describes the folder.
        from pruning.study.deploy_check import CHECK_FILE

        (out / CONTROLLER_FILE).unlink(missing_ok=True)
        (out / CHECK_FILE).unlink(missing_ok=True)
        for name in (policy_file, planner_file, CONTROLLER_FILE):  # controller.json last
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def export_controller(checkpoint: str | Path, out_dir: str | Path | None = None, exporter: str = "auto",
                      fmt: str = "onnx") -> Path:
    """Write the policy and planner graphs (in ``fmt``) and ``controller.json`` of ``checkpoint`` into
    ``out_dir`` (default: the checkpoint's folder); returns ``out_dir``."""
    checkpoint = Path(checkpoint).expanduser()
    agent, cfg, env_spec, digest = load_agent(checkpoint)
    out = Path(out_dir) if out_dir is not None else checkpoint.parent
    return write_controller(agent, cfg, env_spec, out, exporter, checkpoint, fmt, digest)


# ------------------------------------------------------------------------------------------ CLI


@dataclass
class ExportConfig:
    """``scripts/export.py`` (``conf/export.yaml``); every key is validated by :func:`validate_export`."""

    checkpoint: str = ""  # a training or prune-job checkpoint.pt (required)
    format: str = "onnx"  # onnx (onnxruntime, no torch needed) | pt2 (AOTInductor packages, need libtorch)
    out: str | None = None  # output folder; None: the checkpoint's folder
    exporter: str = "auto"  # format=onnx: auto (dynamo, TorchScript if dynamo fails) | dynamo | torchscript
    check: bool = False  # after exporting, run the closed-loop check (pruning/study/deploy_check.py)
    episodes: int = 3  # episodes of the check, env seeds seed, seed + 1, ...
    seed: int = 1  # first env seed of the check (also seeds the controllers' noise)
    # what the check runs: plan (planner.onnx vs MPPI) | policy (policy.onnx vs policy prior); null: as the
    # checkpoint's agent acts (plan if its planner.mpc, else policy)
    mode: str | None = None
    max_episode_steps: int | None = None  # env steps per episode of the check; null: the task's own time limit
    num_threads: int = 1  # onnxruntime and torch threads during the check


def validate_export(cfg: ExportConfig) -> ExportConfig:
    """Check every key; raises :class:`pruning.config.PruningConfigError` (one line: key, value, allowed)."""
    from pruning.config import require

    require(bool(cfg.checkpoint), "checkpoint", cfg.checkpoint, "path of a training or prune-job checkpoint.pt")
    require(cfg.format in FORMATS, "format", cfg.format, "|".join(FORMATS))
    require(cfg.exporter in EXPORTERS, "exporter", cfg.exporter, "|".join(EXPORTERS))
    require(isinstance(cfg.check, bool), "check", cfg.check, "true|false")
    require(isinstance(cfg.episodes, int) and cfg.episodes >= 1, "episodes", cfg.episodes, "an integer >= 1")
    require(isinstance(cfg.seed, int) and cfg.seed >= 0, "seed", cfg.seed, "an integer >= 0")
    require(cfg.mode in (None, "plan", "policy"), "mode", cfg.mode, "null|plan|policy")
    require(cfg.max_episode_steps is None or (isinstance(cfg.max_episode_steps, int) and cfg.max_episode_steps >= 1),
            "max_episode_steps", cfg.max_episode_steps, "null (the task's time limit) or an integer >= 1")
    require(isinstance(cfg.num_threads, int) and cfg.num_threads >= 1, "num_threads", cfg.num_threads,
            "an integer >= 1")
    return cfg


def register_configs() -> None:
    """Register :class:`ExportConfig` as ``export_schema`` (the schema of ``conf/export.yaml``)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="export_schema", node=ExportConfig)


def run_export_cli(cfg: Any) -> int:
    """Entry point of ``scripts/export.py``: export, then (``check=true``) the closed-loop check.

    Bad settings and a missing, corrupt or foreign checkpoint exit 2 with one line
    (``error: ...``) before anything is written; Ctrl-C exits 130 with one line (an export stopped before its
    end leaves the folder's files as they were). Returns 0.
    """
    import sys

    try:
        return _export_cli(cfg)
    except KeyboardInterrupt:
        print("interrupted: an unfinished export leaves the output folder's files as they were", file=sys.stderr,
              flush=True)
        sys.exit(130)


def _export_cli(cfg: Any) -> int:
    from omegaconf import OmegaConf

    from pruning.config import PruningConfigError
    from tdmpc.checkpoint import CheckpointError
    from tdmpc.cli import fail
    from tdmpc.config import ConfigError, from_dict

    try:
        data = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
        job = validate_export(from_dict(ExportConfig, {k: v for k, v in data.items() if k != "hydra"}))
    except (PruningConfigError, ConfigError) as err:
        fail(str(err))
    try:
        out = export_controller(job.checkpoint, job.out, job.exporter, job.format)
    except (PruningConfigError, ConfigError, CheckpointError) as err:
        fail(str(err))
    except Exception as err:
        if job.exporter != "torchscript":
            raise  # a failure of the default exporters is a bug to report: keep its traceback
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        fail(f"exporter=torchscript failed ({type(err).__name__}: {first[:200]}); the TorchScript exporter cannot "
             f"translate the planner (docs/deploy.md): use exporter=auto or dynamo. The folder's files are unchanged")
    spec = json.loads((out / CONTROLLER_FILE).read_text())
    planner = spec["exports"]["planner"]
    how = f"opset {planner['opset']}" if "opset" in planner else f"compiled in {planner['compile_s']} s"
    print(f"[export] {out / spec['files']['policy']}, {out / spec['files']['planner']}, {out / CONTROLLER_FILE} "
          f"(exporter {planner['exporter']}, {how})", flush=True)
    if job.check:
        from pruning.study.deploy_check import run_check

        try:
            run_check(job.checkpoint, out, episodes=job.episodes, seed=job.seed, mode=job.mode,
                      max_episode_steps=job.max_episode_steps, num_threads=job.num_threads)
        except PruningConfigError as err:  # mode=plan for a policy-only agent, a replaced checkpoint (export stays)
            fail(str(err))
    return 0
