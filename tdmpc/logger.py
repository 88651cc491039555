"""Run logging: CSV files always, Weights & Biases when enabled.

W&B defaults to ``offline`` when it is installed and no API key is configured (``wandb sync`` uploads
later), ``online`` with a key. The nested run config is sent flattened (``optim.lr``) so the W&B UI can
group and filter by any key; ``task``, ``seed`` and ``model_size`` also become tags.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRAIN_COLUMNS = ["step", "env_step", "episode", "episode_return", "consistency_loss", "reward_loss", "value_loss",
                 "pi_loss", "total_loss", "grad_norm", "pi_scale", "steps_per_s", "elapsed_s"]
EVAL_COLUMNS = ["env_step", "step", "return_mean", "return_std", "episodes", "elapsed_s"]
WANDB_MODES = ("auto", "online", "offline", "disabled")


@dataclass
class WandbConfig:
    mode: str = "auto"
    project: str = "ca-prune"
    entity: str | None = None
    group: str | None = None
    job_type: str = "train"
    tags: list[str] = field(default_factory=list)
    dir: str | None = None  # parent of the wandb/ folder; default: the run dir


def resolve_wandb_mode(mode: str) -> str:
    """``auto`` -> ``disabled`` without wandb, ``online`` with an API key, else ``offline``."""
    if mode not in WANDB_MODES:
        raise ValueError(f"invalid config: logger.wandb.mode={mode!r}; allowed: {'|'.join(WANDB_MODES)}")
    if mode != "auto":
        return mode
    try:
        import wandb  # noqa: F401
    except ImportError:
        return "disabled"
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path.home() / ".netrc"
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return "online"
    return "offline"


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}``."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class Logger:
    """Appends rows to ``run_dir/<stream>.csv`` (flushed per row) and mirrors them to W&B."""

    def __init__(self, run_dir: str | Path, config: dict, wandb_cfg: WandbConfig, run_name: str | None = None,
                 resume: bool = False, csv_files: dict[str, list[str]] | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.columns = csv_files or {"train": TRAIN_COLUMNS, "eval": EVAL_COLUMNS}
        self._files: dict[str, Any] = {}
        self._writers: dict[str, csv.DictWriter] = {}
        for stream, cols in self.columns.items():
            path = self.run_dir / f"{stream}.csv"
            append = resume and path.exists() and path.stat().st_size > 0
            f = open(path, "a" if append else "w", newline="")
            w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
            if not append:
                w.writeheader()
                f.flush()
            self._files[stream], self._writers[stream] = f, w
        self._run = None
        self.mode = resolve_wandb_mode(wandb_cfg.mode)
        if self.mode != "disabled":
            try:
                self._run = self._start_wandb(config, wandb_cfg, run_name, resume)
            except Exception as err:
                if wandb_cfg.mode != "auto":
                    raise RuntimeError(f"W&B could not start in mode {self.mode!r}: {err}") from err
                warnings.warn(f"W&B disabled (could not start: {err}); logging to CSV only", stacklevel=2)
                self.mode = "disabled"

    def _start_wandb(self, config: dict, wcfg: WandbConfig, run_name: str | None, resume: bool):
        import wandb

        id_file = self.run_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.exists() else wandb.util.generate_id()
        id_file.write_text(run_id)
        tags = list(wcfg.tags) + [f"{k}:{config[k]}" for k in ("task", "seed", "model_size") if k in config]
        run = wandb.init(
            project=wcfg.project, entity=wcfg.entity, group=wcfg.group, job_type=wcfg.job_type, tags=tags,
            config=flatten(config), name=run_name, id=run_id, resume="allow", mode=self.mode,
            dir=str(wcfg.dir or self.run_dir), settings=wandb.Settings(silent=True, console="off"),
            reinit="finish_previous",
        )
        run.define_metric("env_step")
        for stream in self.columns:
            run.define_metric(f"{stream}/*", step_metric="env_step")
        return run

    @property
    def wandb_run(self):
        return self._run

    def log(self, stream: str, row: dict) -> None:
        self._writers[stream].writerow(row)
        self._files[stream].flush()
        if self._run is not None:
            data = {f"{stream}/{k}": v for k, v in row.items() if isinstance(v, (int, float))}
            if "env_step" in row:
                data["env_step"] = row["env_step"]
            self._run.log(data)

    def truncate(self, after_env_step: int) -> None:
        """Keep only rows with ``env_step <= after_env_step`` in every CSV (exact resume)."""
        for stream, f in self._files.items():
            f.flush()
            path = self.run_dir / f"{stream}.csv"
            with open(path, newline="") as fr:
                rows = list(csv.DictReader(fr))
            kept = [r for r in rows if not r.get("env_step") or float(r["env_step"]) <= after_env_step]
            if len(kept) == len(rows):
                continue
            f.close()
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=self.run_dir)
            with os.fdopen(fd, "w", newline="") as fw:
                w = csv.DictWriter(fw, fieldnames=self.columns[stream], extrasaction="ignore")
                w.writeheader()
                w.writerows(kept)
            os.replace(tmp, path)
            self._files[stream] = open(path, "a", newline="")
            self._writers[stream] = csv.DictWriter(self._files[stream], fieldnames=self.columns[stream],
                                                   extrasaction="ignore")

    def summary(self, values: dict) -> None:
        path = self.run_dir / "summary.json"
        merged = json.loads(path.read_text()) if path.exists() else {}
        merged.update(values)
        atomic_write_text(path, json.dumps(merged, indent=2, default=str))
        if self._run is not None:
            self._run.summary.update(values)

    def log_image(self, key: str, path: str | Path) -> None:
        if self._run is not None:
            import wandb

            self._run.log({key: wandb.Image(str(path))})

    def log_table(self, key: str, dataframe) -> None:
        if self._run is not None:
            import wandb

            self._run.log({key: wandb.Table(dataframe=dataframe)})

    def finish(self) -> None:
        for f in self._files.values():
            if not f.closed:
                f.close()
        if self._run is not None:
            self._run.finish()
            self._run = None

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *exc) -> None:
        self.finish()
