"""Entry point of ``scripts/prune.py``: one-line errors, failure records in a multirun, interruption."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pruning.config import PruningConfigError
from pruning.study.prune_config import _to_job, validate_prune_job
from pruning.study.prune_job import run_prune_job


def run_prune_job_cli(cfg: Any) -> float | None:
    """Run the job of ``cfg`` (Hydra's); returns its eval return (for sweepers).

    User errors (bad settings, missing/corrupt checkpoint, a run dir of another job) exit 2 with one line
    in a single run; in a multirun every failure is written to the job's ``error.json`` and the sweep
    goes on (the ``FailedJobsCallback`` exits 1 at the end). SIGINT/SIGTERM stop the job (its fine-tune
    checkpoints first) and the whole sweep: one line, exit 130/143; re-running resumes.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from tdmpc.checkpoint import CheckpointError
    from tdmpc.cli import fail, record_failure, remove_refused_run_dir, save_hydra_config
    from tdmpc.config import ConfigError
    from tdmpc.run_dir import RunDirError
    from tdmpc.trainer import TrainingInterrupted

    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    multirun = hydra_cfg is not None and hydra_cfg.mode == RunMode.MULTIRUN
    run_dir: Path | None = None
    try:
        job = validate_prune_job(_to_job(cfg))
        run_dir = Path(job.run_dir) if job.run_dir else Path(hydra_cfg.runtime.output_dir)
        if multirun and job.logger.wandb.group is None:
            job.logger.wandb.group = Path(hydra_cfg.sweep.dir).name  # group = sweep name
        return run_prune_job(job, run_dir, on_claimed=lambda d: save_hydra_config(cfg, d))["return_mean"]
    except TrainingInterrupted as err:  # during fine-tuning: checkpointed
        print(str(err), file=sys.stderr, flush=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:  # before fine-tuning: nothing of the job's result was written
        print("interrupted before fine-tuning started; re-run the same command to run the job", file=sys.stderr,
              flush=True)
        sys.exit(130)
    except (PruningConfigError, ConfigError, CheckpointError, RunDirError) as err:
        if not multirun:
            remove_refused_run_dir(run_dir)
            fail(str(err))
        err_to_record: BaseException = err
    except Exception as err:  # noqa: BLE001 - a crashing job must not stop the sweep
        if not multirun:
            raise
        err_to_record = err
    out = run_dir or (Path(hydra_cfg.runtime.output_dir) if hydra_cfg is not None else Path("."))
    path = record_failure(out, err_to_record)
    print(f"error: {err_to_record} (job failed, recorded in {path})", file=sys.stderr, flush=True)
    return None
