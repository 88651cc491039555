"""A prune job's run dir, claimed through ``tdmpc.run_dir``: identity = its settings and the source
checkpoint's bytes; a Hydra-named dir of another prune job is superseded, a user-named one refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pruning.study.collect import RESULT_FILE
from pruning.study.prune_config import _NOT_IDENTITY, PruneJobConfig, job_identity_settings


def claim_prune_dir(job: PruneJobConfig, run_dir: Path) -> Any:
    """Claim ``run_dir`` for ``job`` (``tdmpc.run_dir.claim``, kind ``prune``): refuses, with one line, a
    training run's dir (11.1) and a dir of another prune job or of another source checkpoint, so that a
    ``result.json`` found there is this job's (identity-based skipping) and ``checkpoint.pt`` its own
    fine-tune. A dir without ``run.json`` (from before manifests) is adopted only when its checkpoint or
    result was written by the same job settings."""
    from tdmpc.checkpoint import CheckpointError
    from tdmpc.run_dir import claim, file_sha256, identity

    ckpt_path = Path(job.checkpoint).expanduser()
    if not ckpt_path.is_file():
        raise CheckpointError(f"checkpoint not found: {ckpt_path}")
    settings = job_identity_settings(job)
    # A dir named by Hydra from the job's settings (run_dir unset) that holds another prune job - e.g. a
    # sweep re-launched after its training run went on, so the checkpoint changed - is superseded: the
    # old job is moved aside (reports leave it out) and this one runs anew. A dir the user named is refused.
    return claim(run_dir, "prune", identity(settings), settings=settings, source_sha256=file_sha256(ckpt_path),
                 check_unowned=lambda d: _check_unowned_prune_dir(d, settings),
                 hint="use another run dir (run_dir=... or hydra.run.dir=...)",
                 defaults=job_identity_settings(PruneJobConfig()), supersede=not job.run_dir)


def _check_unowned_prune_dir(run_dir: Path, settings: dict) -> str | None:
    """Why a prune job may not adopt a dir without ``run.json`` (``None``: it may)."""
    from tdmpc.checkpoint import load_checkpoint

    if (run_dir / RESULT_FILE).is_file():
        try:
            saved = json.loads((run_dir / RESULT_FILE).read_text()).get("config", {}).get("prune")
        except (OSError, ValueError, AttributeError):
            saved = None
    elif (run_dir / "checkpoint.pt").is_file():
        saved = (load_checkpoint(run_dir / "checkpoint.pt").get("config") or {}).get("prune")
        if saved is None:
            return "it holds a training run's checkpoint.pt, not this prune job's"
    else:
        return None
    if not isinstance(saved, dict):
        return "it holds files of another job"
    from tdmpc.run_dir import canonical_json

    old = {k: v for k, v in saved.items() if k not in _NOT_IDENTITY}
    return None if canonical_json(old) == canonical_json(settings) else "it holds another prune job (other settings)"
