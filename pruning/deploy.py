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

import hashlib
import json
import numbers
from pathlib import Path

import numpy as np
import onnxruntime as ort

CONTROLLER_FORMAT = "ca-prune/controller/v1"
MODES = ("plan", "policy")


class DeployError(ValueError):
    """The exported controller cannot be loaded or used; the message is one line."""


def _session(path: Path, num_threads: int, inputs: list[dict], outputs: list[dict], sha256: str | None = None):
    """An ``onnxruntime.InferenceSession`` of ``path``, or for a ``.pt2`` package its
    :class:`pruning.deploy_pt2.Pt2Session` (same ``run`` interface; ``inputs`` / ``outputs``: the specs of
    ``controller.json``, whose order is the package's positional order). ``sha256``: the file's hash as
    ``controller.json`` records it (exports since it does): a file of another export is refused."""
    if not path.is_file():
        raise DeployError(f"exported model not found: {path}")
    data = path.read_bytes() if sha256 is not None else None  # read once: the bytes checked are the bytes loaded
    if data is not None:
        found = hashlib.sha256(data).hexdigest()
        if found != sha256:
            raise DeployError(f"{path.name} in {path.parent} is not the file controller.json was written with "
                              f"(sha256 {found[:12]}, recorded {sha256[:12]}): files of two exports are mixed; export again")
    try:
        if path.suffix == ".pt2":
            from pruning.deploy_pt2 import Pt2Session  # (AOTInductor loads a package from a path only)

            return Pt2Session(path, [s["name"] for s in inputs], [s["name"] for s in outputs], num_threads)
        session = ort.InferenceSession(data if data is not None else str(path), session_options(num_threads),
                                       providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime / torch raise several types for a damaged or foreign file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DeployError(f"cannot load {path}: {first[:300]}") from None
    _check_io(session, path, inputs, outputs)  # (a .pt2 package checks its own inputs when called)
    return session


def _check_io(session, path: Path, inputs: list[dict], outputs: list[dict]) -> None:
    """Refuse a graph whose input / output names and static shapes are not those ``controller.json`` states
    (e.g. a planner of another horizon beside this controller.json), instead of failing at the first call."""
    for kind, found, want in (("input", session.get_inputs(), inputs), ("output", session.get_outputs(), outputs)):
        got = {a.name: [d if isinstance(d, int) else None for d in a.shape] for a in found}
        for spec in want:
            shape = got.get(spec["name"])
            if shape is None or any(d is not None and d != w for d, w in zip(shape, spec["shape"])) \
                    or len(shape) != len(spec["shape"]):
                raise DeployError(f"{path.name}: {kind} {spec['name']!r} is {shape}, controller.json says "
                                  f"{spec['shape']}: the file belongs to another export; export again")


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
        :class:`pruning.deploy_pt2.Pt2Session`); ``planner`` is ``None`` in ``policy`` mode, ``policy`` may be
        ``None`` in ``plan`` mode; ``mode`` ``None``: :func:`default_mode`."""
        mode = default_mode(spec) if mode is None else mode
        if mode not in MODES:
            raise DeployError(f"mode must be one of {'|'.join(MODES)}, got {mode!r}")
        _check_seed(seed)
        self.spec, self.mode, self.seed = spec, mode, seed
        self.policy_session, self.planner_session = policy, planner
        self.obs_dim, self.action_dim = int(spec["obs_dim"]), int(spec["action_dim"])
        self.horizon = int(spec["planner"]["horizon"])
        #: env steps each action was held for in training (an env that does not repeat actions itself must)
        self.action_repeat = int(spec.get("action_repeat", 1))
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
        try:
            spec = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise DeployError(f"{path} cannot be read as JSON ({str(err).splitlines()[0]}); export again") from None
        if not isinstance(spec, dict) or spec.get("format") != CONTROLLER_FORMAT:
            found = spec.get("format") if isinstance(spec, dict) else type(spec).__name__
            raise DeployError(f"{path} is not a {CONTROLLER_FORMAT} file (found format {found!r})")
        mode = default_mode(spec) if mode is None else mode
        if mode not in MODES:
            raise DeployError(f"mode must be one of {'|'.join(MODES)}, got {mode!r}")
        _check_seed(seed)
        if isinstance(num_threads, bool) or not isinstance(num_threads, numbers.Integral) or num_threads < 0:
            raise DeployError(f"num_threads must be an integer >= 0 (0: onnxruntime's default), got {num_threads!r}")
        kind = "policy" if mode == "policy" else "planner"
        missing = [k for k in ("files", "obs_dim", "action_dim", "action_low", "action_high", "planner",
                               "planner_inputs", f"{kind}_inputs", f"{kind}_outputs") if k not in spec]
        name = spec["files"].get(kind) if isinstance(spec.get("files"), dict) else None
        if missing or not isinstance(name, str) or Path(name).name != name:
            raise DeployError(f"{path} is incomplete or damaged (missing {missing or 'files.' + kind}, or "
                              f"files.{kind}={name!r} is not a file name in {directory}); export again")
        session = _session(directory / name, int(num_threads), spec[f"{kind}_inputs"], spec[f"{kind}_outputs"],
                           (spec.get("file_sha256") or {}).get(kind))
        return cls(spec, session if mode == "policy" else None, session if mode == "plan" else None, mode, seed)

    def reset(self, seed: int | None = None) -> None:
        """Start an episode: forget the warm start; with ``seed``, re-seed the noise generator."""
        if seed is not None:
            _check_seed(seed)
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
        clash = sorted({"obs", "prev_mean"} & set(noise))
        if clash:
            raise DeployError(f"noise must not hold {clash}: they are plan()'s own arguments")
        inputs = {"obs": self._obs(obs), **self._planner_inputs({"prev_mean": prev_mean, **noise})}
        self.last_inputs = inputs
        action, mean = self.planner_session.run(["action", "mean"], inputs)
        return action, mean

    def _planner_inputs(self, given: dict) -> dict[str, np.ndarray]:
        """The planner's inputs other than ``obs`` as fresh arrays of the dtype and shape ``controller.json``
        gives them; a missing, unknown, misshapen or non-numeric input (or a fractional Q-member index) raises
        :class:`DeployError`. (A ``.pt2`` package reads its buffers as given: a float64 array would be read as
        float32 bytes, a short one past its end; onnxruntime refuses both, so both backends check here.)"""
        specs = {s["name"]: s for s in self.spec["planner_inputs"] if s["name"] != "obs"}
        if set(given) != set(specs):
            raise DeployError(f"planner inputs must be {sorted(specs)} (besides obs), got {sorted(given)}")
        out = {}
        for name, spec in specs.items():
            try:
                raw = np.asarray(given[name])
                arr = np.array(raw, dtype=spec["dtype"])
            except (TypeError, ValueError) as err:
                raise DeployError(f"planner input {name!r} must be numbers ({err})") from None
            if list(arr.shape) != list(spec["shape"]):
                raise DeployError(f"planner input {name!r} has shape {list(arr.shape)}, controller.json says "
                                  f"{spec['shape']}")
            if np.issubdtype(arr.dtype, np.integer) and not np.array_equal(arr, raw):
                raise DeployError(f"planner input {name!r} must hold integers")
            if spec["distribution"] == "members" and (arr.min() < 0 or arr.max() >= int(spec["num_q"])):
                raise DeployError(f"planner input {name!r} must hold Q-member indices in [0, {spec['num_q']})")
            out[name] = arr
        return out

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Action ``(action_dim,)`` in [-1, 1] for one observation ``(obs_dim,)`` (also ``(1, obs_dim)``); a
        non-finite entry, a batch or anything that is not an array of numbers raises :class:`DeployError`."""
        if self.mode == "policy":
            return self.policy_session.run(["action"], {"obs": self._obs(obs)})[0][0]
        action, self.prev_mean = self.plan(obs, self.prev_mean, self.draw_noise())
        return action

    def to_bounds(self, action: np.ndarray) -> np.ndarray:
        """``action`` in [-1, 1] mapped linearly onto the task's ``action_low .. action_high`` (clipped)."""
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        return self.action_low + (a + 1.0) * 0.5 * (self.action_high - self.action_low)

    def _obs(self, obs: np.ndarray) -> np.ndarray:
        """One observation as a fresh ``(1, obs_dim)`` float32 array (a copy: :attr:`last_inputs` must not change
        when the caller reuses its buffer)."""
        pair = isinstance(obs, tuple) and len(obs) == 2 and isinstance(obs[1], dict)  # gymnasium's (obs, info)
        if isinstance(obs, (dict, str, bytes)) or pair:
            raise DeployError(f"observation must be an array of {self.obs_dim} numbers, got a {type(obs).__name__}"
                              + (" (env.reset() returns (obs, info): pass obs)" if pair else ""))
        try:
            arr = np.array(obs, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise DeployError(f"observation must be an array of {self.obs_dim} numbers ({err})") from None
        if arr.size != self.obs_dim or max(arr.shape, default=1) != arr.size:
            raise DeployError(f"observation of shape {arr.shape}: the controller expects one observation of "
                              f"{self.obs_dim} entries ({self.obs_dim},), not a batch")
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise DeployError(f"observation entries {bad.tolist()[:10]} are not finite ({arr.reshape(-1)[bad[:10]].tolist()})")
        return arr.reshape(1, -1)


def _check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise DeployError(f"seed must be an integer >= 0, got {seed!r}")
