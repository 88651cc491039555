"""Run logging: CSV files always, Weights & Biases (W&B) when enabled.

Every stream (``train``, ``eval``, ...) is a CSV file ``run_dir/<stream>.csv`` with a fixed header; each row
is flushed as soon as it is logged, so a crash loses nothing. The same rows go to W&B as ``<stream>/<key>``
with ``env_step`` as the x-axis of every chart.

W&B mode ``auto`` (the default) picks ``disabled`` when wandb is not installed, ``online`` when an API key is
configured (``WANDB_API_KEY`` or a ``.netrc`` entry written by ``wandb login``) and ``offline`` otherwise;
offline runs land in ``<dir>/wandb/offline-run-*`` and can be uploaded later with ``wandb sync``. The nested
run config is sent flattened (``optim.lr``, ``pruning.metric``) so the W&B UI can group and filter runs by any
key; ``task``, ``seed`` and ``model_size`` also become tags.

wandb is imported lazily: with mode ``disabled`` it is never imported. The mode is resolved in
:mod:`tdmpc.wandb_mode`, the CSV files' atomic writes and crash repairs are in :mod:`tdmpc.csv_files` (both
re-exported here).
"""

from __future__ import annotations

import csv
import json
import secrets
import string
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tdmpc.config import WandbConfig  # the W&B settings (logger.wandb); re-exported here
from tdmpc.csv_files import atomic_write_text, drop_partial_last_line, drop_rows_after, read_header
from tdmpc.wandb_mode import (
    WANDB_HOSTS,
    WANDB_MODES,
    resolve_wandb_mode,
    wandb_api_key_configured,
    wandb_installed,
)

__all__ = ["EVAL_COLUMNS", "TRAIN_COLUMNS", "WANDB_HOSTS", "WANDB_MODES", "Logger", "WandbConfig", "atomic_write_text",
           "flatten", "resolve_wandb_mode", "wandb_api_key_configured", "wandb_installed"]

TRAIN_COLUMNS = ["step", "env_step", "episode", "episode_return", "consistency_loss", "reward_loss", "value_loss",
                 "pi_loss", "total_loss", "grad_norm", "pi_scale", "steps_per_s", "elapsed_s"]
EVAL_COLUMNS = ["env_step", "step", "return_mean", "return_std", "episodes", "elapsed_s"]

TAG_KEYS = ("task", "seed", "model_size")  # top-level config keys that also become W&B tags
MAX_TAG_LEN = 64  # W&B rejects longer tags


# --------------------------------------------------------------------------------------------- helpers


def flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    """Flatten a nested mapping with '.'-joined keys: ``{'a': {'b': 1}}`` -> ``{'a.b': 1}``."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _scalar(value: Any) -> Any:
    """0-d tensors and numpy scalars -> Python numbers (so CSV cells read ``0.5``, not ``tensor(0.5)``)."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        try:
            return value.item()
        except (TypeError, ValueError, RuntimeError):
            return value
    return value


def _json_default(value: Any) -> Any:
    value = _scalar(value)
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


def _parse_cell(value: str) -> Any:
    """A CSV cell as the number it was logged as (int, else float), else the string."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _new_run_id() -> str:
    """An 8-character W&B-style run id (lowercase letters and digits)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


# --------------------------------------------------------------------------------------------- Logger


class Logger:
    """Appends rows to ``run_dir/<stream>.csv`` (flushed per row) and mirrors them to W&B.

    Args:
        run_dir: folder of the run; holds the CSV files, ``summary.json``, ``wandb_id.txt`` and (unless
            ``wandb_cfg.dir`` says otherwise) the ``wandb/`` folder.
        config: the whole run config as a nested plain dict; sent to W&B flattened with '.'-joined keys.
        wandb_cfg: W&B settings.
        run_name: W&B display name (None: W&B picks one).
        resume: continue an interrupted run: append to existing CSV files (no second header) and resume the
            W&B run whose id is in ``run_dir/wandb_id.txt``. Call :meth:`truncate` with the checkpoint's
            env_step to drop rows logged after that checkpoint.
        csv_files: stream name -> CSV columns; default ``{"train": TRAIN_COLUMNS, "eval": EVAL_COLUMNS}``.
            Logging to a stream not listed here creates its CSV with the first row's keys as columns.

    Raises:
        ValueError: invalid ``wandb_cfg.mode``.
        RuntimeError: W&B could not start although ``online``/``offline`` was asked for explicitly (with
            ``auto`` the error is only a warning and the run goes on with CSV files).
    """

    def __init__(self, run_dir: str | Path, config: dict, wandb_cfg: WandbConfig, run_name: str | None = None,
                 resume: bool = False, csv_files: dict[str, list[str]] | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.mode = resolve_wandb_mode(wandb_cfg.mode)
        self.resume = resume
        columns = csv_files if csv_files is not None else {"train": TRAIN_COLUMNS, "eval": EVAL_COLUMNS}
        self.columns: dict[str, list[str]] = {}
        self._files: dict[str, Any] = {}
        self._writers: dict[str, csv.DictWriter] = {}
        self._run = None
        self._finished = False
        self._truncated_after: float | None = None  # set by truncate(); applied to streams opened later too
        self._truncated_updates: float | None = None
        self._backfill = False  # an offline resume's new W&B run: truncate() re-logs the CSV history into it
        for stream, cols in columns.items():
            self._open_csv(stream, list(cols))
        if self.mode != "disabled":
            try:
                self._run = self._start_wandb_or_quarantine(config, wandb_cfg, run_name)
            except Exception as err:
                if wandb_cfg.mode != "auto":
                    self._close_files()
                    raise RuntimeError(
                        f"W&B could not start in mode {self.mode!r} (logger.wandb.mode={wandb_cfg.mode!r}): "
                        f"{type(err).__name__}: {err}. Set logger.wandb.mode=offline to log locally, or "
                        f"logger.wandb.mode=disabled to log CSV files only."
                    ) from err
                warnings.warn(f"W&B disabled, logging to CSV files only (wandb could not start: "
                              f"{type(err).__name__}: {err})", RuntimeWarning, stacklevel=2)
                self.mode = "disabled"

    # ------------------------------------------------------------------------------------------ CSV

    def csv_path(self, stream: str) -> Path:
        """Path of the CSV file of ``stream``."""
        return self.run_dir / f"{stream}.csv"

    def _open_csv(self, stream: str, columns: list[str], append: bool | None = None) -> None:
        """Open ``<stream>.csv``: append on resume (keeping the existing header), else start it anew.

        ``append=True`` reopens a stream this logger wrote (after :meth:`truncate`). An appended file first
        loses the rows after the env_step given to :meth:`truncate`, if it was called.
        """
        path = self.csv_path(stream)
        if append is None:
            append = self.resume and path.is_file() and path.stat().st_size > 0
        if append:
            drop_partial_last_line(path)
            header = read_header(path)
            if not header:
                append = False
            elif header != columns:
                warnings.warn(f"{path}: existing header {header} differs from the columns {columns}; "
                              f"appending with the existing header", RuntimeWarning, stacklevel=3)
                columns = header
        if append and self._truncated_after is not None:
            drop_rows_after(path, columns, self._truncated_after, self._truncated_updates)
        f = open(path, "a" if append else "w", newline="")
        writer = csv.DictWriter(f, fieldnames=columns, restval="", extrasaction="ignore", lineterminator="\n")
        if not append:
            writer.writeheader()
            f.flush()
        self.columns[stream] = columns
        self._files[stream] = f
        self._writers[stream] = writer

    def _close_files(self) -> None:
        for f in self._files.values():
            if not f.closed:
                f.close()

    def log(self, stream: str, row: dict) -> None:
        """Append ``row`` to ``<stream>.csv`` (flushed) and send it to W&B as ``<stream>/<key>``.

        Columns come from the CSV header: missing values are written empty and keys that are not columns
        are left out of the CSV (they still go to W&B). ``None`` values are not sent to W&B.
        """
        if self._finished:
            raise RuntimeError("Logger.log() called after finish()")
        row = {k: _scalar(v) for k, v in row.items()}
        if stream not in self._writers:
            self._open_csv(stream, list(row))
            self._define_stream_metric(stream)
        self._writers[stream].writerow(row)
        self._files[stream].flush()
        if self._run is not None:
            data = {f"{stream}/{k}": v for k, v in row.items() if v is not None}
            if row.get("env_step") is not None:
                data["env_step"] = row["env_step"]  # the shared x-axis (see _define_stream_metric)
            self._run.log(data)

    def truncate(self, after_env_step: int, after_updates: int | None = None) -> None:
        """Keep only rows with ``env_step <= after_env_step`` in every CSV file that has an env_step column (and,
        with ``after_updates``, with ``update <= after_updates`` where a file has an ``update`` column).

        Used for exact resume: rows logged after the last checkpoint of a killed run are dropped, so the
        resumed run does not write them twice. Rows without an env_step value are kept; rows a crash left
        incomplete are dropped. Streams opened now are rewritten at once, and so is every other stream file
        of the run dir (``<stream>.csv`` with an env_step column, e.g. ``prune.csv``, created on its first row):
        a resumed run that never logs to it again must not keep rows of the killed run. Each file is
        rewritten atomically (temporary file + ``os.replace``).
        """
        self._truncated_after = after_env_step
        self._truncated_updates = after_updates
        for stream in list(self._files):
            self._files[stream].close()
            self._open_csv(stream, self.columns[stream], append=True)
        for path in sorted(self.run_dir.glob("*.csv")):
            if path.stem not in self._files and path.stat().st_size > 0:
                drop_partial_last_line(path)
                header = read_header(path)
                if header and "env_step" in header:
                    drop_rows_after(path, header, after_env_step, after_updates)
        if self._backfill and self._run is not None:
            self._backfill = False
            self._replay_csv_rows()

    def _replay_csv_rows(self) -> None:
        """Log every row of the run dir's CSV streams (those with an env_step column, as kept by :meth:`truncate`)
        to the W&B run, as :meth:`log` would have: the new W&B run of an offline resume then holds the whole
        history up to the checkpoint. (The killed part's own offline record can lack rows: wandb's writer
        had not flushed them when the process was killed.) Keys that were sent to W&B but are not CSV columns
        cannot be re-logged."""
        for path in sorted(self.run_dir.glob("*.csv")):
            header = read_header(path) if path.stat().st_size > 0 else None
            if not header or "env_step" not in header:
                continue
            stream = path.stem
            self._define_stream_metric(stream)
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    data = {f"{stream}/{k}": _parse_cell(v) for k, v in row.items() if k and v not in ("", None)}
                    if f"{stream}/env_step" in data:
                        data["env_step"] = data[f"{stream}/env_step"]
                    self._run.log(data)

    # ------------------------------------------------------------------------------------------ W&B

    def _start_wandb_or_quarantine(self, config: dict, wcfg: WandbConfig, run_name: str | None):
        """:meth:`_start_wandb`; when it fails on a resumed run whose ``wandb/`` folder exists (damaged:
        e.g. a file in its place, unreadable run folders), that folder is moved aside to
        ``wandb.corrupt-<UTC time>`` (never deleted) with a one-line warning and W&B starts once more, so a
        damaged side folder never stops a run; the run's rows stay in its CSV files."""
        try:
            return self._start_wandb(config, wcfg, run_name)
        except Exception as err:  # noqa: BLE001 - wandb raises many kinds; retried once, else re-raised
            folder = (Path(wcfg.dir) if wcfg.dir else self.run_dir) / "wandb"
            if not (self.resume and (folder.exists() or folder.is_symlink())):
                raise
            from tdmpc.run_dir import move_aside

            moved = move_aside(folder, ".corrupt-")
            print(f"warning: W&B could not resume from {folder} ({type(err).__name__}: {err}); moved it aside to "
                  f"{moved.name} and started W&B anew", file=sys.stderr, flush=True)
            return self._start_wandb(config, wcfg, run_name)

    def _start_wandb(self, config: dict, wcfg: WandbConfig, run_name: str | None):
        """Start (or, on resume, continue) the W&B run; its id is kept in ``run_dir/wandb_id.txt``.

        Online, a resumed run continues the same W&B run (``resume="allow"``). Offline runs cannot be resumed:
        a second offline run under the same id is a second local folder, and ``wandb sync`` of both makes the
        later replace the earlier's history (wandb issues #3841, #5865). So an offline resume starts a new
        W&B run, tagged ``resumed_from:<previous id>`` and named ``<name> (resumed)``, in the same group:
        each part uploads as its own run and nothing is overwritten. That new run first re-logs every CSV row
        up to the checkpoint (at :meth:`truncate`), so it alone holds the whole history: a part killed with
        SIGKILL may not have flushed its last rows to its own offline record."""
        import wandb

        id_file = self.run_dir / "wandb_id.txt"
        previous = id_file.read_text().strip() if self.resume and id_file.is_file() else ""
        continues = bool(previous) and self.mode != "offline"
        run_id = previous if continues else _new_run_id()
        tags = [str(t) for t in wcfg.tags]
        tags += [f"{key}:{config[key]}" for key in TAG_KEYS if key in config]
        if previous and not continues:
            tags.append(f"resumed_from:{previous}")
            run_name = f"{run_name or previous} (resumed)"
            self._backfill = True
        wandb_dir = Path(wcfg.dir) if wcfg.dir else self.run_dir
        wandb_dir.mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=wcfg.project,
            entity=wcfg.entity,
            group=wcfg.group,
            job_type=wcfg.job_type,
            tags=[t[:MAX_TAG_LEN] for t in tags],
            config=flatten(config),
            name=run_name,
            id=run_id,
            resume="allow" if continues else None,
            mode=self.mode,
            dir=str(wandb_dir),
            reinit="finish_previous",
            # silent: no banner or sync hints; console="off": the training console stays untouched.
            settings=wandb.Settings(silent=True, console="off"),
        )
        atomic_write_text(id_file, run.id + "\n")
        run.define_metric("env_step")
        for stream in self.columns:
            run.define_metric(f"{stream}/*", step_metric="env_step")
        return run

    def _define_stream_metric(self, stream: str) -> None:
        """Make ``env_step`` the x-axis of every ``<stream>/*`` chart.

        env_step is logged as a metric rather than used as W&B's internal ``step``: that step must increase
        strictly between rows, which would silently drop rows sharing an env_step (several prune rows of one
        checkpoint, or train and eval rows interleaved out of order).
        """
        if self._run is not None:
            self._run.define_metric(f"{stream}/*", step_metric="env_step")

    @property
    def wandb_run(self):
        """The W&B ``Run``, or None when W&B is disabled or finished."""
        return self._run

    def summary(self, values: dict) -> None:
        """Record final values: W&B run summary, and ``run_dir/summary.json`` (merged, written atomically)."""
        path = self.run_dir / "summary.json"
        merged = json.loads(path.read_text()) if path.is_file() else {}
        merged.update(values)
        atomic_write_text(path, json.dumps(merged, indent=2, default=_json_default) + "\n")
        if self._run is not None:
            self._run.summary.update({k: _scalar(v) for k, v in values.items()})

    def log_image(self, key: str, path: str | Path) -> None:
        """Log an image file to W&B (no-op when W&B is disabled)."""
        if self._run is not None:
            import wandb

            self._run.log({key: wandb.Image(str(path))})

    def log_table(self, key: str, dataframe) -> None:
        """Log a pandas DataFrame to W&B as a table (no-op when W&B is disabled)."""
        if self._run is not None:
            import wandb

            self._run.log({key: wandb.Table(dataframe=dataframe)})

    # ------------------------------------------------------------------------------------------ closing

    def finish(self, exit_code: int | None = None) -> None:
        """Close the CSV files and finish the W&B run (``exit_code`` != 0 marks it failed). Idempotent."""
        self._finished = True
        self._close_files()
        run, self._run = self._run, None
        if run is not None:
            run.finish(exit_code=exit_code)

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(exit_code=1 if exc_type is not None else None)
