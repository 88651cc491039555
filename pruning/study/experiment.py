"""The main job: train with importance tracking -> prune by every metric -> fine-tune -> evaluate -> report.

    python scripts/experiment.py                     # default task, CPU preset, ~20 min on 2 cores
    python scripts/experiment.py experiment=paper    # full protocol (model_size=5, 4 tasks, 3 seeds)

Each stage is the project's own command line, run as a Hydra multirun in a subprocess, so that what the
main job does is exactly what a user's sweep does and every launcher works (``launcher=basic`` runs jobs
one after the other in one process, ``local`` / ``slurm`` hand them to submitit):

1. ``scripts/train.py -m task=... seed=...`` into ``<out_dir>/train`` (tracking every metric);
2. ``scripts/prune.py -m checkpoint=... metric=l1 ratio=0`` (the dense reference through the same path)
   and ``scripts/prune.py -m checkpoint=... metric=... ratio=...`` into ``<out_dir>/prune``;
3. :func:`pruning.study.report.write_report` over ``<out_dir>`` -> results.csv, summary.md, plots, and the
   summary table printed to the terminal.

Re-running the same ``name`` resumes: finished training runs are not repeated (their checkpoints are
complete) and prune jobs with a ``result.json`` are skipped.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pruning.config import BUDGETS, require
from pruning.metrics import MAIN_JOB_METRICS, metric_names

ROOT = Path(__file__).resolve().parents[2]
LAUNCHERS = ("basic", "local", "slurm")  # presets in conf/hydra/launcher/ (basic: Hydra's own)
WANDB_MODES = ("auto", "online", "offline", "disabled")


@dataclass
class ExperimentConfig:
    """The whole pipeline (``conf/experiment.yaml``; presets: :data:`PRESETS`)."""

    name: str = "default"  # output folder name under runs/experiment/
    out_dir: str | None = None  # None: runs/experiment/<name>
    tasks: list[str] = field(default_factory=lambda: ["cartpole-swingup"])
    seeds: list[int] = field(default_factory=lambda: [1])  # training seeds
    model_size: str = "cpu"
    train_steps: int = 30_000  # env steps of dense training
    train_eval_episodes: int = 5
    metrics: list[str] = field(default_factory=lambda: list(MAIN_JOB_METRICS))
    ratios: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])  # fractions of the budget removed
    budget: str = "flops"  # flops: ratio of planned-action FLOPs removed | channels: ratio of channels
    scope: str = "global"
    prune_seeds: list[int] = field(default_factory=lambda: [1])  # fine-tuning / evaluation seeds
    finetune_steps: int = 500
    eval_episodes: int = 3
    launcher: str = "basic"  # basic | local | slurm (conf/hydra/launcher/{local,slurm}.yaml)
    workers: int = 2  # basic launcher: prune sweeps run side by side in this many processes
    train_threads: int = 2  # torch threads of a training job
    num_threads: int = 1  # torch threads of a prune job (workers run side by side)
    wandb_mode: str = "auto"  # auto | online | offline | disabled
    train_overrides: list[str] = field(default_factory=list)  # extra key=value for scripts/train.py
    prune_overrides: list[str] = field(default_factory=list)  # extra key=value for scripts/prune.py


def validate_experiment(cfg: ExperimentConfig) -> ExperimentConfig:
    """Check every key before anything runs (one line naming key, value, allowed); the prune settings
    also through :func:`pruning.study.prune_job.validate_prune_job`, so a bad one fails now, not after
    the training stage."""
    from pruning.prune import SCOPES
    from pruning.study.prune_job import PruneJobConfig, validate_prune_job
    from tdmpc.config import MODEL_SIZES
    from tdmpc.envs import TASKS

    require(bool(cfg.tasks), "tasks", cfg.tasks, "a non-empty list of dm_control task names")
    for task in cfg.tasks:
        require(task in TASKS, "tasks", task, "dm_control tasks, e.g. cartpole-swingup (see tdmpc/envs)")
    from tdmpc.config import MAX_SEED

    for key in ("seeds", "prune_seeds"):
        seeds = getattr(cfg, key)
        require(bool(seeds) and all(_is_int(s) and 0 <= s <= MAX_SEED for s in seeds), key, seeds,
                f"a non-empty list of integers 0 .. {MAX_SEED}")
    for key in ("tasks", "seeds", "prune_seeds", "metrics", "ratios"):  # a repeat would run the same jobs twice
        values = list(getattr(cfg, key))
        require(len(set(values)) == len(values), key, values, "a list without repeats")
    require(cfg.model_size in MODEL_SIZES, "model_size", cfg.model_size, "|".join(MODEL_SIZES))
    require(_is_int(cfg.train_steps) and cfg.train_steps > 0, "train_steps", cfg.train_steps, "an integer > 0")
    require(_is_int(cfg.train_eval_episodes) and cfg.train_eval_episodes >= 1, "train_eval_episodes",
            cfg.train_eval_episodes, "an integer >= 1")
    bad = [m for m in cfg.metrics if m not in metric_names()]
    require(bool(cfg.metrics) and not bad, "metrics", cfg.metrics, f"a non-empty list of {'|'.join(metric_names())}")
    require(bool(cfg.ratios) and all(0 < r < 1 for r in cfg.ratios), "ratios", cfg.ratios, "numbers in (0, 1)")
    require(cfg.budget in BUDGETS, "budget", cfg.budget, "|".join(BUDGETS))
    require(cfg.scope in SCOPES, "scope", cfg.scope, "|".join(SCOPES))
    require(cfg.launcher in LAUNCHERS, "launcher", cfg.launcher, "|".join(LAUNCHERS))
    require(_is_int(cfg.workers) and cfg.workers >= 1, "workers", cfg.workers, "an integer >= 1")
    require(_is_int(cfg.train_threads) and cfg.train_threads >= 0, "train_threads", cfg.train_threads,
            "an integer >= 0 (0 = torch default)")
    require(_is_int(cfg.num_threads) and cfg.num_threads >= 0, "num_threads", cfg.num_threads,
            "an integer >= 0 (0 = torch default)")
    require(cfg.wandb_mode in WANDB_MODES, "wandb_mode", cfg.wandb_mode, "|".join(WANDB_MODES))
    for metric in cfg.metrics:  # what each prune job will check, with the experiment's key names
        for ratio in cfg.ratios:
            validate_prune_job(PruneJobConfig(
                checkpoint="train/checkpoint.pt", metric=metric, ratio=ratio, budget=cfg.budget, scope=cfg.scope,
                finetune_steps=cfg.finetune_steps, eval_episodes=cfg.eval_episodes, seed=cfg.prune_seeds[0],
                num_threads=cfg.num_threads))
    return cfg


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _csv(values: list[Any]) -> str:
    return ",".join(str(v) for v in values)


def _launcher_args(cfg: ExperimentConfig) -> list[str]:
    if cfg.launcher == "basic":
        return []
    return [f"hydra/launcher={cfg.launcher}"]


def checkpoints(train_dir: Path, cfg: ExperimentConfig) -> list[Path]:
    """The checkpoints of the training runs ``cfg`` names (``train/<task>/seed<seed>``, as the training stage
    writes them); runs of tasks or seeds it no longer names, and runs moved aside (``*.old-*``), are not
    pruned."""
    return [train_dir / task / f"seed{seed}" / "checkpoint.pt" for task in cfg.tasks for seed in cfg.seeds]


def output_dir(cfg: ExperimentConfig) -> Path:
    return Path(cfg.out_dir) if cfg.out_dir else ROOT / "runs" / "experiment" / cfg.name


def run_experiment(cfg: ExperimentConfig) -> Path:
    """Run the pipeline; returns the output dir (with ``report/``).

    The output dir is claimed first (``tdmpc.run_dir``, kind ``experiment``): a dir of a training or
    prune job is refused, and a second live main job in the same dir too. Raises
    :class:`~pruning.study.stages.StageFailed` when a stage fails and
    :class:`~pruning.study.stages.StageInterrupted` on SIGINT/SIGTERM (after every stage stopped).
    """
    from pruning.study.stages import stop_signals
    from tdmpc.run_dir import claim, identity

    validate_experiment(cfg)
    out = output_dir(cfg)
    # One identity for every main job: what a re-run may change (more seeds, steps, metrics) is reused
    # or superseded job by job in the stages (their own run dirs), so the claim is about ownership.
    with claim(out, "experiment", identity({"kind": "experiment"}), hint="use another name= or out_dir="), \
            stop_signals():
        return _run_claimed(cfg, out)


def _run_claimed(cfg: ExperimentConfig, out: Path) -> Path:
    from pruning.study.stages import StageInterrupted, open_log, say

    log_path = out / "experiment.log"
    t0 = time.time()
    with open_log(log_path) as log:
        try:
            ckpts = _train_stage(cfg, out, log_path, log)
            t_train = time.time() - t0
            _prune_stage(cfg, out, ckpts, log_path, log)
        except StageInterrupted as err:  # into the log only: the command prints it once, on stderr
            log.write(f"[experiment] {err}\n")
            log.flush()
            raise
        t_prune = time.time() - t0 - t_train
        report_dir = _report_stage(cfg, out, log)
        say(f"\ntrain {t_train / 60:.1f} min, prune {t_prune / 60:.1f} min, total {(time.time() - t0) / 60:.1f} "
            f"min; report: {report_dir}", log)
    return out


def _common(cfg: ExperimentConfig) -> list[str]:
    return [f"logger.wandb.mode={cfg.wandb_mode}", "logger.progress=false", f"logger.wandb.group={cfg.name}",
            *_launcher_args(cfg)]


def _train_stage(cfg: ExperimentConfig, out: Path, log_path: Path, log: Any) -> list[Path]:
    """1. Dense training with tracking of every metric; returns the checkpoints."""
    from pruning.study.stages import run_stages, say, stage_env

    n_train = len(cfg.tasks) * len(cfg.seeds)
    say(f"[experiment] stage 1/3 training: {n_train} run(s) of {cfg.train_steps} env steps "
        f"({', '.join(cfg.tasks)}; seeds {_csv(cfg.seeds)}); log: {log_path}", log)
    train_dir = out / "train"
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "-m", f"task={_csv(cfg.tasks)}",
           f"seed={_csv(cfg.seeds)}", f"model_size={cfg.model_size}", f"steps={cfg.train_steps}",
           f"eval_freq={cfg.train_steps}", f"eval_episodes={cfg.train_eval_episodes}", f"hydra.sweep.dir={train_dir}",
           "hydra.sweep.subdir=${task}/seed${seed}", f"num_threads={cfg.train_threads}", *_common(cfg),
           *cfg.train_overrides]
    run_stages([cmd], [log_path], "training stage", env=stage_env(), cwd=ROOT)
    ckpts = checkpoints(train_dir, cfg)
    missing = [str(p) for p in ckpts if not p.is_file()]
    if missing:
        raise RuntimeError(f"training wrote {n_train - len(missing)} of {n_train} checkpoints; missing: "
                           f"{', '.join(missing)}")
    return ckpts


def _prune_stage(cfg: ExperimentConfig, out: Path, ckpts: list[Path], log_path: Path, log: Any) -> None:
    """2. Prune sweeps: the dense reference, then every metric x ratio; basic launcher -> ``workers``
    processes side by side."""
    from pruning.study.stages import JobCounter, run_stages, say, stage_env

    quoted = ",".join(f"'{p}'" for p in ckpts)  # Hydra override grammar: paths may hold = , etc.
    base = [sys.executable, str(ROOT / "scripts" / "prune.py"), "-m", f"checkpoint={quoted}",
            f"seed={_csv(cfg.prune_seeds)}", f"scope={cfg.scope}", f"budget={cfg.budget}",
            f"finetune_steps={cfg.finetune_steps}", f"eval_episodes={cfg.eval_episodes}",
            f"hydra.sweep.dir={out / 'prune'}", f"num_threads={cfg.num_threads}", *_common(cfg), *cfg.prune_overrides]
    n = cfg.workers if cfg.launcher == "basic" else 1
    chunks = [cfg.metrics[i::n] for i in range(n) if cfg.metrics[i::n]]
    sweeps = [[*base, "metric=l1", "ratio=0"]] + [[*base, f"metric={_csv(c)}", f"ratio={_csv(cfg.ratios)}"]
                                                   for c in chunks]
    n_jobs = len(ckpts) * len(cfg.prune_seeds) * (1 + len(cfg.metrics) * len(cfg.ratios))
    say(f"[experiment] stage 2/3 pruning: {n_jobs} jobs (dense + {len(cfg.metrics)} metrics x "
        f"{len(cfg.ratios)} {cfg.budget} budgets, {len(ckpts)} checkpoint(s) x {len(cfg.prune_seeds)} "
        f"fine-tuning seed(s)), {n} at a time", log)
    counter, env = JobCounter("pruning", n_jobs, log), stage_env()
    if n == 1:
        for cmd in sweeps:
            run_stages([cmd], [log_path], "pruning stage", counter, env=env, cwd=ROOT)
        return
    # Hand-rolled because Hydra's basic launcher is sequential and submitit_local starts every job at
    # once (18+ processes on 2 cores): the dense reference first, then N concurrent basic sweeps into one
    # sweep dir (their run dirs differ by their overrides), one log each.
    run_stages(sweeps[:1], [log_path], "pruning stage", counter, env=env, cwd=ROOT)
    logs = [log_path.with_name(f"{log_path.stem}.worker{i}.log") for i in range(len(sweeps) - 1)]
    run_stages(sweeps[1:], logs, "pruning stage", counter, env=env, cwd=ROOT)


def _report_stage(cfg: ExperimentConfig, out: Path, log: Any) -> Path:
    """3. The report (results.csv, summary.md, plots, W&B report run) and the summary table."""
    from pruning.study.report import print_summary, write_report
    from pruning.study.stages import say

    say("[experiment] stage 3/3 report", log)
    report_dir = out / "report"
    summary = write_report([out], report_dir)
    log_report(report_dir, cfg.wandb_mode, group=cfg.name, config={"experiment": dataclasses.asdict(cfg)})
    print_summary(summary, title=f"{cfg.name}: return vs FLOPs vs latency ({', '.join(cfg.tasks)})")
    return report_dir


def log_report(report_dir: Path, mode: str, group: str, config: dict, project: str = "ca-prune") -> str | None:
    """Log a written report to W&B as one run (``job_type=report``, ``group`` = the sweep's name):
    ``results`` and ``summary`` as ``wandb.Table`` s and every plot of the report as an image.

    The run lives in ``report_dir/wandb`` (offline by default without an API key; ``wandb sync`` later).
    Returns the W&B run id, or ``None`` when W&B is disabled or not installed.
    """
    import pandas as pd

    from tdmpc.config import WandbConfig
    from tdmpc.logger import Logger

    wcfg = WandbConfig(mode=mode, project=project, group=group, job_type="report")
    with Logger(report_dir, config, wcfg, run_name=f"{group}-report", csv_files={}) as logger:
        run = logger.wandb_run
        if run is None:
            return None
        for name in ("results", "summary"):
            path = report_dir / f"{name}.csv"
            if path.is_file():
                logger.log_table(f"report/{name}", pd.read_csv(path))
        for png in sorted(report_dir.glob("*.png")):
            logger.log_image(f"report/{png.stem}", png)
        return run.id


#: Presets (``experiment=NAME``): only what differs from :class:`ExperimentConfig`'s defaults, in the same
#: form as the model presets (``tdmpc.config.MODEL_SIZES``). ``default`` is the README's main job: a short,
#: real experiment for a 2-core CPU (about 20 minutes). ``paper`` is the full protocol, meant for a GPU
#: cluster (``launcher=slurm``, see scripts/slurm/README.md): TD-MPC2's 5M model, 4 tasks x 3 seeds trained
#: for 500k env steps, the same metrics and FLOPs budgets, 3 fine-tuning seeds of 50k env steps each.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": {
        "name": "paper", "tasks": ["cartpole-swingup", "cup-catch", "reacher-easy", "finger-spin"],
        "seeds": [1, 2, 3], "model_size": "5", "train_steps": 500_000, "train_eval_episodes": 10,
        "prune_seeds": [1, 2, 3], "finetune_steps": 50_000, "eval_episodes": 10, "launcher": "slurm",
        "workers": 1, "train_threads": 0, "num_threads": 0, "train_overrides": ["device=auto"],
        "prune_overrides": ["device=auto"],
    },
}


def register_configs() -> None:
    """The schema of ``conf/experiment.yaml`` and the :data:`PRESETS` as the ``experiment`` group."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="experiment_schema", node=ExperimentConfig)
    for name, preset in PRESETS.items():
        cs.store(group="experiment", name=name, node=preset, package="_global_")
