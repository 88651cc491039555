"""Faults and bad commands against an existing training run (issues 11 and 13): each refused command prints
one line, exits 2 and leaves every pre-existing file of the run byte-identical; interruptions checkpoint
and resume exactly; training multiruns isolate failing jobs; run-dir ownership (tdmpc/run_dir.py).
Prune jobs' faults: tests/test_prune_faults.py; the shared tiny run: ``finished_run`` (conftest.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import run_train_cli, tiny_cli
from fault_helpers import assert_unchanged, hashes, one_line, train_args

from tdmpc.run_dir import LOCK, MANIFEST, RunDirError, claim, identity, read_manifest

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "scripts" / "train.py"


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    run = tmp_path / "R"
    shutil.copytree(finished_run, run)
    return run


# ------------------------------------------------------------------------------------------ run dir API
def test_claim_writes_the_manifest_first_and_refuses_other_kinds_and_identities(tmp_path):
    run = tmp_path / "d"
    settings = {"task": "cartpole-swingup", "seed": 1, "model": {"mlp_dim": 32}}
    assert identity(settings) == identity(dict(reversed(list(settings.items()))))  # canonical: key order
    with claim(run, "train", identity(settings), settings=settings) as owned:
        assert owned.created and (run / MANIFEST).is_file()
        assert f"pid {os.getpid()}" in (run / LOCK).read_text()
    manifest = read_manifest(run)
    assert manifest["kind"] == "train" and manifest["identity"] == identity(settings) and manifest["pid"] == os.getpid()
    with claim(run, "train", identity(settings), settings=settings) as owned:  # same job: resumes
        assert not owned.created
    with pytest.raises(RunDirError, match="belongs to a train job, this is a prune job"):
        claim(run, "prune", identity(settings))
    other = {**settings, "model": {"mlp_dim": 48}}
    with pytest.raises(RunDirError, match=r"model.mlp_dim=32 \(this command: 48\)"):
        claim(run, "train", identity(other), settings=other)
    with pytest.raises(RunDirError, match="already holds a run"):
        claim(run, "train", identity(settings), settings=settings, fresh=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="is a file"):
        claim(tmp_path / "file", "train", identity(settings))


def test_a_claim_that_locked_a_moved_aside_lock_file_is_refused_not_a_second_owner(tmp_path, monkeypatch):
    """C opens run.lock; B claims with overwrite=true (moves the dir aside, locks the new run.lock); then C
    takes its flock, on the moved file. C must see that and be refused, not own the dir next to B."""
    import fcntl
    import threading

    import tdmpc.run_dir as rd

    run = tmp_path / "run"
    run.mkdir()
    (run / MANIFEST).write_text(json.dumps({"kind": "train", "identity": "old"}))
    opened, go = threading.Event(), threading.Event()
    real_flock = fcntl.flock

    def flock(fd, op):
        if threading.current_thread().name == "C" and not opened.is_set():
            opened.set()
            go.wait()  # C has opened run.lock: B runs now
        return real_flock(fd, op)
    monkeypatch.setattr(rd.fcntl, "flock", flock)
    result = {}

    def c():
        try:
            result["C"] = claim(run, "train", "idC", overwrite=True)
        except RunDirError as err:
            result["C"] = err
    thread = threading.Thread(target=c, name="C")
    thread.start()
    opened.wait()
    b = claim(run, "train", "idB", overwrite=True)
    go.set()
    thread.join()
    assert isinstance(result["C"], RunDirError) and "in use by another live process" in str(result["C"])
    assert read_manifest(run)["identity"] == "idB" and b.moved_to is not None
    b.release()


def test_a_live_lock_refuses_and_a_dead_holders_lock_does_not(tmp_path):
    run = tmp_path / "d"
    ident = identity({"a": 1})
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from tdmpc.run_dir import claim\n"
        "c = claim(sys.argv[2], 'train', sys.argv[3]); print('held', flush=True); time.sleep(60)"),
        str(ROOT), str(run), ident], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError, match=f"in use by another live process \\(pid {holder.pid} on "):
            claim(run, "train", ident)
    finally:
        holder.kill()  # dies holding the lock: the OS releases it
        holder.wait()
    assert f"pid {holder.pid}" in (run / LOCK).read_text()  # a stale lock file ...
    with claim(run, "train", ident) as owned:  # ... does not block the next job
        assert not owned.created


# ------------------------------------------------------------------------------------------ refused commands
@pytest.mark.parametrize("extra, expected", [
    ({"task": "walker-walk"}, "task='cartpole-swingup' (this command: 'walker-walk')"),
    ({"seed": 2}, "seed=1 (this command: 2)"),
    ({"model.mlp_dim": 48}, "model.mlp_dim=32 (this command: 48)"),
    ({"steps": -5}, "steps=-5; allowed: an integer > 0"),
    ({"resume": "false"}, "re-run with resume=true to continue it, or add overwrite=true"),
    ({"logger.wandb.mode": "online"}, "online needs wandb installed and an API key"),  # no key in this HOME
])
@pytest.mark.slow
def test_refused_command_on_an_existing_run_changes_nothing(finished_run, extra, expected):
    before = hashes(finished_run)
    res = run_train_cli(train_args(finished_run, **{"steps": 3000, **extra}), finished_run.parent)
    assert res.returncode == 2, res.stderr[-3000:]
    line = one_line(res)
    assert line.startswith("error: ") and expected in line, line
    assert "resume=false" not in line  # a mismatch is never "solved" by throwing the run away
    assert_unchanged(finished_run, before)


@pytest.mark.slow
def test_a_run_cannot_be_shortened_from_the_command_line(finished_run):
    """Refused after the run dir is claimed: every file but run.lock's holder line stays byte-identical."""
    before = {k: v for k, v in hashes(finished_run).items() if k != "run.lock"}
    res = run_train_cli(train_args(finished_run, steps=1000), finished_run.parent)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "steps=1000; allowed: >= 2000 (this run dir's checkpoint is at env_step 2000" in one_line(res)
    assert_unchanged(finished_run, before)


@pytest.mark.parametrize("override, expected", [
    ("steps=1.5", "Value '1.5' of type 'float' could not be converted to Integer; full_key: steps"),
    ("seed=abc", "Value 'abc' of type 'str' could not be converted to Integer; full_key: seed"),
    ("foo=1", "Key 'foo' not in 'TrainConfig'"),
    ("logger=nope", "Could not find 'logger/nope'; Available options in 'logger':"),
    ("pruning=null", "Config group override must be a string or a list. Got NoneType"),  # was a traceback
])
@pytest.mark.slow
def test_hydra_level_errors_are_one_line_and_change_nothing(finished_run, override, expected):
    before = hashes(finished_run)
    res = run_train_cli([*train_args(finished_run), override], finished_run.parent)
    assert res.returncode == 2 and expected in one_line(res), res.stderr[-3000:]
    assert_unchanged(finished_run, before)


@pytest.mark.slow
def test_two_processes_in_one_run_dir_the_second_is_refused(finished_run):
    settings = read_manifest(finished_run)["settings"]
    with claim(finished_run, "train", identity(settings), settings=settings):  # a live job holds the dir
        before = hashes(finished_run)
        res = run_train_cli(train_args(finished_run, steps=3000), finished_run.parent)
        assert res.returncode == 2
        assert "is in use by another live process" in one_line(res)
        assert_unchanged(finished_run, before)


@pytest.mark.slow
def test_a_prune_jobs_dir_is_not_adopted_by_training(tmp_path):
    run = tmp_path / "P"
    claim(run, "prune", identity({"metric": "fisher"})).release()
    before = hashes(run)
    res = run_train_cli(train_args(run), tmp_path)
    assert res.returncode == 2 and "belongs to a prune job, this is a train job" in one_line(res)
    assert_unchanged(run, before)


@pytest.mark.slow
def test_a_run_without_manifest_is_checked_against_its_checkpoint(run_copy):
    (run_copy / MANIFEST).unlink()  # a run from before manifests existed
    before = hashes(run_copy)
    res = run_train_cli(train_args(run_copy, steps=3000, seed=2), run_copy.parent)
    assert res.returncode == 2 and "seed=1 (this command: 2)" in one_line(res)
    assert_unchanged(run_copy, before)
    res = run_train_cli(train_args(run_copy, steps=3000), run_copy.parent)  # compatible: adopted and resumed
    assert res.returncode == 0, res.stderr[-3000:]
    assert "[resume]" in res.stdout and read_manifest(run_copy)["kind"] == "train"


def _age_manifest(run: Path, drop: str) -> dict:
    """Rewrite ``run``'s manifest as a run recorded before the setting ``drop`` ("section.key") existed."""
    manifest = json.loads((run / MANIFEST).read_text())
    section, key = drop.split(".")
    assert key in manifest["settings"][section]
    del manifest["settings"][section][key]
    manifest["identity"] = identity(manifest["settings"])
    (run / MANIFEST).write_text(json.dumps(manifest))
    return manifest


@pytest.mark.slow
def test_a_setting_added_after_a_run_was_recorded_compares_as_its_default(run_copy):
    _age_manifest(run_copy, "pruning.gate_interval")
    before = hashes(run_copy)
    res = run_train_cli(train_args(run_copy, steps=3000, seed=2), run_copy.parent)  # still refused: seed
    assert res.returncode == 2 and "seed=1 (this command: 2)" in one_line(res)
    assert "gate_interval" not in res.stderr
    assert_unchanged(run_copy, before)
    res = run_train_cli(train_args(run_copy, steps=3000, **{"pruning.gate_interval": 5}), run_copy.parent)
    assert res.returncode == 2 and "pruning.gate_interval=1 (this command: 5)" in one_line(res)
    res = run_train_cli(train_args(run_copy, steps=3000), run_copy.parent)  # the default: resumed
    assert res.returncode == 0, res.stderr[-3000:]
    assert "[resume]" in res.stdout
    assert pd.read_csv(run_copy / "train.csv")["env_step"].iloc[-1] == 3000


@pytest.mark.parametrize("override, key", [({"buffer_size": 10**12}, "buffer_size=1000000000000"),
                                           ({"model.mlp_dim": 300_000}, "model='enc_dim=32, mlp_dim=300000")])
@pytest.mark.slow
def test_allocations_too_large_for_the_machine_are_refused_in_one_line(tmp_path, override, key):
    run = tmp_path / "big"
    res = run_train_cli(train_args(run, **override), tmp_path)
    assert res.returncode == 2, res.stderr[-3000:]
    line = one_line(res)
    assert key in line and "allowed: a value that fits in memory" in line and "GiB available" in line
    assert not (run / "train.csv").exists() and not (run / MANIFEST).exists()


@pytest.mark.slow
def test_overwrite_moves_the_old_run_aside_and_starts_anew(run_copy):
    before = hashes(run_copy)
    res = run_train_cli(train_args(run_copy, steps=1000, resume="false", overwrite="true"), run_copy.parent)
    assert res.returncode == 0, res.stderr[-3000:]
    [old] = run_copy.parent.glob("R.old-*")
    assert hashes(old) == before  # moved, not changed
    assert "[resume]" not in res.stdout and f"moved the old run aside to {old}" in res.stdout
    assert pd.read_csv(run_copy / "train.csv")["env_step"].tolist() == [1000]
    assert torch.load(run_copy / "checkpoint.pt", weights_only=True)["counters"]["env_step"] == 1000


# ------------------------------------------------------------------------------------------ interruption
def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run_until(args: list[str], cwd: Path, pattern: str, sig: int) -> tuple[int, str, str]:
    """Run scripts/train.py, send ``sig`` once when a stdout line contains ``pattern``; (rc, stdout, stderr)."""
    env = {"MUJOCO_GL": "disable", "PATH": "/usr/bin:/bin", "HOME": str(cwd), "WANDB_SILENT": "true"}
    # SIGINT as a terminal delivers it: a test run in the background of a non-interactive shell (nohup
    # ... &) inherits SIGINT ignored, and Python then installs no handler for it.
    proc = subprocess.Popen([sys.executable, str(TRAIN), *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    out, sent = [], False
    t0 = time.monotonic()
    for line in proc.stdout:
        out.append(line)
        if not sent and pattern in line:
            proc.send_signal(sig)
            sent = True
        assert time.monotonic() - t0 < 300
    rc = proc.wait(timeout=120)
    assert sent, "".join(out)
    return rc, "".join(out), proc.stderr.read()


@pytest.mark.slow
def test_sigint_checkpoints_and_the_resumed_run_matches_an_uninterrupted_one(tmp_path):
    full = tmp_path / "full"
    assert run_train_cli(train_args(full, steps=4000), tmp_path).returncode == 0
    part = tmp_path / "part"
    rc, out, err = _run_until(train_args(part, steps=4000), tmp_path, "[train] env_step     2000", signal.SIGINT)
    assert rc == 130, out[-2000:] + err
    # the episode after 2000 may have begun when the signal came: it is finished and checkpointed
    at = 2000 if "[train] env_step     3000" not in out else 3000
    assert err.strip() == f"interrupted at env step {at}; re-run the same command to resume"
    assert torch.load(part / "checkpoint.pt", weights_only=True)["counters"]["env_step"] == at
    res = run_train_cli(train_args(part, steps=4000), tmp_path)  # the same command resumes
    assert res.returncode == 0 and "[resume]" in res.stdout, res.stderr[-3000:]
    e_full, e_part = pd.read_csv(full / "eval.csv"), pd.read_csv(part / "eval.csv")
    assert e_part["env_step"].tolist() == [1000, 2000, 3000, 4000]
    assert e_part["return_mean"].tolist() == e_full["return_mean"].tolist()


@pytest.mark.slow
def test_sigterm_during_pretraining_stops_at_once_from_the_seeding_checkpoint(tmp_path):
    run = tmp_path / "run"
    rc, out, err = _run_until(train_args(run, steps=3000), tmp_path, "[pretrain]     13/", signal.SIGTERM)
    assert rc == 143, out[-2000:] + err
    assert err.strip() == "interrupted at env step 1000; re-run the same command to resume"
    assert "[train] env_step     2000" not in out
    state = torch.load(run / "checkpoint.pt", weights_only=True)  # written at the end of seeding
    assert state["counters"]["env_step"] == 1000 and state["counters"]["updates"] == 0


@pytest.mark.slow
def test_progress_lines_and_the_job_log(finished_run):
    log = (finished_run / "train.log").read_text()
    assert "[pretrain]    125/125 updates (100 %)" in log and "updates/s" in log
    assert "[train] env_step     2000" in log and "agent-steps/s" in log and "env-steps/s" in log
    assert "MUJOCO_GL" not in log
    manifest = json.loads((finished_run / MANIFEST).read_text())
    assert manifest["settings"]["task"] == "cartpole-swingup" and manifest["settings"]["seed"] == 1


# ------------------------------------------------------------------------------------------ multirun
@pytest.mark.slow
def test_a_failing_training_job_does_not_stop_the_multirun(tmp_path):
    sweep = tmp_path / "sweep"
    res = run_train_cli(["-m", *tiny_cli(steps=1000), "logger=disabled", f"hydra.sweep.dir={sweep}",
                         "hydra.sweep.subdir=${task}", "task=cartpole-swingupp,cartpole-swingup"], tmp_path)
    assert res.returncode == 1, res.stderr[-3000:]
    assert "error: 1 job(s) of the sweep failed (the others completed):" in res.stderr
    info = json.loads((sweep / "cartpole-swingupp" / "error.json").read_text())
    assert info["error"] == "ConfigError" and "did you mean 'cartpole-swingup'" in info["message"]
    assert (sweep / "cartpole-swingup" / "checkpoint.pt").is_file()
    assert pd.read_csv(sweep / "cartpole-swingup" / "eval.csv")["env_step"].tolist() == [1000]


def test_failed_jobs_with_run_dirs_outside_the_sweep_still_fail_the_multirun(tmp_path):
    """Every job of this sweep fails at its config check, each recording error.json in a run dir outside the
    sweep dir; the multirun must exit 1 listing both (it used to exit 0: only the sweep dir was searched)."""
    sweep, outside = tmp_path / "sweep", tmp_path / "outside"
    res = run_train_cli(["-m", *tiny_cli(steps=1000), "logger=disabled", f"hydra.sweep.dir={sweep}",
                         f"run_dir={outside}/s${{seed}}", "seed=1,2", "pruning.metrics=[bogus]"], tmp_path)
    assert res.returncode == 1, res.stderr[-3000:]
    assert "error: 2 job(s) of the sweep failed (the others completed):" in res.stderr
    for seed in (1, 2):
        assert f"  {outside}/s{seed}: " in res.stderr
        assert json.loads((outside / f"s{seed}" / "error.json").read_text())["error"] == "ConfigError"
    assert len(list((sweep / ".failed_jobs").glob("*.json"))) == 2


def test_a_job_refused_its_run_dir_records_its_failure_outside_that_dir(tmp_path):
    """A job whose claim was refused (the dir is another job's) must not write error.json there (the owner
    deletes it when it succeeds, and the failure vanished): a marker below the sweep dir records it."""
    from hydra.conf import HydraConf
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from tdmpc.cli import FAILED_JOBS_DIR, record_failure
    from tdmpc.launcher import FailedJobsCallback

    owned = tmp_path / "owned"
    owned.mkdir()
    cfg = OmegaConf.create({"hydra": OmegaConf.structured(HydraConf)})
    cfg.hydra.sweep.dir = str(tmp_path / "sweep")
    callback = FailedJobsCallback()
    callback.start = time.time() - 1.0
    HydraConfig.instance().set_config(cfg)
    try:
        marker = record_failure(owned, RunDirError("run dir in use by another live process"))
    finally:
        HydraConfig.instance().cfg = None
    assert not (owned / "error.json").exists()
    assert marker.parent == tmp_path / "sweep" / FAILED_JOBS_DIR
    assert callback.failures(tmp_path / "sweep") == {str(owned): "RunDirError: run dir in use by another live process"}


def test_failures_of_this_sweep_are_found_without_comparing_clocks(tmp_path, monkeypatch):
    """The login node's clock decided which failure files belonged to this sweep: files a compute node (or a file
    system) stamped more than 1 s earlier by its own clock were dropped and the sweep exited 0. Now the files
    the sweep dir held at the start are noted: new or rewritten ones are this sweep's, whatever their mtimes."""
    from hydra.conf import HydraConf
    from omegaconf import OmegaConf

    from tdmpc import launcher

    sweep = tmp_path / "sweep"
    earlier, rewritten = sweep / "1", sweep / "2"
    for d in (earlier, rewritten):
        d.mkdir(parents=True)
        (d / "error.json").write_text(json.dumps({"error": "X", "message": "from an earlier sweep"}))
    cfg = OmegaConf.create({"hydra": OmegaConf.structured(HydraConf)})
    cfg.hydra.sweep.dir = str(sweep)
    monkeypatch.setattr(launcher.time, "time", lambda: 4e9)  # this machine's clock far ahead of the files'
    callback = launcher.FailedJobsCallback()
    callback.on_multirun_start(cfg)
    job = sweep / "0"
    job.mkdir()
    (job / "error.json").write_text(json.dumps({"error": "ConfigError", "message": "bad"}))
    (rewritten / "error.json").write_text(json.dumps({"error": "RunDirError", "message": "again"}))
    os.utime(rewritten / "error.json", (1e9, 1e9))  # stamped by a clock far behind
    assert callback.failures(sweep) == {str(job): "ConfigError: bad", str(rewritten): "RunDirError: again"}


def test_submitit_launcher_errors_are_one_line():
    """sbatch refusing a sweep (e.g. a mistyped partition) and a killed job ended in 50-line tracebacks."""
    from tdmpc.cli import submitit_error_line

    refused = RuntimeError("Could not submit\nsbatch: error: invalid partition specified: nosuch\nsbatch: error: "
                           "Batch job submission failed")
    assert submitit_error_line(refused) == (2, "SLURM refused the sweep (sbatch: error: invalid partition specified: "
                                               "nosuch); check hydra.launcher's settings (scripts/slurm/README.md)")
    code, line = submitit_error_line(RuntimeError("Job 14411 (task: 0) with path /s/.submitit/14411_0_result.pkl\n"
                                                  "has not produced any output (state: FAILED)"))
    assert code == 1 and "a job of the sweep ended without a result" in line and "Job 14411 (task: 0)" in line
    assert "\n" not in line and "re-run the same command to resume the sweep" in line


def test_atomically_written_files_get_the_umasks_permissions_not_0600(tmp_path):
    """A group on a shared cluster can read the checkpoints, logs and importance files (tempfile.mkstemp's
    mode 0600 used to survive the rename)."""
    import pyarrow as pa

    from pruning.snapshot_file import write_atomic
    from tdmpc.checkpoint import save_atomic
    from tdmpc.csv_files import atomic_write_text

    old = os.umask(0o027)
    try:
        save_atomic({"x": 1}, tmp_path / "checkpoint.pt")
        atomic_write_text(tmp_path / "eval.csv", "a\n1\n")
        write_atomic(pa.table({"a": [1]}), tmp_path / "importance.parquet")
    finally:
        os.umask(old)
    for name in ("checkpoint.pt", "eval.csv", "importance.parquet"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o640, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "eval.csv", "importance.parquet"]


def test_temporary_files_of_a_killed_writer_are_removed_at_the_next_write(tmp_path):
    """A SIGKILL while a checkpoint (a whole replay buffer) was written left ``.checkpoint.pt.<pid>.<hex>.tmp``
    for good. The next write removes those whose process is gone and that were not modified for
    STALE_AFTER_S; a live writer's (maybe another host's, on a shared filesystem) and a fresh one stay."""
    import subprocess
    import sys

    from tdmpc.checkpoint import save_atomic
    from tdmpc.temp_file import STALE_AFTER_S

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    old = time.time() - STALE_AFTER_S - 10
    files = {"abandoned": f".checkpoint.pt.{dead}.aaaaaaaaaaaa.tmp", "fresh": f".checkpoint.pt.{dead}.bbbbbbbbbbbb.tmp",
             "live": f".checkpoint.pt.{os.getpid()}.cccccccccccc.tmp", "other": f".eval.csv.{dead}.dddddddddddd.tmp"}
    for key, name in files.items():
        (tmp_path / name).write_bytes(b"partial")
        if key != "fresh":
            os.utime(tmp_path / name, (old, old))
    save_atomic({"x": 1}, tmp_path / "checkpoint.pt")
    left = {p.name for p in tmp_path.iterdir()}
    assert files["abandoned"] not in left
    assert {files["fresh"], files["live"], files["other"], "checkpoint.pt"} == left


def test_a_withdrawn_claim_puts_the_run_back_and_its_refusal_is_not_recorded_there(tmp_path):
    """A job refused after its claim moved a finished run aside moves it back; its failure used to be written as
    error.json into that restored run (reports then listed the finished run as failed)."""
    from tdmpc.cli import record_failure
    from tdmpc.run_dir import RUN_RESTORED, claim

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"kind": "train", "identity": "old", "settings": {}}))
    (run / "checkpoint.pt").write_bytes(b"finished")
    owned = claim(run, "train", "new", overwrite=True)
    assert owned.moved_to is not None and not (run / "checkpoint.pt").exists()
    err = ValueError("refused after the claim")
    assert owned.withdraw(err) and getattr(err, RUN_RESTORED)
    owned.release()
    assert (run / "checkpoint.pt").read_bytes() == b"finished" and not list(tmp_path.glob("run.old-*"))
    record_failure(run, err)
    assert not (run / "error.json").exists()


@pytest.mark.slow
def test_a_requeued_slurm_job_continues_its_own_run_whatever_resume_and_overwrite_say(tmp_path):
    """A SLURM job started with resume=false overwrite=true and then requeued (preempted, or timed out under
    submitit) re-runs the same command: it used to move its own run aside and start from scratch every time.
    A restart of the job that created the run dir (same SLURM_JOB_ID, SLURM_RESTART_COUNT >= 1) continues it."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "train.py"
    run_dir = tmp_path / "run"

    def run(steps, job, restarts):
        env = {"MUJOCO_GL": "disable", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "WANDB_SILENT": "true",
               "SLURM_JOB_ID": job, "SLURM_RESTART_COUNT": restarts}
        return subprocess.run([sys.executable, str(script), *train_args(run_dir, steps=steps), "resume=false",
                               "overwrite=true"], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)

    first = run(2000, "4242", "0")
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads((run_dir / "run.json").read_text())["scheduler_job"] == "slurm:4242"
    again = run(3000, "4242", "1")  # the requeued job: its command as it was (steps grown to show the resume)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "this SLURM job was requeued: it continues its own run" in again.stdout
    assert not list(tmp_path.glob("run.old-*"))
    steps = pd.read_csv(run_dir / "train.csv")["env_step"]
    assert steps.is_monotonic_increasing and steps.iloc[-1] == 3000 and steps.iloc[0] < 2000  # one run, continued
    other = run(2000, "5151", "1")  # another job (a new submission) with overwrite=true: moves the run aside
    assert other.returncode == 0 and "moved the old run aside" in other.stdout
    assert len(list(tmp_path.glob("run.old-*"))) == 1


def test_one_stop_delivered_twice_is_one_stop_but_a_second_press_stops_at_once(monkeypatch):
    """Under SLURM every process of a job gets the signal and the main job forwards it to its stages' jobs too:
    two SIGTERMs within milliseconds made a training job "stop at once" and lose the work since its last
    checkpoint. The same signal again within DUPLICATE_S is ignored; later, it still stops at once."""
    from tdmpc import stop_signals
    from tdmpc.trainer import TrainingInterrupted

    clock = [100.0]
    monkeypatch.setattr(stop_signals.time, "monotonic", lambda: clock[0])
    stops = stop_signals.StopSignals(lambda line: None, lambda: 3000)
    stops._handle(signal.SIGTERM, None)
    clock[0] += 0.01
    stops._handle(signal.SIGTERM, None)  # the same stop, delivered twice
    assert stops.requested() and stops.signum == signal.SIGTERM
    clock[0] += 1.0
    with pytest.raises(TrainingInterrupted):  # a second press, later: at once
        stops._handle(signal.SIGTERM, None)
    other = stop_signals.StopSignals(lambda line: None, lambda: 0)
    other._handle(signal.SIGTERM, None)
    with pytest.raises(TrainingInterrupted):  # another signal right after: at once too
        other._handle(signal.SIGINT, None)


def test_remove_if_unused_never_removes_a_held_lock_the_working_dir_or_anything_with_content(tmp_path, monkeypatch):
    import fcntl

    from tdmpc.run_dir import remove_if_unused

    monkeypatch.chdir(tmp_path)
    held = tmp_path / "runs" / "held"
    held.mkdir(parents=True)
    fd = os.open(held / LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a live job that has not written run.json yet
    try:
        assert not remove_if_unused(held) and (held / LOCK).is_file()
    finally:
        os.close(fd)
    assert remove_if_unused(held) and not (tmp_path / "runs").exists()  # free now: removed, empty parents too
    assert not remove_if_unused(tmp_path) and tmp_path.is_dir()  # never the working directory
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("x")
    assert not remove_if_unused(kept) and (kept / "notes.txt").is_file()
