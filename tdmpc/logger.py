"""Run logging: CSV files always, Weights & Biases (W&B) when enabled.

Every stream (``train``, ``eval``, ...) is a CSV file ``run_dir/<stream>.csv`` with a fixed header; each row
is flushed as soon as it is logged, so a crash loses nothing. The same rows go to W&B as ``<stream>/<key>``
with ``env_step`` as the x-axis of every chart.

W&B mode ``auto`` (the default) picks ``disabled`` when wandb is not installed, ``online`` when an API key is
configured (``WANDB_API_KEY`` or a ``.netrc`` entry written by ``wandb login``) and ``offline`` otherwise;
offline runs land in ``<dir>/wandb/offline-run-*`` and can be uploaded later with ``wandb sync``. The nested
run config is sent flattened (``optim.lr``, ``pruning.metric``) so the W&B UI can group and filter runs by any
key; ``task``, ``seed`` and ``model_size`` also become tags.

wandb is imported lazily: with mode ``disabled`` it is never imported.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import netrc
import os
import secrets
import string
import sys
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tdmpc.config import WandbConfig  # the W&B settings (logger.wandb); re-exported here

TRAIN_COLUMNS = ["step", "env_step", "episode", "episode_return", "consistency_loss", "reward_loss", "value_loss",
                 "pi_loss", "total_loss", "grad_norm", "pi_scale", "steps_per_s", "elapsed_s"]
EVAL_COLUMNS = ["env_step", "step", "return_mean", "return_std", "episodes", "elapsed_s"]

WANDB_MODES = ("auto", "online", "offline", "disabled")
# Hosts whose .netrc entry counts as "an API key is configured" (wandb >= 0.31 defaults to the forge host
# and falls back to api.wandb.ai; WANDB_BASE_URL adds a self-hosted server).
WANDB_HOSTS = ("api.wandb.ai", "api.forge.coreweave.com")
TAG_KEYS = ("task", "seed", "model_size")  # top-level config keys that also become W&B tags
MAX_TAG_LEN = 64  # W&B rejects longer tags


# --------------------------------------------------------------------------------------------- W&B mode


def wandb_installed() -> bool:
    """True if the ``wandb`` package can be imported (without importing it)."""
    if "wandb" in sys.modules:
        return sys.modules["wandb"] is not None
    try:
        return importlib.util.find_spec("wandb") is not None
    except (ImportError, ValueError):
        return False


def _netrc_paths() -> list[Path]:
    """The .netrc files wandb reads: ``$NETRC`` if set, else ``~/.netrc`` and ``~/_netrc``."""
    if os.environ.get("NETRC"):
        return [Path(os.environ["NETRC"]).expanduser()]
    home = Path.home()
    return [home / ".netrc", home / "_netrc"]


def wandb_api_key_configured() -> bool:
    """True if ``WANDB_API_KEY`` is set or a .netrc file holds a password for a W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    hosts = set(WANDB_HOSTS)
    if os.environ.get("WANDB_BASE_URL"):
        hosts.add(urlsplit(os.environ["WANDB_BASE_URL"]).netloc)
    for path in _netrc_paths():
        if not path.is_file():
            continue
        try:
            entries = netrc.netrc(str(path))
        except (netrc.NetrcParseError, OSError):
            continue
        for host in hosts:
            creds = entries.authenticators(host)
            if creds and creds[2]:
                return True
    return False


def resolve_wandb_mode(mode: str) -> str:
    """Turn ``logger.wandb.mode`` into the mode actually used: ``online``, ``offline`` or ``disabled``.

    ``auto`` -> ``disabled`` if wandb is not installed; else the ``WANDB_MODE`` environment variable if it
    names one of online/offline/disabled; else ``online`` if an API key is configured (``WANDB_API_KEY`` or
    ``~/.netrc``), else ``offline``. Any other value is returned as is after validation.

    Raises:
        ValueError: ``mode`` is not one of auto/online/offline/disabled.
    """
    if mode not in WANDB_MODES:
        raise ValueError(f"invalid config: logger.wandb.mode={mode!r}; allowed values: {'|'.join(WANDB_MODES)}")
    if mode != "auto":
        return mode
    if not wandb_installed():
        return "disabled"
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if env_mode in ("online", "offline", "disabled"):
        return env_mode
    if env_mode == "dryrun":
        return "offline"
    return "online" if wandb_api_key_configured() else "offline"


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


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def _new_run_id() -> str:
    """An 8-character W&B-style run id (lowercase letters and digits)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _drop_partial_last_line(path: Path) -> None:
    """Cut a last row that a crash left without its newline (every complete row ends with '\\n')."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _read_header(path: Path) -> list[str] | None:
    with open(path, newline="") as f:
        return next(csv.reader(f), None)


def _drop_rows_after(path: Path, columns: list[str], after_env_step: float) -> None:
    """Rewrite a CSV file (atomically) without its rows past ``after_env_step`` (see ``_env_step_at_most``).

    A file without an env_step column is left as it is.
    """
    if "env_step" not in columns:
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, fieldnames=columns))[1:]  # [0] is the header
    kept = [r for r in rows if _env_step_at_most(r, after_env_step)]
    if len(kept) == len(rows):
        return
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(kept)
    atomic_write_text(path, out.getvalue())


def _env_step_at_most(row: dict[str, str | None], after_env_step: float) -> bool:
    """Whether a CSV row survives ``truncate``: env_step <= after_env_step, or no env_step value."""
    if any(v is None for v in row.values()) or None in row:
        return False  # short or over-long row: written by a crash, drop it
    value = row.get("env_step")
    if value is None or value == "":
        return True
    try:
        env_step = float(value)
    except ValueError:
        return False
    return not math.isnan(env_step) and env_step <= after_env_step


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
        for stream, cols in columns.items():
            self._open_csv(stream, list(cols))
        if self.mode != "disabled":
            try:
                self._run = self._start_wandb(config, wandb_cfg, run_name)
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
            _drop_partial_last_line(path)
            header = _read_header(path)
            if not header:
                append = False
            elif header != columns:
                warnings.warn(f"{path}: existing header {header} differs from the columns {columns}; "
                              f"appending with the existing header", RuntimeWarning, stacklevel=3)
                columns = header
        if append and self._truncated_after is not None:
            _drop_rows_after(path, columns, self._truncated_after)
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

    def truncate(self, after_env_step: int) -> None:
        """Keep only rows with ``env_step <= after_env_step`` in every CSV file that has an env_step column.

        Used for exact resume: rows logged after the last checkpoint of a killed run are dropped, so the
        resumed run does not write them twice. Rows without an env_step value are kept; rows a crash left
        incomplete are dropped. Streams opened now are rewritten at once; a stream created on its first
        row (not in ``csv_files``) is rewritten when the resumed run logs to it again. Each file is
        rewritten atomically (temporary file + ``os.replace``).
        """
        self._truncated_after = after_env_step
        for stream in list(self._files):
            self._files[stream].close()
            self._open_csv(stream, self.columns[stream], append=True)

    # ------------------------------------------------------------------------------------------ W&B

    def _start_wandb(self, config: dict, wcfg: WandbConfig, run_name: str | None):
        """Start (or, on resume, continue) the W&B run; its id is kept in ``run_dir/wandb_id.txt``."""
        import wandb

        id_file = self.run_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if self.resume and id_file.is_file() else ""
        run_id = run_id or _new_run_id()
        tags = [str(t) for t in wcfg.tags]
        tags += [f"{key}:{config[key]}" for key in TAG_KEYS if key in config]
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
            resume="allow" if self.resume else None,
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
