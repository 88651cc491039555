"""Runtime of an exported controller: onnxruntime and numpy only (no torch, no dm_control, no Hydra).

(A ``format=pt2`` export is run by the same class through :mod:`pruning.deploy_pt2`, which needs torch; it is
imported only when ``controller.json`` names ``.pt2`` files.)

    from pruning.deploy import Controller

    ctrl = Controller.load("RUN_DIR")          # policy.onnx, planner.onnx, controller.json (scripts/export.py)
    ctrl.reset()                               # at the start of every episode
    action = ctrl.act(obs)                     # (action_dim,) float32 in [-1, 1]
    env_action = ctrl.to_bounds(action)        # the same action in the task's units (action_low .. high)

``mode="plan"`` runs ``planner.onnx``: one MPPI step per call, with the warm start kept here (the graph's
``mean`` output is fed back as the next call's ``prev_mean``; :meth:`Controller.reset` sets it to zeros,
which is exactly the PyTorch planner's "no warm start") and the planner's random draws made here with a
``numpy.random.Generator`` seeded at :meth:`Controller.load` / :meth:`Controller.reset` (standard normal,
uniform [0, 1) and Q-member pairs, shapes and kinds from ``controller.json``'s ``planner_inputs``).
``mode="policy"`` runs ``policy.onnx``: the policy prior's deterministic action, no state, no noise.
Without a ``mode`` a controller acts as its PyTorch agent did: ``plan`` when the checkpoint planned
(``controller.json``'s ``planner.mpc``), else ``policy`` (:func:`default_mode`).

Given the same observation, warm start and noise (:attr:`Controller.last_inputs` holds the inputs of the
last planning call) the exported planner returns the PyTorch planner's action to float rounding; the
noise itself comes from numpy, so a controller and a PyTorch agent seeded alike do not draw the same
numbers. This module must stay importable without torch (``tests/test_export.py`` checks it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

CONTROLLER_FORMAT = "ca-prune/controller/v1"
MODES = ("plan", "policy")


class DeployError(ValueError):
    """The exported controller cannot be loaded or used; the message is one line."""


def _session(path: Path, num_threads: int, inputs: list[dict], outputs: list[dict]):
    """An ``onnxruntime.InferenceSession`` of ``path``, or for a ``.pt2`` package its
    :class:`pruning.deploy_pt2.Pt2Session` (same ``run`` interface; ``inputs`` / ``outputs``: the specs of
    ``controller.json``, whose order is the package's positional order)."""
    if not path.is_file():
        raise DeployError(f"exported model not found: {path}")
    if path.suffix == ".pt2":
        from pruning.deploy_pt2 import Pt2Session

        return Pt2Session(path, [s["name"] for s in inputs], [s["name"] for s in outputs], num_threads)
    return ort.InferenceSession(str(path), session_options(num_threads), providers=["CPUExecutionProvider"])


def session_options(num_threads: int) -> ort.SessionOptions:
    """The onnxruntime settings of every deployed graph: ``num_threads`` intra-op threads, sequential."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


def default_mode(spec: dict) -> str:
    """How the exported agent acted: ``plan`` if its checkpoint planned (``planner.mpc``), else ``policy``."""
    return "plan" if spec.get("planner", {}).get("mpc", True) else "policy"


def draw_input(spec: dict, rng: np.random.Generator) -> np.ndarray:
    """One random planner input of ``spec`` (an entry of ``controller.json``'s ``planner_inputs``)."""
    shape, kind = tuple(spec["shape"]), spec["distribution"]
    if kind == "normal":
        return rng.standard_normal(shape, dtype=np.float32)
    if kind == "uniform":
        return rng.random(shape, dtype=np.float32)
    if kind == "members":  # rows of two distinct Q-members (the one member twice for a 1-member ensemble)
        rows = [rng.permutation(spec["num_q"])[:2] for _ in range(shape[0])]
        return np.stack([np.resize(r, 2) for r in rows]).astype(np.int64)
    raise DeployError(f"planner input {spec['name']!r} has unknown distribution {kind!r}")


class Controller:
    """An exported TD-MPC controller: :meth:`load`, :meth:`reset`, :meth:`act` (see the module docstring)."""

    def __init__(self, spec: dict, policy, planner, mode: str | None = None, seed: int = 0):
        """``policy`` / ``planner``: sessions with ``run(output_names, inputs)`` (onnxruntime's, or
        :class:`pruning.deploy_pt2.Pt2Session`); ``planner`` is ``None`` in ``policy`` mode; ``mode``
        ``None``: :func:`default_mode`."""
        mode = default_mode(spec) if mode is None else mode
        if mode not in MODES:
            raise DeployError(f"mode must be one of {'|'.join(MODES)}, got {mode!r}")
        self.spec, self.mode, self.seed = spec, mode, seed
        self.policy_session, self.planner_session = policy, planner
        self.obs_dim, self.action_dim = int(spec["obs_dim"]), int(spec["action_dim"])
        self.horizon = int(spec["planner"]["horizon"])
        self.noise_specs = [s for s in spec["planner_inputs"] if s["distribution"] not in ("observation", "warm_start")]
        self.action_low = np.asarray(spec["action_low"], dtype=np.float64)
        self.action_high = np.asarray(spec["action_high"], dtype=np.float64)
        self.last_inputs: dict[str, np.ndarray] = {}
        self.rng = np.random.default_rng(seed)
        self.reset()

    @classmethod
    def load(cls, directory: str | Path, mode: str | None = None, seed: int = 0, num_threads: int = 1) -> Controller:
        """Load ``controller.json`` and the graphs it names in ``directory`` (ONNX, or ``.pt2`` packages; the
        planner only for ``plan``); ``mode`` ``None``: as the PyTorch agent acted (:func:`default_mode`)."""
        directory = Path(directory)
        path = directory / "controller.json"
        if not path.is_file():
            raise DeployError(f"controller.json not found in {directory} (write it with scripts/export.py)")
        spec = json.loads(path.read_text())
        if spec.get("format") != CONTROLLER_FORMAT:
            raise DeployError(f"{path} is not a {CONTROLLER_FORMAT} file (found format {spec.get('format')!r})")
        mode = default_mode(spec) if mode is None else mode
        if mode not in MODES:
            raise DeployError(f"mode must be one of {'|'.join(MODES)}, got {mode!r}")
        policy = _session(directory / spec["files"]["policy"], num_threads, spec["policy_inputs"],
                          spec["policy_outputs"])
        planner = _session(directory / spec["files"]["planner"], num_threads, spec["planner_inputs"],
                           spec["planner_outputs"]) if mode == "plan" else None
        return cls(spec, policy, planner, mode, seed)

    def reset(self, seed: int | None = None) -> None:
        """Start an episode: forget the warm start; with ``seed``, re-seed the noise generator."""
        if seed is not None:
            self.seed = seed
            self.rng = np.random.default_rng(seed)
        self.prev_mean = np.zeros((self.horizon, self.action_dim), dtype=np.float32)

    def draw_noise(self) -> dict[str, np.ndarray]:
        """The random inputs of one planning call, by name, drawn from this controller's generator."""
        return {s["name"]: draw_input(s, self.rng) for s in self.noise_specs}

    def plan(self, obs: np.ndarray, prev_mean: np.ndarray, noise: dict[str, np.ndarray]):
        """One ``planner.onnx`` call: ``(action (A,), mean (H, A))``; no state is read or changed."""
        if self.planner_session is None:
            raise DeployError("this controller was loaded with mode='policy': no planner")
        inputs = {"obs": self._obs(obs), "prev_mean": np.asarray(prev_mean, dtype=np.float32), **noise}
        self.last_inputs = inputs
        action, mean = self.planner_session.run(["action", "mean"], inputs)
        return action, mean

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Action ``(action_dim,)`` in [-1, 1] for one observation ``(obs_dim,)``."""
        if self.mode == "policy":
            return self.policy_session.run(["action"], {"obs": self._obs(obs)})[0][0]
        action, self.prev_mean = self.plan(obs, self.prev_mean, self.draw_noise())
        return action

    def to_bounds(self, action: np.ndarray) -> np.ndarray:
        """``action`` in [-1, 1] mapped linearly onto the task's ``action_low .. action_high`` (clipped)."""
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        return self.action_low + (a + 1.0) * 0.5 * (self.action_high - self.action_low)

    def _obs(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32).reshape(1, -1)
        if obs.shape[1] != self.obs_dim:
            raise DeployError(f"observation has {obs.shape[1]} entries, the controller expects {self.obs_dim}")
        return obs
