"""Config validation and the scripts/train.py entry point end to end."""

from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import run_train_cli, tiny_cfg, tiny_cli

from tdmpc.config import MODEL_SIZES, ConfigError, TrainConfig, validate

ROOT = Path(__file__).resolve().parents[1]


def test_presets_fill_unset_widths_and_keep_explicit_ones():
    cfg = validate(TrainConfig(model_size="5"))
    assert (cfg.model.mlp_dim, cfg.model.latent_dim, cfg.model.num_q) == (512, 512, 5)
    assert (cfg.planner.iterations, cfg.planner.num_samples) == (6, 512)
    cpu = validate(TrainConfig())
    assert cpu.model.mlp_dim == MODEL_SIZES["cpu"]["mlp_dim"] and cpu.planner.iterations == 4
    assert tiny_cfg().model.mlp_dim == 32


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"task": "cartpole-swingupp"}, "task"),
        ({"model_size": "7"}, "model_size"),
        ({"steps": 0}, "steps"),
        ({"device": "tpu"}, "device"),
        ({"model__latent_dim": 20}, "model.latent_dim"),
        ({"model__num_q": 1}, "model.num_q"),
        ({"planner__num_elites": 1000}, "planner.num_elites"),
        ({"optim__rho": 1.5}, "optim.rho"),
        ({"logger__wandb__mode": "cloud"}, "logger.wandb.mode"),
        ({"eval_episodes": 0}, "eval_episodes"),
        # infinite floats passed the comparisons and failed later with a traceback
        ({"optim__lr": float("inf")}, "optim.lr"),
        ({"model__vmin": float("-inf")}, "model.vmin"),
        ({"planner__temperature": float("inf")}, "planner.temperature"),
        ({"updates_per_step": float("inf")}, "updates_per_step"),
        ({"optim__discount_denom": float("inf")}, "optim.discount_denom"),
        ({"seed": 2**32 - 10_000}, "seed"),  # its evaluation env would be seeded with 2**32: numpy refuses
        ({"optim__discount_max": 1.0}, "optim.discount_max"),  # the key set is the key named
        ({"planner__max_std": -1.0}, "planner.max_std"),
    ],
)
def test_bad_values_name_key_value_and_allowed(overrides, key):
    with pytest.raises(ConfigError) as err:
        tiny_cfg(**overrides)
    msg = str(err.value)
    assert f"{key}=" in msg and "allowed" in msg and "\n" not in msg
    value = list(overrides.values())[0]
    assert repr(value) in msg


def test_task_defaults_replace_null_and_keep_explicit_values():
    from tdmpc.config import with_task_defaults

    assert with_task_defaults({"task": "cartpole-swingup", "action_repeat": None, "seed_steps": None}) == {
        "task": "cartpole-swingup", "action_repeat": 8, "seed_steps": 8000}
    assert with_task_defaults({"task": "walker-walk", "action_repeat": None, "seed_steps": 300}) == {
        "task": "walker-walk", "action_repeat": 2, "seed_steps": 300}
    assert with_task_defaults({"task": "cartpole-swingup", "action_repeat": 4}) == {
        "task": "cartpole-swingup", "action_repeat": 4}


def test_typo_in_task_suggests_the_right_name():
    with pytest.raises(ConfigError, match="did you mean 'cartpole-swingup'"):
        tiny_cfg(task="cartpole-swingupp")


@pytest.mark.slow
def test_cli_bad_value_exits_nonzero_with_one_line(tmp_path):
    res = run_train_cli(["task=cartpole-swingupp", "logger=disabled"], tmp_path)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "task='cartpole-swingupp'" in lines[0] and "cartpole-swingup" in lines[0]
    assert "Traceback" not in res.stderr
    res = run_train_cli(["steps=abc"], tmp_path)  # type errors are caught by Hydra's structured config
    assert res.returncode != 0 and "steps" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_cli_trains_end_to_end_and_writes_run_files(tmp_path):
    run_dir = tmp_path / "run"
    args = tiny_cli(steps=2000, eval_freq=2000, checkpoint_freq=2000) + [f"hydra.run.dir={run_dir}", "logger=disabled"]
    res = run_train_cli(args, tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    for name in ("config.yaml", "train.csv", "eval.csv", "checkpoint.pt"):
        assert (run_dir / name).is_file(), name
    train = pd.read_csv(run_dir / "train.csv")
    assert {"step", "env_step", "episode_return", "consistency_loss", "reward_loss", "value_loss",
            "steps_per_s"} <= set(train.columns)
    assert list(train["env_step"]) == [1000, 2000]
    evals = pd.read_csv(run_dir / "eval.csv")
    assert list(evals.columns[:5]) == ["env_step", "step", "return_mean", "return_std", "episodes"]
    assert evals["env_step"].tolist() == [2000]
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["config"]["model"]["mlp_dim"] == 32 and ckpt["counters"]["env_step"] == 2000
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())  # fully resolved: the task's defaults too
    assert (saved["action_repeat"], saved["seed_steps"]) == (8, ckpt["config"]["seed_steps"]) and saved["seed_steps"]
    assert saved["model"]["num_q"] == 2 and saved["planner"]["iterations"] is not None
    assert "[eval]" in res.stdout
    # re-running the same run dir with more steps resumes from the checkpoint
    res = run_train_cli(tiny_cli(steps=3000, eval_freq=2000, checkpoint_freq=2000) + [f"hydra.run.dir={run_dir}", "logger=disabled"], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "[resume]" in res.stdout
    assert pd.read_csv(run_dir / "train.csv")["env_step"].tolist() == [1000, 2000, 3000]


def test_buffer_device_cuda_is_refused_where_cuda_is_not_available(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for dev in ("cuda", "cuda:0"):
        with pytest.raises(ConfigError, match=f"buffer_device='{dev}'; allowed: cpu or auto .CUDA is not available"):
            tiny_cfg(buffer_device=dev)
    with pytest.raises(ConfigError, match="buffer_device='gpu'; allowed: auto|cpu|cuda|cuda:N"):
        tiny_cfg(buffer_device="gpu")
    assert tiny_cfg(seed=2**32 - 1 - 10_000).seed == 2**32 - 1 - 10_000  # the largest allowed


_INTERRUPT_ON_IMPORT = """
import os, runpy, signal, sys
class SendSigintOnImport:  # Ctrl-C arriving while the script imports {module}
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, SendSigintOnImport())
sys.argv = [{script!r}, *{args!r}]
runpy.run_path({script!r}, run_name="__main__")
print("not interrupted")
"""


@pytest.mark.parametrize("script,module", [("train", "torch"), ("prune", "torch"), ("experiment", "hydra"),
                                           ("export", "torch"), ("report", "torch")])
def test_ctrl_c_while_a_command_imports_is_one_line_and_exit_130(script, module, tmp_path):
    """Ctrl-C in the first seconds of a command (while torch, dm_control and Hydra import) used to print a
    traceback through the import machinery. Now one line, exit code 130, and no run dir."""
    import signal
    import subprocess
    import sys

    path = str(ROOT / "scripts" / f"{script}.py")
    args = [str(tmp_path / "runs")] if script == "report" else [f"hydra.run.dir={tmp_path / 'runs'}"]
    code = _INTERRUPT_ON_IMPORT.format(module=module, script=path, args=args)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a terminal
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert proc.stderr == "interrupted while starting (nothing was written)\n" and proc.stdout == ""
    assert not (tmp_path / "runs").exists()


def test_ctrl_c_after_start_raises_keyboard_interrupt_again():
    """Once a command has started, SIGINT is Python's again: the commands catch KeyboardInterrupt to save a
    checkpoint (tested with the trainer); quiet_start leaves a handler it did not set alone."""
    import signal

    from tdmpc import quiet_start

    outer = signal.signal(signal.SIGINT, signal.default_int_handler)  # (pytest-xdist's workers ignore SIGINT)
    try:
        _handback(quiet_start)
    finally:
        signal.signal(signal.SIGINT, outer)


def _handback(quiet_start):
    import signal

    quiet_start.until_started()
    assert signal.getsignal(signal.SIGINT) is quiet_start._quit
    quiet_start.started()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    own = signal.signal(signal.SIGINT, signal.SIG_IGN)  # e.g. a background job: left alone
    try:
        quiet_start.until_started()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        quiet_start.started()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, own)


def test_an_unquoted_path_with_separators_gets_a_quoting_hint(monkeypatch):
    """A multirun's run dirs are named from their overrides (`a=1,b=2`): passing such a path back unquoted gave
    only Hydra's grammar error ("mismatched input '='")."""
    from tdmpc.cli import _unquoted_separators, hydra_error_line

    monkeypatch.setattr("sys.argv", ["export.py", "checkpoint=/runs/a=1,b=2/checkpoint.pt", "seed=1,2"])
    line = hydra_error_line(ValueError("mismatched input '=' expecting <EOF>"))
    assert line.endswith("must be quoted: \"checkpoint='...'\"")
    assert _unquoted_separators(["checkpoint='/r/a=1/c.pt'", "seed=1,2", "metric=l1,l2", "+x=/p/a,b"]) == ["x"]
    assert hydra_error_line(ValueError("Key 'bogus' is not in struct")) == "Key 'bogus' is not in struct"


@pytest.mark.slow
def test_a_refused_command_leaves_no_empty_run_dir(tmp_path):
    """Hydra creates the run dir before the app runs: a refused command left runs/train/<task>/seed1_<time>/
    (empty) or a run dir holding only run.lock."""
    res = run_train_cli(["task=cartpole-swingupp"], tmp_path)
    assert res.returncode == 2 and "did you mean 'cartpole-swingup'" in res.stderr
    assert not (tmp_path / "runs").exists()
    kept = tmp_path / "mine"
    kept.mkdir()
    (kept / "notes.txt").write_text("x")
    res = run_train_cli(["task=cartpole-swingupp", f"hydra.run.dir={kept}"], tmp_path)
    assert res.returncode == 2 and (kept / "notes.txt").is_file()  # a dir with anything else in it stays


@pytest.mark.slow
def test_a_relaunched_train_sweep_resumes_whatever_its_logging_settings(tmp_path):
    """A multirun's run dirs are named from the overrides: relaunching a sweep with logger.progress=true (or
    logger=disabled, resume=..., checkpoint_freq=...) named a new dir and trained from scratch. Those settings
    change no result and no longer name the dir."""
    sweep = tmp_path / "sweep"
    args = ["-m", "seed=1", f"hydra.sweep.dir={sweep}", *tiny_cli(steps=1000)]
    first = run_train_cli([*args, "logger=disabled"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    again = run_train_cli([*args, "logger=disabled", "logger.progress=false", "checkpoint_freq=500"], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    dirs = [d.name for d in sweep.iterdir() if d.is_dir() and not d.name.startswith(".")]
    assert len(dirs) == 1 and "logger" not in dirs[0] and "checkpoint_freq" not in dirs[0], dirs
