"""The prune job (pruning/study/prune_job.py, scripts/prune.py) on a tiny tracked checkpoint (conftest)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from wandb_records import read_wandb_records, wandb_items

from tdmpc.config import LoggerConfig

ROOT = Path(__file__).resolve().parents[1]
PRUNE = [sys.executable, str(ROOT / "scripts" / "prune.py")]
FAST = {"finetune_steps": 1000, "eval_episodes": 1, "latency_min_run_time": 0.05, "num_threads": 1}


def _job(ckpt: Path, **kw):
    from pruning.study.prune_job import PruneJobConfig

    job = PruneJobConfig(checkpoint=str(ckpt), **{**FAST, **kw})
    job.logger.wandb.mode = "disabled"
    job.logger.progress = False
    return job


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MUJOCO_GL": "disable", "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([*PRUNE, *args, "logger.wandb.mode=disabled", "logger.progress=false"], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_prune_job_shrinks_finetunes_and_measures(tracked_checkpoint, tmp_path):
    from pruning.study.prune_job import run_prune_job
    from tdmpc.checkpoint import load_checkpoint

    res = run_prune_job(_job(tracked_checkpoint, metric="fisher", ratio=0.5), tmp_path / "job")
    for key in ("task", "seed", "metric", "ratio", "scope", "finetune_steps", "dense_return", "return_mean",
                "return_std", "params", "params_dense", "flops_policy", "flops_plan", "latency_policy_ms",
                "latency_plan_ms", "latency_policy_iqr_ms", "latency_plan_iqr_ms", "widths", "git_commit",
                "config"):
        assert key in res, key
    assert res["task"] == "cartpole-swingup" and res["metric"] == "fisher" and res["ratio"] == 0.5
    assert res["params"] < 0.75 * res["params_dense"]
    # budget=flops (default): the planned-action FLOPs fell by 50 % to within 1 %
    assert res["budget"] == "flops" and abs(res["flops_plan"] / res["flops_plan_dense"] - 0.5) <= 0.01
    assert res["flops_ratio_achieved"] == pytest.approx(1 - res["flops_plan"] / res["flops_plan_dense"])
    assert res["widths"]["encoder"][-1] % 8 == 0  # latent pruned in whole SimNorm groups
    assert res["latency_plan_ms"] > 0 and res["flops_plan"] > res["flops_policy"] > 0
    # the return right after pruning, before fine-tuning, is recorded; the dense return is the training run's
    post = json.loads((tmp_path / "job" / "post_prune.json").read_text())
    assert res["return_post_prune"] == post["return_mean"] and post["episodes"] == 1
    # (read from the training run's eval.csv: the trained return itself depends on the CPU's kernel rounding)
    with open(tracked_checkpoint.parent / "eval.csv") as f:
        last = list(__import__("csv").DictReader(f))[-1]
    assert res["dense_return"] == pytest.approx(float(last["return_mean"]), abs=1e-6) and res["dense_return"] > 0
    on_disk = json.loads((tmp_path / "job" / "result.json").read_text())
    assert on_disk["params"] == res["params"]
    # Fine-tuning ran 1000 env steps past training and saved the pruned model.
    state = load_checkpoint(tmp_path / "job" / "checkpoint.pt")
    assert state["counters"]["env_step"] == 3000
    assert state["agent"]["widths"] == res["widths"]


@pytest.mark.slow
def test_channel_budget_removes_that_fraction_of_the_channels(tracked_checkpoint, tmp_path):
    from pruning.study.prune_job import run_prune_job

    res = run_prune_job(_job(tracked_checkpoint, metric="l2", ratio=0.5, budget="channels", finetune_steps=0),
                        tmp_path / "job")
    # Half the channels of the scored groups are gone (global ranking: per layer it varies; the latent goes
    # in whole SimNorm groups of 8, so the count can fall short by less than one group).
    assert 0.5 - 8 / 373 <= res["channel_ratio_achieved"] <= 0.5
    assert res["flops_ratio_achieved"] > 0.3


@pytest.mark.slow
def test_ratio_zero_is_dense_reference(tracked_checkpoint, tmp_path):
    from pruning.study.prune_job import run_prune_job

    res = run_prune_job(_job(tracked_checkpoint, metric="l1", ratio=0.0, finetune_steps=0), tmp_path / "dense")
    assert res["params"] == res["params_dense"]
    assert res["widths"] == res["widths_dense"]


@pytest.mark.slow
def test_skip_completed_and_resume_from_own_checkpoint(tracked_checkpoint, tmp_path):
    from pruning.study.prune_job import run_prune_job

    run_dir = tmp_path / "job"
    first = run_prune_job(_job(tracked_checkpoint, metric="bayes", ratio=0.25), run_dir)
    mtime = (run_dir / "result.json").stat().st_mtime_ns
    again = run_prune_job(_job(tracked_checkpoint, metric="bayes", ratio=0.25), run_dir)
    assert again == first and (run_dir / "result.json").stat().st_mtime_ns == mtime
    # A job killed after its checkpoint (no result.json) resumes with the pruned widths from it.
    (run_dir / "result.json").unlink()
    resumed = run_prune_job(_job(tracked_checkpoint, metric="bayes", ratio=0.25), run_dir)
    assert resumed["widths"] == first["widths"] and resumed["params"] == first["params"]


@pytest.mark.slow
def test_random_metric_depends_on_job_seed(tracked_checkpoint, tmp_path):
    from pruning.study.prune_job import run_prune_job

    a = run_prune_job(_job(tracked_checkpoint, metric="random", ratio=0.5, finetune_steps=0, seed=1), tmp_path / "a")
    b = run_prune_job(_job(tracked_checkpoint, metric="random", ratio=0.5, finetune_steps=0, seed=2), tmp_path / "b")
    assert a["params"] != b["params"] or a["widths"] != b["widths"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("metric=fishr", "metric='fishr'"),
        ("ratio=1.0", "ratio=1.0"),
        ("ratio=-0.1", "ratio=-0.1"),
        ("scope=layer", "scope='layer'"),
    ],
)
@pytest.mark.slow
def test_bad_settings_fail_with_one_line(tracked_checkpoint, tmp_path, override, message):
    r = _cli(f"checkpoint={tracked_checkpoint}", override, f"run_dir={tmp_path / 'bad'}", cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid config") and message in lines[0], r.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_missing_or_corrupt_checkpoint(tmp_path):
    r = _cli(f"checkpoint={tmp_path / 'nope.pt'}", f"run_dir={tmp_path / 'x'}", cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "nope.pt" in r.stderr
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint")
    r = _cli(f"checkpoint={bad}", f"run_dir={tmp_path / 'y'}", cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "corrupt.pt" in r.stderr


@pytest.mark.slow
def test_multirun_basic_launcher_skips_completed_and_survives_a_failure(tracked_checkpoint, tmp_path):
    corrupt = tmp_path / "other" / "run" / "checkpoint.pt"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"garbage")
    sweep = tmp_path / "sweep"
    args = ["-m", f"checkpoint={tracked_checkpoint},{corrupt}", "metric=fisher,l1", "ratio=0.5", "finetune_steps=0",
            "eval_episodes=1", "latency_min_run_time=0.02", "num_threads=1", f"hydra.sweep.dir={sweep}"]
    r = _cli(*args, cwd=tmp_path)
    assert r.returncode == 1, r.stderr[-2000:]
    results = sorted(sweep.rglob("result.json"))
    errors = sorted(sweep.rglob("error.json"))
    assert len(results) == 2 and len(errors) == 2
    assert {json.loads(p.read_text())["metric"] for p in results} == {"fisher", "l1"}
    assert all("corrupt" not in str(p) and "other_run" in str(p) for p in errors)
    assert "2 job(s) of the sweep failed" in r.stderr
    # Re-launch into the same sweep dir: completed jobs are skipped (result files untouched).
    mtimes = {p: p.stat().st_mtime_ns for p in results}
    r2 = _cli(*[a for a in args if not a.startswith("checkpoint=")], f"checkpoint={tracked_checkpoint}", cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert r2.stdout.count("skipped") == 2
    assert {p: p.stat().st_mtime_ns for p in results} == mtimes


@pytest.mark.slow
@pytest.mark.usefixtures("wandb_env")
def test_prune_run_logged_to_wandb_offline(tracked_checkpoint, tmp_path):
    """What a prune run writes to W&B (read back from the offline run folder): grouped by sweep with
    job_type=prune, the config flattened (so runs group by task/metric/ratio/seed), the eval curve, every
    result.json field as summary, and the training importance heat-map of its metric as an image."""
    pytest.importorskip("wandb")
    from pruning.study.prune_job import run_prune_job

    job = _job(tracked_checkpoint, metric="fisher", ratio=0.5, seed=3)
    job.logger.wandb.mode = "offline"
    job.logger.wandb.group = "sweep-p"
    run_dir = tmp_path / "job"
    res = run_prune_job(job, run_dir)
    [offline] = sorted((run_dir / "wandb").glob("offline-run-*"))
    [log] = list(offline.glob("run-*.wandb"))
    records = read_wandb_records(log)
    by_type: dict[str, list] = {}
    for record in records:
        by_type.setdefault(record.WhichOneof("record_type"), []).append(record)
    [run] = by_type["run"]
    assert run.run.run_group == "sweep-p" and run.run.job_type == "prune"
    config = wandb_items(run.run.config.update)
    assert config["prune.metric"] == "fisher" and config["prune.ratio"] == 0.5 and config["prune.seed"] == 3
    assert config["task"] == "cartpole-swingup" and config["seed"] == 3 and config["prune.finetune_steps"] == 1000
    history = [wandb_items(r.history.item) for r in by_type["history"]]
    [evals] = [h for h in history if "eval/return_mean" in h]
    assert evals["eval/return_mean"] == pytest.approx(res["return_mean"]) and evals["env_step"] == 3000
    [image] = [h for h in history if "importance/importance_training_fisher/_type" in h]
    assert image["importance/importance_training_fisher/_type"] == "image-file"
    assert (run_dir / "importance_training_fisher.png").stat().st_size > 1000
    summary: dict = {}
    for record in by_type["summary"]:
        summary.update(wandb_items(record.summary.update))
    for key in ("return_mean", "return_std", "dense_return", "params", "params_dense", "flops_policy", "flops_plan",
                "latency_policy_ms", "latency_plan_ms", "latency_plan_iqr_ms", "metric", "ratio", "scope", "task"):
        assert summary[key] == pytest.approx(res[key]) if isinstance(res[key], float) else summary[key] == res[key], key
    for component, widths in res["widths"].items():
        assert summary[f"widths.{component}"] == widths
    assert summary["params_by_component.total"] == res["params"]


def test_the_dense_return_is_the_last_evaluation_the_checkpoint_holds(tmp_path):
    from pruning.study.prune_job import _dense_return

    (tmp_path / "eval.csv").write_text("env_step,return_mean\n2000,100.0\n4000,300.0\n6000,50.0\n")
    ckpt = tmp_path / "checkpoint.pt"
    assert _dense_return(ckpt, 4000) == 300.0  # a killed run evaluated at 6000 after its checkpoint at 4000
    assert _dense_return(ckpt) == 50.0 and _dense_return(tmp_path / "none" / "checkpoint.pt", 4000) is None


def test_a_sweep_over_checkpoints_that_would_share_run_dirs_is_refused_before_any_job(tmp_path):
    from pruning.study.sweep import swept_checkpoints, tag_collisions

    a, b = tmp_path / "expA/train/cartpole-swingup/seed1", tmp_path / "expB/train/cartpole-swingup/seed1"
    paths = swept_checkpoints([f"checkpoint='{a}/checkpoint.pt',{b}/checkpoint.pt", "metric=l1"])
    assert paths == [f"{a}/checkpoint.pt", f"{b}/checkpoint.pt"]
    assert tag_collisions(paths) == [("cartpole-swingup_seed1", paths)]
    assert tag_collisions([paths[0], paths[0]]) == [] and swept_checkpoints(["metric=l1"]) == []
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "prune.py"), "-m", f"checkpoint={a}/checkpoint.pt,"
                           f"{b}/checkpoint.pt", f"hydra.sweep.dir={tmp_path}/sweep"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={**os.environ, "MUJOCO_GL": "disable"})
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: invalid config: checkpoint=") and "cartpole-swingup_seed1" in proc.stderr
    assert not (tmp_path / "sweep").exists()


def test_latency_threads_names_its_own_run_dir_and_the_timing_length_does_not():
    import yaml

    from pruning.study.prune_config import PruneJobConfig, job_identity_settings

    excluded = yaml.safe_load((ROOT / "conf" / "prune.yaml").read_text())["hydra"]["job"]["config"][
        "override_dirname"]["exclude_keys"]
    assert "latency_threads" not in excluded and "latency_min_run_time" in excluded
    base = job_identity_settings(PruneJobConfig())
    assert job_identity_settings(PruneJobConfig(latency_threads=2)) != base  # two jobs, two results
    assert job_identity_settings(PruneJobConfig(latency_min_run_time=0.02)) == base  # a shorter timing of the same


def test_a_checkpoint_without_evidence_for_the_metric_is_refused_not_pruned_by_index(tmp_path):
    """A training run that stopped before its first tracked update leaves fisher's scores all zero; pruning
    by them would remove channels in index order and report it as fisher's result."""
    from conftest import tiny_cfg

    from pruning.config import TrackingConfig
    from pruning.study.prune_job import PruneJobConfig, _scores, _Source
    from pruning.tracker import ImportanceTracker
    from tdmpc.checkpoint import CheckpointError
    from tdmpc.world_model import WorldModel

    model = WorldModel(5, 1, tiny_cfg().model)
    untracked = ImportanceTracker(model, TrackingConfig(metrics=["fisher", "l1"], snapshot_interval=0))
    assert not untracked.has_evidence("fisher") and untracked.has_evidence("l1")
    src = _Source(tmp_path / "checkpoint.pt", {}, {"pruning": {"metrics": ["fisher", "l1"]}}, untracked.state_dict())
    untracked.close()
    with pytest.raises(CheckpointError, match="holds no evidence for metric=fisher: its training run tracked 0 upd"):
        _scores(PruneJobConfig(checkpoint=str(src.path), metric="fisher"), model, src)
    assert set(_scores(PruneJobConfig(checkpoint=str(src.path), metric="l1"), model, src))  # weights: fine


def test_budget_channels_counts_the_latent_only_when_the_job_may_prune_it():
    from conftest import tiny_cfg

    from pruning.study.prune_job import _channels
    from tdmpc.world_model import WorldModel

    model = WorldModel(5, 1, tiny_cfg().model)
    latent = model.widths()["encoder"][-1]
    assert _channels(model, prune_latent=False) == _channels(model) - latent  # the set ratio= is taken of


@pytest.mark.parametrize("override, expected", [
    ({"seed": -1}, "seed=-1; allowed: an integer 0 .. "), ({"num_threads": -1}, "num_threads=-1"),
    ({"latency_min_run_time": float("inf")}, "latency_min_run_time=inf; allowed: a finite number > 0"),
    ({"logger": LoggerConfig(console_every=0)}, "logger.console_every=0"),
])
def test_the_fine_tunes_own_settings_are_checked_before_the_run_dir_is_claimed(override, expected):
    """Checked only by the fine-tune's training config, after the claim (which may move a finished job aside);
    latency_min_run_time=inf hung the job."""
    from pruning.study.prune_config import PruneJobConfig, validate_prune_job

    with pytest.raises(ValueError, match=re.escape(expected)):
        validate_prune_job(PruneJobConfig(checkpoint="x.pt", **override))
