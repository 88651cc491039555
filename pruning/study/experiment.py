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
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pruning.config import BUDGETS, require
from pruning.metrics import MAIN_JOB_METRICS, metric_names

ROOT = Path(__file__).resolve().parents[2]
LAUNCHERS = ("basic", "local", "slurm")  # presets in conf/hydra/launcher/ (basic: Hydra's own)


@dataclass
class ExperimentConfig:
    """The whole pipeline (``conf/experiment.yaml``; presets in ``conf/experiment/``)."""

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
    require(bool(cfg.tasks), "tasks", cfg.tasks, "a non-empty list of dm_control task names")
    require(bool(cfg.seeds), "seeds", cfg.seeds, "a non-empty list of integers")
    require(cfg.train_steps > 0, "train_steps", cfg.train_steps, "an integer > 0")
    bad = [m for m in cfg.metrics if m not in metric_names()]
    require(bool(cfg.metrics) and not bad, "metrics", cfg.metrics, f"a non-empty list of {'|'.join(metric_names())}")
    require(bool(cfg.ratios) and all(0 < r < 1 for r in cfg.ratios), "ratios", cfg.ratios, "numbers in (0, 1)")
    require(cfg.budget in BUDGETS, "budget", cfg.budget, "|".join(BUDGETS))
    require(cfg.budget == "channels" or cfg.scope == "global", "scope", cfg.scope,
            "global (budget=flops ranks all groups together; use budget=channels for other scopes)")
    require(cfg.launcher in LAUNCHERS, "launcher", cfg.launcher, "|".join(LAUNCHERS))
    require(cfg.workers >= 1, "workers", cfg.workers, "an integer >= 1")
    require(cfg.finetune_steps >= 0, "finetune_steps", cfg.finetune_steps, "an integer >= 0")
    require(cfg.eval_episodes >= 1, "eval_episodes", cfg.eval_episodes, "an integer >= 1")
    from tdmpc.envs import TASKS

    for task in cfg.tasks:
        require(task in TASKS, "tasks", task, "dm_control tasks, e.g. cartpole-swingup (see tdmpc/envs)")
    return cfg


def _csv(values: list[Any]) -> str:
    return ",".join(str(v) for v in values)


def _run(cmd: list[str], log: Path) -> None:
    """Run one stage, streaming its output to the terminal and to ``log``; raise on failure."""
    print("+ " + shlex.join(cmd), flush=True)
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "disable"), "HYDRA_FULL_ERROR": "0"}
    with open(log, "a") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            f.write(line)
        rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"stage failed with exit status {rc}: {shlex.join(cmd)} (log: {log})")


def _launcher_args(cfg: ExperimentConfig) -> list[str]:
    if cfg.launcher == "basic":
        return []
    return [f"hydra/launcher={cfg.launcher}"]


def checkpoints(train_dir: Path) -> list[Path]:
    return sorted(train_dir.rglob("checkpoint.pt"))


def run_experiment(cfg: ExperimentConfig) -> Path:
    """Run the pipeline; returns the output dir (with ``report/``)."""
    validate_experiment(cfg)
    out = Path(cfg.out_dir) if cfg.out_dir else ROOT / "runs" / "experiment" / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    log = out / "experiment.log"
    t0 = time.time()
    py = sys.executable
    common = [f"logger.wandb.mode={cfg.wandb_mode}", "logger.progress=false"]

    # 1. Dense training with tracking of every metric.
    train_dir = out / "train"
    _run([py, str(ROOT / "scripts" / "train.py"), "-m", f"task={_csv(cfg.tasks)}", f"seed={_csv(cfg.seeds)}",
          f"model_size={cfg.model_size}", f"steps={cfg.train_steps}", f"eval_freq={cfg.train_steps}",
          f"eval_episodes={cfg.train_eval_episodes}", f"hydra.sweep.dir={train_dir}",
          "hydra.sweep.subdir=${task}/seed${seed}",
          f"logger.wandb.group={cfg.name}", f"num_threads={cfg.train_threads}", *common, *_launcher_args(cfg),
          *cfg.train_overrides], log)
    ckpts = checkpoints(train_dir)
    if len(ckpts) < len(cfg.tasks) * len(cfg.seeds):
        raise RuntimeError(f"training wrote {len(ckpts)} checkpoints, expected {len(cfg.tasks) * len(cfg.seeds)}")
    t_train = time.time() - t0

    # 2. Prune sweeps: the dense reference, then every metric x ratio; basic launcher -> `workers` processes.
    prune_dir = out / "prune"
    quoted = ",".join(f"'{p}'" for p in ckpts)  # Hydra override grammar: paths may hold = , etc.
    base = [py, str(ROOT / "scripts" / "prune.py"), "-m", f"checkpoint={quoted}",
            f"seed={_csv(cfg.prune_seeds)}", f"scope={cfg.scope}", f"budget={cfg.budget}",
            f"finetune_steps={cfg.finetune_steps}",
            f"eval_episodes={cfg.eval_episodes}", f"hydra.sweep.dir={prune_dir}", f"logger.wandb.group={cfg.name}",
            f"num_threads={cfg.num_threads}", *common, *_launcher_args(cfg), *cfg.prune_overrides]
    n = cfg.workers if cfg.launcher == "basic" else 1
    chunks = [cfg.metrics[i::n] for i in range(n) if cfg.metrics[i::n]]
    sweeps = [[*base, "metric=l1", "ratio=0"]] + [[*base, f"metric={_csv(c)}", f"ratio={_csv(cfg.ratios)}"]
                                                   for c in chunks]
    if n == 1:
        for cmd in sweeps:
            _run(cmd, log)
    else:
        # Hand-rolled because Hydra's basic launcher is sequential and the local launcher starts every job at
        # once (18+ processes on 2 cores); N concurrent basic sweeps into one sweep dir never collide, as
        # their run dirs differ by their overrides.
        _run_parallel(sweeps, log, n)
    t_prune = time.time() - t0 - t_train

    # 3. Report.
    from pruning.study.report import print_summary, write_report

    report_dir = out / "report"
    summary = write_report([out], report_dir)
    log_report(report_dir, cfg.wandb_mode, group=cfg.name, config={"experiment": dataclasses.asdict(cfg)})
    print_summary(summary, title=f"{cfg.name}: return vs FLOPs vs latency ({', '.join(cfg.tasks)})")
    print(f"\ntrain {t_train / 60:.1f} min, prune {t_prune / 60:.1f} min, total {(time.time() - t0) / 60:.1f} min; "
          f"report: {report_dir}", flush=True)
    return out


def _run_parallel(cmds: list[list[str]], log: Path, workers: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    logs = [log.with_name(f"{log.stem}.worker{i}.log") for i in range(len(cmds))]
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(_run, cmd, lg) for cmd, lg in zip(cmds, logs)]
        errors = [f.exception() for f in futures]
    errors = [e for e in errors if e is not None]
    if errors:
        raise RuntimeError("; ".join(str(e) for e in errors))


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


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="experiment_schema", node=ExperimentConfig)
