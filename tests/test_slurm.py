"""Sweeps on a real (local, single-node) SLURM cluster through hydra-submitit-launcher.

- ``scripts/prune.py -m ... hydra/launcher=submitit_slurm``: the plugin's own launcher config, 2 metrics x
  2 checkpoints (one of them corrupt): the two good jobs write their ``result.json``, the two bad ones
  an ``error.json`` without stopping the others, the multirun exits 1 naming them, and a re-launch into
  the same sweep dir skips the completed jobs.
- ``scripts/train.py -m`` of two tiny jobs (seed=1,2) with the repo's ``conf/hydra/launcher/slurm.yaml``
  preset. The seed=2 job is preempted once, as SLURM preempts it: its step gets USR2 (the preset's
  ``--signal``), submitit calls the launcher's ``checkpoint`` and ``scontrol requeue``s the job, and the
  requeued job must resume from ``checkpoint.pt`` in the same run dir.

The launcher-preset checks need no cluster.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from conftest import tiny_cli
from slurm_cluster import CRED_EXPIRE_S, slurm_cluster  # noqa: F401  (session fixture)

ROOT = Path(__file__).resolve().parents[1]
STEPS = 2000  # one episode of seeding, one of training (cartpole: 1000 env steps per episode)
SWEEP_TIMEOUT_S = 240


def _load_validator():
    spec = importlib.util.spec_from_file_location("validate_launcher", ROOT / "scripts" / "slurm" / "validate_launcher.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ----------------------------------------------------------------------------------------- presets
@pytest.mark.parametrize("name", ["slurm", "local"])
def test_repo_launcher_presets_set_every_required_key(name):
    keys = _load_validator().validate_launcher(ROOT / "conf" / "hydra" / "launcher" / f"{name}.yaml")
    assert keys["cpus_per_task"] >= 1 and keys["timeout_min"] >= 1 and keys["gpus_per_node"] == 0
    if name == "slurm":
        assert {"partition", "array_parallelism", "max_num_timeout"} <= set(keys) and keys["max_num_timeout"] >= 1


def test_example_cluster_preset_is_valid_and_inherits_the_repo_preset(tmp_path):
    # scripts/slurm/example_cluster.yaml is meant to be copied next to conf/hydra/launcher/slurm.yaml
    v = _load_validator()
    example = ROOT / "scripts" / "slurm" / "example_cluster.yaml"
    with pytest.raises(v.LauncherError, match="defaults must include"):  # no slurm.yaml beside it
        v.validate_launcher(example)
    (tmp_path / "slurm.yaml").write_text((ROOT / "conf" / "hydra" / "launcher" / "slurm.yaml").read_text())
    (tmp_path / "mycluster.yaml").write_text(example.read_text())
    keys = v.validate_launcher(tmp_path / "mycluster.yaml")
    assert keys["partition"] == "gpu" and keys["gpus_per_node"] == 1 and keys["array_parallelism"] == 32
    assert keys["max_num_timeout"] == 3  # inherited from slurm.yaml


@pytest.mark.parametrize(
    "body, expected",
    [
        ("defaults: [submitit_slurm]\npartition: gpu\ntimeout_min: 60\ncpus_per_task: 2\ngpus_per_node: 0\n"
         "array_parallelism: 4\n", "missing required key(s) mem_gb"),
        ("defaults: [submitit_slurm]\npartition: gpu\ntimeout_min: 0\ncpus_per_task: 2\ngpus_per_node: 0\n"
         "mem_gb: 4\narray_parallelism: 4\n", "timeout_min=0; allowed: an integer >= 1"),
        ("partition: gpu\n", "defaults must include one of submitit_slurm"),
        ("defaults: [submitit_local]\ntimeout_min: 5\ncpus_per_task: 1\ngpus_per_node: 0\n", "mem_gb"),
    ],
)
def test_bad_preset_fails_with_one_line_naming_the_key(tmp_path, body, expected):
    preset = tmp_path / "mycluster.yaml"
    preset.write_text(body)
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "slurm" / "validate_launcher.py"), str(preset)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {preset}: ") and expected in lines[0], res.stderr


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train.py", "prune.py"])
def test_multirun_with_a_bad_preset_fails_with_one_line_before_submitting(tmp_path, script):
    """The preset check also runs by itself at the start of every multirun (tdmpc.launcher.LauncherPresetCheck):
    a user's preset that forgets mem_gb stops the sweep before anything is submitted or written."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    presets = tmp_path / "myconf" / "hydra" / "launcher"
    presets.mkdir(parents=True)
    (presets / "mycluster.yaml").write_text("defaults: [submitit_slurm]\npartition: gpu\ntimeout_min: 60\n"
                                            "cpus_per_task: 2\ngpus_per_node: 0\narray_parallelism: 4\n")
    sweep = tmp_path / "sweep"
    job = ["seed=1,2"] if script == "train.py" else [f"checkpoint={tmp_path / 'x.pt'}", "metric=l1,fisher"]
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "-m", f"--config-dir={tmp_path / 'myconf'}",
                          "hydra/launcher=mycluster", f"hydra.sweep.dir={sweep}", *job],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HYDRA_FULL_ERROR": "0", "WANDB_MODE": "disabled"})
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: invalid launcher preset hydra/launcher=mycluster: ")
    assert "mycluster.yaml: missing required key(s) mem_gb for submitit_slurm" in lines[0]
    assert not sweep.exists() and not (tmp_path / "multirun").exists()


# ----------------------------------------------------------------------------------------- cluster
def _tail(path: Path, n: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.is_file() else f"({path} missing)"


def _diagnostics(cluster, sweep: Path, proc_out: str = "") -> str:
    logs = [f"--- {p} ---\n{_tail(p)}" for p in sorted(sweep.glob(".submitit/*/*_log.*"))]
    return "\n".join([proc_out[-3000:], cluster.run("squeue", check=False).stdout, *logs, cluster.logs(20)])


@pytest.fixture(scope="module")
def preempted_sweep(slurm_cluster, tmp_path_factory):  # noqa: F811
    """Run the two-job multirun, preempting the seed=2 job once after its first checkpoint."""
    cluster = slurm_cluster
    sweep = tmp_path_factory.mktemp("sweep") / "multirun"
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "-m", "hydra/launcher=slurm",
           f"hydra.launcher.partition={cluster.partition}", "hydra.launcher.cpus_per_task=1",
           "hydra.launcher.mem_gb=1",
           # > 10 min: submitit counts a USR2 as a timeout (not a preemption) after
           # min(0.8 * time, time - 10 min) of run time, i.e. always when time <= 10 min
           "hydra.launcher.timeout_min=30", f"hydra.sweep.dir={sweep}",
           "hydra.sweep.subdir=seed${seed}",  # short, known run dirs (instead of all tiny overrides)
           "seed=1,2", "logger=disabled",
           *tiny_cli(steps=STEPS, eval_freq=STEPS, checkpoint_freq=1000)]
    env = {**cluster.env, "MUJOCO_GL": "disable", "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1"}
    out_path = sweep.parent / "multirun.out"
    t0 = time.monotonic()
    with open(out_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=sweep.parent, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        # 1. wait for the seed=2 job's first checkpoint, then preempt it (USR2, as SLURM does)
        ckpt = sweep / "seed2" / "checkpoint.pt"
        while not ckpt.exists():
            if proc.poll() is not None or time.monotonic() - t0 > SWEEP_TIMEOUT_S / 2:
                pytest.fail(f"no {ckpt} (multirun exit {proc.poll()})\n{_diagnostics(cluster, sweep, out_path.read_text())}",
                            pytrace=False)
            time.sleep(0.2)
        job_dirs = [p.name for p in sweep.glob(".submitit/*_1") if re.fullmatch(r"\d+_1", p.name)]
        assert len(job_dirs) == 1, job_dirs
        job_id = job_dirs[0]
        cluster.run("scancel", "--signal=USR2", job_id)
        # 2. wait for the multirun; fail fast when the queue is empty but the launcher still waits
        #    (this cluster has no accounting, so submitit cannot see a job that died without a result)
        empty_since = None
        while proc.poll() is None:
            if time.monotonic() - t0 > SWEEP_TIMEOUT_S:
                pytest.fail(f"multirun did not finish in {SWEEP_TIMEOUT_S}s\n"
                            f"{_diagnostics(cluster, sweep, out_path.read_text())}", pytrace=False)
            # The requeued job waits CRED_EXPIRE_S + 1 s (Reason=BeginTime) and then starts by itself;
            # moving its begin time to "now" would race with the revocation of its old credential.
            queued = cluster.run("squeue", "-h", check=False).stdout.strip()
            empty_since = None if queued else (empty_since or time.monotonic())
            if empty_since and time.monotonic() - empty_since > 20:
                pytest.fail(f"queue empty but the multirun still waits\n"
                            f"{_diagnostics(cluster, sweep, out_path.read_text())}", pytrace=False)
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return SimpleNamespace(sweep=sweep, returncode=proc.returncode, output=out_path.read_text(),
                           preempted=job_id, array_id=job_id.split("_")[0], seconds=time.monotonic() - t0,
                           diagnostics=lambda: _diagnostics(cluster, sweep, out_path.read_text()))


@pytest.mark.slurm
@pytest.mark.slow
def test_sweep_runs_every_job_to_completion_on_slurm(preempted_sweep):
    s = preempted_sweep
    assert s.returncode == 0, s.diagnostics()
    script = (s.sweep / ".submitit" / s.array_id / f"{s.array_id}_submission.sh").read_text()
    for flag in ("--array=0-1%2", "--partition=debug", "--cpus-per-task=1", "--mem=1GB", "--time=30",
                 "--gpus-per-node=0", "--signal=USR2@120"):
        assert f"#SBATCH {flag}" in script, flag
    for seed, task in ((1, 0), (2, 1)):
        run = s.sweep / f"seed{seed}"
        for name in ("config.yaml", "eval.csv", "train.csv", "checkpoint.pt"):
            assert (run / name).is_file(), (run / name, s.diagnostics())
        evals = pd.read_csv(run / "eval.csv")
        assert evals["env_step"].tolist() == [STEPS]
        job = s.sweep / ".submitit" / f"{s.array_id}_{task}"
        log = (job / f"{s.array_id}_{task}_0_log.out").read_text()
        assert "Job completed successfully" in log and f"env_step {STEPS:>8d}" in log
        with open(job / f"{s.array_id}_{task}_0_result.pkl", "rb") as f:
            status, ret = pickle.load(f)
        assert status == "success" and ret.return_value == pytest.approx(evals["return_mean"].iloc[-1])


@pytest.mark.slurm
@pytest.mark.slow
def test_preempted_job_is_requeued_and_resumes_from_its_run_dir(preempted_sweep):
    s = preempted_sweep
    assert s.returncode == 0, s.diagnostics()
    job = s.sweep / ".submitit" / s.preempted
    log = (job / f"{s.preempted}_0_log.out").read_text()  # appended to by both runs of the job
    assert "this job is preempted" in log and f"Requeued job {s.preempted}" in log, s.diagnostics()
    assert log.count("Starting with JobEnvironment") == 2
    run = s.sweep / "seed2"
    assert f"[resume] from {run / 'checkpoint.pt'} at env_step 1000" in log
    first_start = log.index("Starting with JobEnvironment")
    assert log.index("[resume]") > log.index("Requeued job") > first_start
    # SLURM held the requeued job for its credential lifetime before starting it again (a start in the
    # same second as the old credential's revocation is killed by slurmd: "Job credential revoked")
    stamps = {m[2]: m[1] for m in re.finditer(r"submitit INFO \(([\d\- :,]+)\) - (Requeued job|Starting)", log)}
    held = pd.Timestamp(stamps["Starting"].replace(",", ".")) - pd.Timestamp(stamps["Requeued job"].replace(",", "."))
    assert CRED_EXPIRE_S <= held.total_seconds() < CRED_EXPIRE_S + 30, (held, s.diagnostics())
    # the resumed run re-logged the interrupted episode: one row per episode, none twice
    assert pd.read_csv(run / "train.csv")["env_step"].tolist() == [1000, 2000]
    # the untouched job ran once
    other = (s.sweep / ".submitit" / f"{s.array_id}_0" / f"{s.array_id}_0_0_log.out").read_text()
    assert other.count("Starting with JobEnvironment") == 1 and "[resume]" not in other


# ----------------------------------------------------------------------------------------- prune sweep
def _run_multirun(cluster, cmd: list[str], sweep: Path, cwd: Path, timeout_s: float = SWEEP_TIMEOUT_S):
    env = {**cluster.env, "MUJOCO_GL": "disable", "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}
    try:
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode(errors="replace") + (err.stderr or b"").decode(errors="replace")
        pytest.fail(f"multirun did not finish in {timeout_s}s\n{_diagnostics(cluster, sweep, out)}", pytrace=False)


@pytest.mark.slurm
@pytest.mark.slow
def test_prune_sweep_on_slurm_writes_results_records_failures_and_skips_completed(
        slurm_cluster, tracked_checkpoint, tmp_path):  # noqa: F811
    cluster = slurm_cluster
    corrupt = tmp_path / "broken" / "run" / "checkpoint.pt"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"not a checkpoint")
    sweep = tmp_path / "multirun"
    job_args = ["metric=fisher,l1", "ratio=0.5", "finetune_steps=0", "eval_episodes=1", "num_threads=1",
                "latency_min_run_time=0.02", "logger.wandb.mode=disabled", "logger.progress=false"]
    launcher = ["hydra/launcher=submitit_slurm", f"hydra.launcher.partition={cluster.partition}",
                "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10",
                f"hydra.sweep.dir={sweep}"]
    prune = [sys.executable, str(ROOT / "scripts" / "prune.py"), "-m"]
    res = _run_multirun(cluster, [*prune, f"checkpoint={tracked_checkpoint},{corrupt}", *job_args, *launcher],
                        sweep, tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 1, _diagnostics(cluster, sweep, out)
    assert "error: 2 job(s) of the sweep failed (the others completed)" in res.stderr
    [array] = [p for p in (sweep / ".submitit").iterdir() if p.is_dir() and "_" not in p.name]
    script = (array / f"{array.name}_submission.sh").read_text()
    assert "#SBATCH --array=0-3%" in script and f"#SBATCH --partition={cluster.partition}" in script
    results = sorted(sweep.rglob("result.json"))
    errors = sorted(sweep.rglob("error.json"))
    assert len(results) == 2 and len(errors) == 2, _diagnostics(cluster, sweep, out)
    by_metric = {r["metric"]: r for r in (json.loads(p.read_text()) for p in results)}
    assert set(by_metric) == {"fisher", "l1"}
    for r in by_metric.values():
        assert r["task"] == "cartpole-swingup" and r["ratio"] == 0.5 and r["checkpoint"] == str(tracked_checkpoint)
        assert r["params"] < r["params_dense"] and r["flops_plan"] > 0 and r["latency_plan_ms"] > 0
    for p in errors:
        info = json.loads(p.read_text())
        assert "broken_run" in str(p) and info["error"] == "CheckpointError" and "checkpoint.pt" in info["message"]
    # every array task ran as a SLURM job and returned (the failed ones return after writing error.json)
    for task in range(4):
        with open(sweep / ".submitit" / f"{array.name}_{task}" / f"{array.name}_{task}_0_result.pkl", "rb") as f:
            status, _ = pickle.load(f)
        assert status == "success"

    # Re-launch the good half into the same sweep dir: both jobs are skipped, nothing is rewritten.
    mtimes = {p: p.stat().st_mtime_ns for p in results}
    again = _run_multirun(cluster, [*prune, f"checkpoint={tracked_checkpoint}", *job_args, *launcher], sweep, tmp_path)
    assert again.returncode == 0, _diagnostics(cluster, sweep, again.stdout + again.stderr)
    logs = sorted(sweep.glob(".submitit/*/*_log.out"))
    assert sum("skipped (skip_completed=true)" in p.read_text() for p in logs) == 2
    assert {p: p.stat().st_mtime_ns for p in results} == mtimes


@pytest.mark.slurm
@pytest.mark.slow
def test_a_partition_sbatch_refuses_is_one_line_and_exit_2(slurm_cluster, tmp_path):  # noqa: F811
    """sbatch refusing the sweep (a mistyped partition) ended in a 51-line submitit traceback with exit 1; now
    sbatch's own lines and one error line, exit 2."""
    sweep = tmp_path / "multirun"
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "-m", "hydra/launcher=slurm",
           "hydra.launcher.partition=no_such_partition", f"hydra.sweep.dir={sweep}", "seed=1,2", "logger=disabled",
           *tiny_cli(steps=100)]
    res = _run_multirun(slurm_cluster, cmd, sweep, tmp_path, timeout_s=120)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in res.stdout + res.stderr and all(ln.startswith("sbatch: ") for ln in lines[:-1])
    assert lines[-1].startswith("error: SLURM refused the sweep (sbatch: error: ") and "partition" in lines[-1]
