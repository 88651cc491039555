"""Structured (dataclass) configuration of a training run, registered with Hydra's ConfigStore.

Every key is validated by :func:`validate` before anything is built: a bad value raises
:class:`ConfigError` whose one-line message names the key, the value and what is allowed.
Model widths default to ``None`` and are filled in from the ``model_size`` preset (TD-MPC2's sizes,
plus a ``cpu`` preset tuned to train fast on two cores); any width set explicitly wins over the preset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING  # noqa: F401  (re-exported for users writing their own configs)

# TD-MPC2's model sizes (Hansen et al. 2024, Table 7), in millions of parameters, plus "cpu".
MODEL_SIZES: dict[str, dict[str, int]] = {
    "cpu": {"enc_dim": 128, "mlp_dim": 192, "latent_dim": 64, "num_enc_layers": 2, "num_q": 2},
    "1": {"enc_dim": 256, "mlp_dim": 384, "latent_dim": 128, "num_enc_layers": 2, "num_q": 2},
    "5": {"enc_dim": 256, "mlp_dim": 512, "latent_dim": 512, "num_enc_layers": 2, "num_q": 5},
    "19": {"enc_dim": 1024, "mlp_dim": 1024, "latent_dim": 768, "num_enc_layers": 3, "num_q": 5},
    "48": {"enc_dim": 1792, "mlp_dim": 1792, "latent_dim": 768, "num_enc_layers": 4, "num_q": 5},
    "317": {"enc_dim": 4096, "mlp_dim": 4096, "latent_dim": 1376, "num_enc_layers": 5, "num_q": 8},
}

# Planner settings that differ for the cpu preset (planning is half of the CPU time of a step).
PLANNER_PRESETS: dict[str, dict[str, int]] = {
    "cpu": {"iterations": 4, "num_samples": 256, "num_elites": 32, "num_pi_trajs": 16},
}


# Settings a resumed run must share with the run it continues (they change the trajectory or the model):
# a resume with another value is refused, naming them. Free to change on resume: steps, device,
# buffer_device, num_threads, compile, eval_freq, eval_episodes, checkpoint_freq, resume, overwrite,
# run_dir and logger. Sections (model, planner, optim, pruning) are fixed as a whole. A resume with the same
# settings reproduces the uninterrupted run exactly; changing eval_freq, eval_episodes or compile continues it
# validly but not bit for bit (evaluation and compiled noise draw from the global torch RNG).
FIXED_ON_RESUME = ("task", "seed", "model_size", "action_repeat", "seed_steps", "updates_per_step",
                   "buffer_size", "model", "planner", "optim", "pruning")


def fixed_settings(config: dict) -> dict:
    """The :data:`FIXED_ON_RESUME` entries of a resolved config dict (keys it lacks are left out)."""
    return {key: config[key] for key in FIXED_ON_RESUME if key in config}


#: Settings whose ``None`` means "the task's default" (:func:`task_default`). Training resolves them when it
#: starts and writes the values it uses into ``config.yaml`` and the checkpoint; the run dir's manifest
#: keeps what the command said. An older record's ``None`` equals the resolved default (:func:`with_task_defaults`).
TASK_DEFAULTS = ("action_repeat", "seed_steps")
SEED_EPISODES = 5  # seed_steps=None: at least this many episodes of random actions ...
SEED_AGENT_STEPS = 1000  # ... and at least this many agent steps (TD-MPC2: max(1000, 5 * episode_length))


def default_seed_steps(max_episode_steps: int, action_repeat: int) -> int:
    """``seed_steps=None``: TD-MPC2's ``max(1000, 5 * episode_length)`` agent steps (``tdmpc2/envs/__init__.py``),
    in env steps: ``max(1000 * action_repeat, 5 * max_episode_steps)``."""
    return max(SEED_AGENT_STEPS * action_repeat, SEED_EPISODES * max_episode_steps)


def task_default(task: str, key: str, action_repeat: int | None = None) -> int:
    """The value ``key`` (one of :data:`TASK_DEFAULTS`) takes for ``task`` when the config says ``None``
    (``seed_steps`` with the given ``action_repeat``; it builds the task's env to read its episode length)."""
    from tdmpc.envs import default_action_repeat, make_env

    if key == "action_repeat":
        return default_action_repeat(task)
    if key == "seed_steps":
        env = make_env(task, 0, action_repeat)
        return default_seed_steps(env.max_episode_steps, env.action_repeat)
    raise KeyError(f"{key!r} is not one of {TASK_DEFAULTS}")


def with_task_defaults(settings: dict) -> dict:
    """A copy of a config dict (or its :func:`fixed_settings`) whose ``None`` :data:`TASK_DEFAULTS` are
    replaced by the task's defaults, so that a record that says ``None`` compares equal to a resolved one."""
    out = dict(settings)
    if out.get("action_repeat") is None and "action_repeat" in out:
        out["action_repeat"] = task_default(out["task"], "action_repeat")
    if out.get("seed_steps") is None and "seed_steps" in out:
        out["seed_steps"] = task_default(out["task"], "seed_steps", out.get("action_repeat"))
    return out


class ConfigError(ValueError):
    """A configuration value is invalid; the message is one line for the user."""


@dataclass
class ModelConfig:
    """World-model architecture. ``None`` widths come from the ``model_size`` preset."""

    enc_dim: int | None = None
    mlp_dim: int | None = None
    latent_dim: int | None = None
    num_enc_layers: int | None = None
    num_q: int | None = None
    simnorm_dim: int = 8
    num_bins: int = 101
    vmin: float = -10.0
    vmax: float = 10.0
    dropout: float = 0.01
    log_std_min: float = -10.0
    log_std_max: float = 2.0


@dataclass
class PlannerConfig:
    """MPPI in latent space (TD-MPC2 defaults)."""

    mpc: bool = True  # False: act with the policy prior alone
    iterations: int | None = None  # preset: 6 (4 for cpu)
    num_samples: int | None = None  # preset: 512 (256 for cpu)
    num_elites: int | None = None  # preset: 64 (32 for cpu)
    num_pi_trajs: int | None = None  # preset: 24 (16 for cpu)
    horizon: int = 3
    min_std: float = 0.05
    max_std: float = 2.0
    temperature: float = 0.5


@dataclass
class OptimConfig:
    """Losses and optimisation (TD-MPC2 defaults)."""

    batch_size: int = 256
    lr: float = 3e-4
    enc_lr_scale: float = 0.3
    grad_clip_norm: float = 20.0
    rho: float = 0.5
    consistency_coef: float = 20.0
    reward_coef: float = 0.1
    value_coef: float = 0.1
    entropy_coef: float = 1e-4
    tau: float = 0.01
    discount_denom: float = 5.0
    discount_min: float = 0.95
    discount_max: float = 0.995


@dataclass
class WandbConfig:
    """W&B settings (``logger.wandb``; :class:`tdmpc.logger.Logger` takes them)."""

    mode: str = "auto"  # auto | online | offline | disabled; auto -> tdmpc.wandb_mode.resolve_wandb_mode()
    project: str = "ca-prune"
    entity: str | None = None
    group: str | None = None  # run grouping, e.g. the sweep name
    job_type: str = "train"  # train | prune | report
    tags: list[str] = field(default_factory=list)
    dir: str | None = None  # parent of the wandb/ folder; None: the run dir


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    console_every: int = 1  # print a console line every N episodes
    progress: bool = True  # tqdm progress bar (off when not a TTY)


@dataclass
class TrainConfig:
    """A training run. ``steps`` counts *environment* steps (after action repeat), as in the papers."""

    task: str = "cartpole-swingup"
    seed: int = 1
    steps: int = 100_000
    model_size: str = "cpu"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_threads: int = 0  # torch CPU threads; 0 = leave torch's default
    compile: str = "auto"  # true | false | auto: torch.compile the update and the planner (docs/speed.md)
    action_repeat: int | None = None  # None: per-task default (8 cartpole, 2 walker/finger/Pendulum-v1, 4 else)
    seed_steps: int | None = None  # env steps of random actions (whole episodes); None: TD-MPC2's default_seed_steps
    updates_per_step: float = 1.0  # gradient updates per agent step (after seeding)
    buffer_size: int = 1_000_000
    buffer_device: str = "auto"  # auto (= device) | cpu | cuda
    eval_freq: int = 10_000  # env steps
    eval_episodes: int = 10
    checkpoint_freq: int = 10_000  # env steps; saved at the first episode end after each multiple
    resume: bool = True  # continue from run_dir/checkpoint.pt when it exists
    overwrite: bool = False  # a run dir holding another run: move it aside to <dir>.old-<time> and start anew
    run_dir: str | None = None  # None: Hydra's run dir
    model: ModelConfig = field(default_factory=ModelConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    pruning: Any = None  # filled by the pruning package's config when enabled


def require(cond: bool, key: str, value: Any, allowed: str) -> None:
    """Raise a one-line :class:`ConfigError` naming ``key``, ``value`` and what is allowed unless ``cond``.

    The one validator of the agent's configs (the pruning package's configs use the same function,
    :func:`pruning.config.require`, which raises its own error type: neither package imports the other).
    """
    if not cond:
        raise ConfigError(f"invalid config: {key}={value!r}; allowed: {allowed}")


def resolve_presets(cfg: TrainConfig) -> TrainConfig:
    """Fill ``None`` model/planner fields from the ``model_size`` preset (in place) and return ``cfg``."""
    size = str(cfg.model_size)
    require(size in MODEL_SIZES, "model_size", cfg.model_size, "|".join(MODEL_SIZES))
    cfg.model_size = size
    for key, value in MODEL_SIZES[size].items():
        if getattr(cfg.model, key) is None:
            setattr(cfg.model, key, value)
    planner_defaults = {"iterations": 6, "num_samples": 512, "num_elites": 64, "num_pi_trajs": 24}
    planner_defaults.update(PLANNER_PRESETS.get(size, {}))
    for key, value in planner_defaults.items():
        if getattr(cfg.planner, key) is None:
            setattr(cfg.planner, key, value)
    return cfg


#: The evaluation env is seeded with ``seed + EVAL_SEED_OFFSET`` (``tdmpc.trainer``); numpy seeds are < 2**32.
EVAL_SEED_OFFSET = 10_000
MAX_SEED = 2**32 - 1 - EVAL_SEED_OFFSET


def _require_finite(cfg: TrainConfig) -> None:
    """Every float setting is a finite number (an infinite lr, temperature or value bound passes the
    comparisons below and fails later with a traceback)."""
    import math

    for prefix, section in (("", cfg), ("model.", cfg.model), ("planner.", cfg.planner), ("optim.", cfg.optim)):
        for f in dataclasses.fields(section):
            v = getattr(section, f.name)
            if isinstance(v, float):
                require(math.isfinite(v), prefix + f.name, v, "a finite number")


def _require_device(key: str, value: Any) -> None:
    """``value`` is auto|cpu|cuda|cuda:N, and CUDA is available if it names CUDA."""
    dev = str(value)
    require(dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit()), key, value,
            "auto|cpu|cuda|cuda:N")
    if dev.startswith("cuda"):
        import torch

        require(torch.cuda.is_available(), key, value, "cpu or auto (CUDA is not available here)")


def validate(cfg: TrainConfig) -> TrainConfig:
    """Resolve presets and check every key; raises :class:`ConfigError` on the first bad value."""
    from tdmpc.envs import TASKS
    from tdmpc.envs.dm_control import UNSUPPORTED

    require(cfg.task not in UNSUPPORTED, "task", cfg.task, f"a served task ({UNSUPPORTED.get(cfg.task)})")
    if cfg.task not in TASKS:
        import difflib

        close = difflib.get_close_matches(str(cfg.task), TASKS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"invalid config: task={cfg.task!r}{hint}; allowed: {', '.join(TASKS)}")
    resolve_presets(cfg)
    _require_finite(cfg)
    require(isinstance(cfg.seed, int) and 0 <= cfg.seed <= MAX_SEED, "seed", cfg.seed,
            f"an integer 0 .. {MAX_SEED} (the evaluation env is seeded with seed + {EVAL_SEED_OFFSET}, below 2**32)")
    require(cfg.steps > 0, "steps", cfg.steps, "an integer > 0")
    _require_device("device", cfg.device)
    _require_device("buffer_device", cfg.buffer_device)
    require(str(cfg.compile).lower() in ("auto", "true", "false"), "compile", cfg.compile, "auto|true|false")
    require(cfg.num_threads >= 0, "num_threads", cfg.num_threads, "an integer >= 0 (0 = torch default)")
    require(cfg.action_repeat is None or cfg.action_repeat >= 1, "action_repeat", cfg.action_repeat, "null or >= 1")
    require(cfg.seed_steps is None or cfg.seed_steps >= 0, "seed_steps", cfg.seed_steps, "null or >= 0")
    require(cfg.updates_per_step > 0, "updates_per_step", cfg.updates_per_step, "a number > 0")
    require(cfg.buffer_size >= 1000, "buffer_size", cfg.buffer_size, "an integer >= 1000")
    require(cfg.eval_freq > 0, "eval_freq", cfg.eval_freq, "an integer > 0 (env steps)")
    require(cfg.eval_episodes >= 1, "eval_episodes", cfg.eval_episodes, "an integer >= 1")
    require(cfg.checkpoint_freq > 0, "checkpoint_freq", cfg.checkpoint_freq, "an integer > 0 (env steps)")
    _validate_model(cfg.model)
    _validate_planner(cfg.planner)
    _validate_optim(cfg.optim)
    validate_logger(cfg.logger)
    return cfg


def _validate_model(m: ModelConfig) -> None:
    for key in ("enc_dim", "mlp_dim", "latent_dim", "num_enc_layers", "num_q", "simnorm_dim"):
        require(getattr(m, key) >= 1, f"model.{key}", getattr(m, key), "an integer >= 1")
    require(m.num_q >= 2, "model.num_q", m.num_q, "an integer >= 2 (the TD target takes the min of two)")
    require(
        m.latent_dim % m.simnorm_dim == 0, "model.latent_dim", m.latent_dim,
        f"a multiple of model.simnorm_dim={m.simnorm_dim}",
    )
    require(m.num_bins >= 2, "model.num_bins", m.num_bins, "an integer >= 2")
    require(m.vmin < m.vmax, "model.vmin", m.vmin, f"a number < model.vmax={m.vmax}")
    require(0 <= m.dropout < 1, "model.dropout", m.dropout, "0 <= dropout < 1")
    require(m.log_std_min < m.log_std_max, "model.log_std_min", m.log_std_min, "< model.log_std_max")


def _validate_planner(p: PlannerConfig) -> None:
    require(p.iterations >= 1, "planner.iterations", p.iterations, "an integer >= 1")
    require(p.horizon >= 1, "planner.horizon", p.horizon, "an integer >= 1")
    require(p.num_samples >= 2, "planner.num_samples", p.num_samples, "an integer >= 2")
    require(p.num_pi_trajs >= 0, "planner.num_pi_trajs", p.num_pi_trajs, "an integer >= 0")
    require(
        1 <= p.num_elites <= p.num_samples + p.num_pi_trajs, "planner.num_elites", p.num_elites,
        f"1 .. num_samples + num_pi_trajs = {p.num_samples + p.num_pi_trajs}",
    )
    require(p.max_std > 0, "planner.max_std", p.max_std, "a number > 0")
    require(0 < p.min_std <= p.max_std, "planner.min_std", p.min_std, f"0 < min_std <= max_std={p.max_std}")
    require(p.temperature > 0, "planner.temperature", p.temperature, "a number > 0")


def _validate_optim(o: OptimConfig) -> None:
    require(o.batch_size >= 1, "optim.batch_size", o.batch_size, "an integer >= 1")
    for key in ("lr", "enc_lr_scale", "grad_clip_norm", "consistency_coef", "discount_denom"):
        require(getattr(o, key) > 0, f"optim.{key}", getattr(o, key), "a number > 0")
    for key in ("reward_coef", "value_coef", "entropy_coef"):
        require(getattr(o, key) >= 0, f"optim.{key}", getattr(o, key), "a number >= 0")
    require(0 < o.rho <= 1, "optim.rho", o.rho, "0 < rho <= 1")
    require(0 < o.tau <= 1, "optim.tau", o.tau, "0 < tau <= 1")
    require(0 < o.discount_max < 1, "optim.discount_max", o.discount_max, "0 < discount_max < 1")
    require(
        0 < o.discount_min <= o.discount_max, "optim.discount_min", o.discount_min,
        f"0 < discount_min <= discount_max={o.discount_max}",
    )


def validate_logger(lg: LoggerConfig) -> None:
    """Check the ``logger`` section (also of jobs other than training, e.g. a prune job, before they start)."""
    from tdmpc.wandb_mode import WANDB_MODES

    require(lg.wandb.mode in WANDB_MODES, "logger.wandb.mode", lg.wandb.mode, "|".join(WANDB_MODES))
    if lg.wandb.mode == "online":  # fail now, not after the run dir is written
        from tdmpc.wandb_mode import wandb_online_possible

        require(wandb_online_possible(), "logger.wandb.mode", "online",
                 "offline|disabled|auto (online needs wandb installed and an API key: WANDB_API_KEY or `wandb login`)")
    require(lg.console_every >= 1, "logger.console_every", lg.console_every, "an integer >= 1")


def to_dataclass(cfg: Any) -> TrainConfig:
    """An OmegaConf DictConfig (structured or not) or dict -> a plain :class:`TrainConfig`."""
    from omegaconf import OmegaConf

    if isinstance(cfg, TrainConfig):
        return cfg
    if not isinstance(cfg, dict):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    return from_dict(TrainConfig, cfg)


def from_dict(cls: type, data: dict) -> Any:
    """Build a (nested) dataclass from a plain dict through its OmegaConf structured config (values are
    converted to the field types, as Hydra does); an unknown key or a value of the wrong type raises a
    one-line :class:`ConfigError`."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, ValidationError

    schema = OmegaConf.structured(cls)
    try:
        return OmegaConf.to_object(OmegaConf.merge(schema, data))
    except ConfigKeyError as err:
        parent = str(err.full_key).rpartition(".")[0]
        node = OmegaConf.select(schema, parent) if parent else schema
        raise ConfigError(f"invalid config: unknown key {err.full_key!r}; allowed: {', '.join(node)}") from None
    except ValidationError as err:
        path = str(err.full_key).split(".")
        value, owner = data, cls
        for name in path:
            value = value.get(name) if isinstance(value, dict) else None
            field_type = {f.name: f.type for f in dataclasses.fields(owner)}.get(name, "?")
            owner = _DATACLASSES.get(str(field_type), owner)
        raise ConfigError(f"invalid config: {err.full_key}={value!r}; allowed: a value of type {field_type}") from None


_DATACLASSES = {c.__name__: c for c in (ModelConfig, PlannerConfig, OptimConfig, WandbConfig, LoggerConfig)}


MAX_DIRNAME = 100  # longest sweep sub-directory name kept verbatim (file systems allow 255 bytes)


def safe_dirname(name: str) -> str:
    """A sweep sub-directory name from Hydra's ``override_dirname``: ``/`` replaced, and when longer than
    :data:`MAX_DIRNAME`, cut and suffixed with a hash of the whole name (deterministic, so re-launching
    the same sweep finds the same directories)."""
    import hashlib

    name = str(name).replace("/", "-") or "default"
    if len(name) <= MAX_DIRNAME:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return f"{name[: MAX_DIRNAME - 11]}_{digest}"


def register_configs() -> None:
    """Register the structured configs with Hydra's ConfigStore (schema for ``conf/train.yaml``) and the
    ``${safe_dirname:...}`` resolver used for sweep sub-directories."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    if not OmegaConf.has_resolver("safe_dirname"):
        OmegaConf.register_new_resolver("safe_dirname", safe_dirname)
