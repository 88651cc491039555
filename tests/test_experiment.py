"""The main job (pruning/study/experiment.py, scripts/experiment.py) end to end at a tiny size: train with
tracking -> a sweep of 2 metrics x 2 ratios (plus the dense reference) -> report, once through Hydra's
``basic`` launcher and once through the ``local`` launcher (reusing the trained run: the experiment resumes)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = ["model.enc_dim=32", "model.mlp_dim=32", "model.latent_dim=16", "model.num_q=2", "model.num_bins=21",
              "planner.iterations=2", "planner.num_samples=16", "planner.num_elites=4", "planner.num_pi_trajs=2",
              "optim.batch_size=16", "seed_steps=1000", "pruning.snapshot_interval=20"]
EXPECTED = {("l1", 0.0), ("fisher", 0.25), ("fisher", 0.5), ("l1", 0.25), ("l1", 0.5)}


def _experiment(out: Path, launcher: str) -> subprocess.CompletedProcess:
    quoted = ",".join(f'"{o}"' for o in TINY_TRAIN)
    cmd = [sys.executable, str(ROOT / "scripts" / "experiment.py"), "name=tiny", f"out_dir={out}", "train_steps=2000",
           "train_eval_episodes=1", "metrics=[fisher,l1]", "ratios=[0.25,0.5]", "finetune_steps=0", "eval_episodes=1",
           "wandb_mode=disabled", f"launcher={launcher}", "train_threads=1", f"train_overrides=[{quoted}]",
           'prune_overrides=["latency_min_run_time=0.02"]', f"hydra.run.dir={out}/.hydra_main"]
    env = {**os.environ, "MUJOCO_GL": "disable", "WANDB_MODE": "disabled"}
    return subprocess.run(cmd, cwd=out.parent, env=env, capture_output=True, text=True, timeout=600)


def _check_report(out: Path, res: subprocess.CompletedProcess) -> pd.DataFrame:
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # the summary table ends the output
    assert "tiny: return vs FLOPs vs latency (cartpole-swingup)" in res.stdout
    tail = res.stdout[res.stdout.index("tiny: return vs FLOPs vs latency"):]
    assert "dense" in tail and "fisher" in tail and "l1" in tail
    report = out / "report"
    results = pd.read_csv(report / "results.csv")
    assert {(m, float(r)) for m, r in zip(results["metric"], results["ratio"])} == EXPECTED and len(results) == 5
    assert (results["task"] == "cartpole-swingup").all() and (results["finetune_steps"] == 0).all()
    dense = results[results["ratio"] == 0].iloc[0]
    for metric in ("fisher", "l1"):  # more pruning: fewer FLOPs and parameters, below the dense reference
        rows = results[(results["metric"] == metric) & (results["ratio"] > 0)].sort_values("ratio")
        assert rows["flops_plan"].is_monotonic_decreasing and rows["params"].is_monotonic_decreasing
        assert (rows["flops_plan"] < dense["flops_plan"]).all() and (rows["params"] < dense["params"]).all()
    assert "## cartpole-swingup" in (report / "summary.md").read_text()
    for stem in ("pareto_flops_cartpole-swingup", "pareto_latency_cartpole-swingup", "importance_cartpole-swingup"):
        png = report / f"{stem}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, png
    return results


@pytest.fixture(scope="module")
def basic_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiment") / "basic"
    return out, _experiment(out, "basic")


@pytest.mark.slow
def test_experiment_basic_launcher_end_to_end(basic_run):
    out, res = basic_run
    results = _check_report(out, res)
    assert len(list((out / "train").rglob("checkpoint.pt"))) == 1
    assert not (out / "prune" / ".submitit").exists()  # basic: jobs ran inside the Hydra processes
    # dense reference: the trained model, measured through the same code path
    dense = results[results["ratio"] == 0].iloc[0]
    assert dense["params"] == dense["params_dense"]


@pytest.mark.slow
def test_experiment_local_launcher_reuses_the_trained_run(basic_run, tmp_path):
    src, first = basic_run
    assert first.returncode == 0
    out = tmp_path / "local"
    shutil.copytree(src / "train", out / "train")
    train_csv = next((out / "train").rglob("train.csv"))
    rows_before = len(pd.read_csv(train_csv))
    res = _experiment(out, "local")
    results = _check_report(out, res)
    assert len(pd.read_csv(train_csv)) == rows_before  # training resumed at its end: nothing retrained
    jobs = sorted((out / "prune" / ".submitit").glob("*/*_result.pkl"))
    assert len(jobs) == 5, jobs  # every prune job ran as a submitit job
    # same checkpoint, same deterministic pruning: the widths match the basic launcher's sweep
    basic = pd.read_csv(src / "report" / "results.csv").set_index(["metric", "ratio"]).sort_index()
    local = results.set_index(["metric", "ratio"]).sort_index()
    assert (basic["params"] == local["params"]).all() and (basic["flops_plan"] == local["flops_plan"]).all()


@pytest.mark.slow
def test_experiment_prints_every_stage_and_counts_prune_jobs(basic_run):
    out, res = basic_run
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("[experiment]")]
    assert lines[0].startswith("[experiment] stage 1/3 training: 1 run(s) of 2000 env steps")
    assert "[experiment] stage 2/3 pruning: 5 jobs (dense + 2 metrics x 2 flops budgets" in res.stdout
    counts = [ln for ln in lines if "jobs done" in ln]
    assert [c.split(": ")[1].split(" jobs")[0] for c in counts] == [f"{i}/5" for i in range(1, 6)]
    assert "ETA" in counts[0] and "ETA" not in counts[-1]
    assert lines[-1] == "[experiment] stage 3/3 report"
    log = (out / "experiment.log").read_text()
    assert all(ln in log for ln in lines) and "[train] env_step" in log and "[prune] return" in log


@pytest.mark.parametrize("override, expected", [
    ("prune_seeds=[]", "prune_seeds=[]"), ("scope=globl", "scope='globl'"), ("num_threads=-3", "num_threads=-3"),
    ("train_threads=-1", "train_threads=-1"), ("wandb_mode=onlin", "wandb_mode='onlin'"),
    ("metrics=[fisher,l1,fisher]", "metrics=['fisher', 'l1', 'fisher']; allowed: a list without repeats"),
    ("prune_seeds=[-1]", "prune_seeds=[-1]; allowed: a non-empty list of integers 0 .. "),  # failed after training
    ("seeds=[1,-2]", "seeds=[1, -2]; allowed: a non-empty list of integers 0 .. "),
])
@pytest.mark.slow
def test_experiment_refuses_bad_settings_before_training(tmp_path, override, expected):
    out = tmp_path / "exp"
    cmd = [sys.executable, str(ROOT / "scripts" / "experiment.py"), f"out_dir={out}", override,
           f"hydra.run.dir={tmp_path}/.hydra_main"]
    res = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "MUJOCO_GL": "disable"}, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and expected in lines[0] and "allowed" in lines[0], res.stderr
    assert not out.exists()


@pytest.mark.slow
def test_experiment_refuses_a_dir_owned_by_another_job(tmp_path):
    from tdmpc.run_dir import claim, identity

    out = tmp_path / "train_run"
    claim(out, "train", identity({"seed": 1})).release()
    before = sorted(p.name for p in out.iterdir())
    cmd = [sys.executable, str(ROOT / "scripts" / "experiment.py"), f"out_dir={out}",
           f"hydra.run.dir={tmp_path}/.hydra_main"]
    res = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "MUJOCO_GL": "disable"}, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "belongs to a train job, this is an experiment job" in lines[0], res.stderr
    assert sorted(p.name for p in out.iterdir()) == before


@pytest.mark.slow
def test_experiment_ctrl_c_stops_every_stage_in_one_line_and_the_rerun_resumes(tmp_path):
    import signal
    import time

    out = tmp_path / "exp"
    quoted = ",".join(f'"{o}"' for o in TINY_TRAIN)
    cmd = [sys.executable, str(ROOT / "scripts" / "experiment.py"), "name=tiny", f"out_dir={out}",
           "train_steps=3000", "train_eval_episodes=1", "metrics=[l1]", "ratios=[0.5]", "finetune_steps=0",
           "eval_episodes=1", "wandb_mode=disabled", "train_threads=1", f"train_overrides=[{quoted}]",
           'prune_overrides=["latency_min_run_time=0.02"]', f"hydra.run.dir={out}/.hydra_main"]
    env = {**os.environ, "MUJOCO_GL": "disable", "WANDB_MODE": "disabled"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a terminal
    t0, seen, log_size = time.monotonic(), [], 0
    for line in proc.stdout:
        seen.append(line)
        if "[train] env_step     2000" in line:  # the training stage is running
            log_size = (out / "experiment.log").stat().st_size  # followable while the stage runs
            proc.send_signal(signal.SIGINT)
            break
        assert time.monotonic() - t0 < 300
    rest, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, "".join(seen) + rest + err
    assert log_size > 0 and "[train] env_step     2000" in (out / "experiment.log").read_text()
    assert err.strip().splitlines() == [
        "interrupted during the training stage; re-run the same command to resume (finished work is kept)"]
    assert "interrupted during" not in rest  # said once (stdout repeated it)
    assert "[experiment] interrupted during the training stage" in (out / "experiment.log").read_text()
    ckpt = next((out / "train").rglob("checkpoint.pt"))
    import torch

    assert torch.load(ckpt, weights_only=True)["counters"]["env_step"] >= 2000
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "[resume]" in again.stdout and "pruning: 2/2 jobs done" in again.stdout


@pytest.mark.slow
def test_presets_compose_from_their_python_definitions(tmp_path):
    import yaml

    from pruning.study.experiment import PRESETS, ExperimentConfig

    for name, preset in PRESETS.items():
        res = subprocess.run([sys.executable, str(ROOT / "scripts" / "experiment.py"), f"experiment={name}", "--cfg",
                              "job"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        composed = yaml.safe_load(res.stdout)
        expected = {**dataclasses.asdict(ExperimentConfig()), **preset}
        assert composed == expected
    assert PRESETS["paper"]["model_size"] == "5" and PRESETS["paper"]["launcher"] == "slurm"


def test_a_stage_with_undecodable_output_or_an_unwritable_log_is_a_failure_not_a_success(tmp_path, monkeypatch):
    from pruning.study import stages

    def stage(code: int) -> list[str]:
        return [sys.executable, "-c", f"import sys; sys.stdout.buffer.write(b'warning \\xff\\n'); sys.exit({code})"]

    with pytest.raises(stages.StageFailed, match="exit status 3"):  # the bytes used to end the reader thread
        stages.run_stages([stage(3)], [tmp_path / "a.log"], "training stage")
    stages.run_stages([stage(0)], [tmp_path / "b.log"], "training stage")  # replaced, not fatal
    assert "warning \ufffd" in (tmp_path / "b.log").read_text()

    def full_disk(proc, log, counter):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(stages, "_stream", full_disk)
    with pytest.raises(stages.StageFailed, match="could not be logged"):
        stages.run_stages([stage(0)], [tmp_path / "c.log"], "training stage")


def test_only_the_configured_training_runs_are_pruned(tmp_path):
    from pruning.study.experiment import ExperimentConfig, checkpoints

    train = tmp_path / "train"
    for run in ("cartpole-swingup/seed1", "cartpole-swingup/seed2", "cartpole-swingup/seed1.old-20261206-100000"):
        (train / run).mkdir(parents=True)
        (train / run / "checkpoint.pt").write_bytes(b"")
    cfg = ExperimentConfig(tasks=["cartpole-swingup"], seeds=[1])  # seed 2: an earlier run's, not asked for now
    assert checkpoints(train, cfg) == [train / "cartpole-swingup" / "seed1" / "checkpoint.pt"]


def test_a_stop_signal_reaches_a_stages_jobs_but_not_submitits_local_controllers(tmp_path):
    """Ctrl-C on the main job with launcher=local stopped the stage's launcher only: its job, a child of
    submitit's controller, went on training to the end while the main job waited. The signal now goes to every
    process of the stage's group except the controllers (which would signal the job twice and kill it a second
    later, mid-checkpoint)."""
    from pruning.study.stages import _group_members

    sleeper = "import time; time.sleep(300)"
    leader = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time\n"
                               f"a = subprocess.Popen([sys.executable, '-c', {sleeper!r}])\n"
                               f"b = subprocess.Popen([sys.executable, '-c', {sleeper!r}, 'submitit.local.' + '_local'])\n"
                               "print(a.pid, b.pid, flush=True)\ntime.sleep(300)"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = leader.stdout.readline()
        job, controller = map(int, line.split())
        members = _group_members(leader.pid)
        cmdlines = {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:200] for pid in {*members, job, controller}
                    if Path(f"/proc/{pid}/cmdline").exists()}
        assert sorted(members) == sorted([leader.pid, job]), (line, members, cmdlines)
        assert controller not in members and _group_members(2 ** 22 + 7) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()
