import os

import pytest
import torch
from hypothesis import settings

# Property tests draw the same examples on every run (deterministic CI); explore more locally with
# `pytest --hypothesis-profile=explore`.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None)
settings.load_profile("ci")

os.environ.setdefault("MUJOCO_GL", "disable")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HYDRA_FULL_ERROR", "0")

# Overrides that make a training run take seconds (tiny widths, tiny planner, short seeding).
TINY = {
    "model_size": "cpu",
    "model.enc_dim": 32,
    "model.mlp_dim": 32,
    "model.latent_dim": 16,
    "model.num_q": 2,
    "model.num_bins": 21,
    "planner.iterations": 2,
    "planner.num_samples": 16,
    "planner.num_elites": 4,
    "planner.num_pi_trajs": 2,
    "optim.batch_size": 16,
    "seed_steps": 1000,
    "eval_episodes": 1,
    "num_threads": 1,
    "logger.wandb.mode": "disabled",
    "logger.progress": False,
}


def tiny_cfg(**overrides):
    """A validated tiny TrainConfig; keyword overrides use '__' for nesting (model__mlp_dim=8)."""
    from tdmpc.config import TrainConfig, validate

    cfg = TrainConfig()
    for key, value in {**TINY, **{k.replace("__", "."): v for k, v in overrides.items()}}.items():
        target = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            target = getattr(target, p)
        setattr(target, parts[-1], value)
    return validate(cfg)


def run_train_cli(args, cwd):
    """Run ``scripts/train.py`` with ``args`` in a subprocess with a minimal environment (no user W&B key)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "train.py"
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={"MUJOCO_GL": "disable", "PATH": "/usr/bin:/bin", "HOME": str(cwd),
                                            "WANDB_SILENT": "true"})


def tiny_cli(**overrides) -> list[str]:
    return [f"{k}={v}" for k, v in {**TINY, **overrides}.items()]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tracked_checkpoint(tmp_path_factory):
    """``checkpoint.pt`` of a tiny cartpole run (2 episodes, the second with updates) that tracked every
    metric, next to its ``eval.csv`` and ``importance.parquet``; shared by the prune-job and sweep tests."""
    from pruning.config import TrackingConfig
    from pruning.study.integration import attach_tracker
    from tdmpc.trainer import Trainer

    torch.manual_seed(0)
    run_dir = tmp_path_factory.mktemp("train") / "cartpole-swingup" / "seed1"
    trainer = Trainer(tiny_cfg(steps=2000, eval_freq=2000), run_dir)
    tracker = attach_tracker(trainer, TrackingConfig(snapshot_interval=50))
    trainer.train()
    assert tracker.num_steps > 0 and (run_dir / "importance.parquet").is_file()
    return run_dir / "checkpoint.pt"


# Environment variables that would change what wandb does; cleared so the host's settings cannot leak in.
WANDB_ENV = ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_DISABLED", "WANDB_ENTITY", "WANDB_PROJECT",
             "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_RUN_GROUP", "WANDB_JOB_TYPE", "WANDB_TAGS", "WANDB_NAME",
             "WANDB_NOTES", "WANDB_CONSOLE", "NETRC")


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """Point HOME and every wandb folder into tmp_path, silence wandb, and drop API keys and overrides."""
    for name in WANDB_ENV:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))
    monkeypatch.setenv("WANDB_ARTIFACT_DIR", str(tmp_path / "wandb_artifacts"))
    return home


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """A finished tiny training run (2000 env steps) with its checkpoint; copied by each test that changes it."""
    base = tmp_path_factory.mktemp("faults")
    run = base / "R"
    from fault_helpers import train_args

    res = run_train_cli(train_args(run), base)
    assert res.returncode == 0, res.stderr[-3000:]
    return run


@pytest.fixture()
def sweep(tmp_path):
    """A generated prune sweep with one failed job and a training run's importance (tests/report_fixtures.py)."""
    from report_fixtures import make_sweep

    return make_sweep(tmp_path)
