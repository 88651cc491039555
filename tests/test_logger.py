"""Tests for tdmpc.logger: CSV streams, exact-resume truncation, W&B mode resolution and offline W&B runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
from wandb_records import read_wandb_records, wandb_items

from tdmpc.logger import EVAL_COLUMNS, TRAIN_COLUMNS, Logger, WandbConfig, flatten, resolve_wandb_mode

CONFIG = {"task": "cartpole-swingup", "seed": 3, "model_size": 5, "pruning": {"metric": "taylor", "ratio": 0.5},
          "optim": {"lr": 3e-4}}

def disabled() -> WandbConfig:
    return WandbConfig(mode="disabled")


# --------------------------------------------------------------------------------------------- CSV


def test_csv_header_rows_types_round_trip(tmp_path):
    with Logger(tmp_path, CONFIG, disabled()) as logger:
        assert logger.wandb_run is None
        logger.log("train", {"step": 1, "env_step": 2, "episode": 0, "episode_return": 12.5, "total_loss": 0.25,
                             "not_a_column": "ignored"})
        logger.log("train", {"step": 2, "env_step": 4, "episode": 1, "episode_return": -3.0})  # no losses
        logger.log("eval", {"env_step": 4, "step": 2, "return_mean": 100.5, "return_std": 1.5, "episodes": 10})
        # Rows are flushed at once: readable before finish().
        assert len(pd.read_csv(tmp_path / "train.csv")) == 2

    train = pd.read_csv(tmp_path / "train.csv")
    assert list(train.columns) == TRAIN_COLUMNS
    assert "not_a_column" not in train.columns
    assert train["step"].tolist() == [1, 2] and train["env_step"].tolist() == [2, 4]
    assert pd.api.types.is_integer_dtype(train["env_step"])
    assert train["episode_return"].tolist() == [12.5, -3.0]
    assert train.loc[0, "total_loss"] == 0.25 and pd.isna(train.loc[1, "total_loss"])
    assert train["grad_norm"].isna().all()  # never given: empty cells
    assert (tmp_path / "train.csv").read_text().splitlines()[2] == "2,4,1,-3.0,,,,,,,,,"

    evals = pd.read_csv(tmp_path / "eval.csv")
    assert list(evals.columns) == EVAL_COLUMNS
    assert evals.loc[0, "return_mean"] == 100.5 and evals.loc[0, "episodes"] == 10
    assert pd.isna(evals.loc[0, "elapsed_s"])


def test_csv_custom_streams_and_tensor_values(tmp_path):
    torch = pytest.importorskip("torch")
    with Logger(tmp_path, CONFIG, disabled(), csv_files={"prune": ["sparsity", "return_mean"]}) as logger:
        logger.log("prune", {"sparsity": torch.tensor(0.5), "return_mean": 7})
        logger.log("extra", {"a": 1, "b": "x"})  # a stream not declared: columns from its first row
        logger.log("extra", {"b": "y", "c": 3})
    assert not (tmp_path / "train.csv").exists()
    prune = pd.read_csv(tmp_path / "prune.csv")
    assert prune.to_dict("records") == [{"sparsity": 0.5, "return_mean": 7}]
    extra = pd.read_csv(tmp_path / "extra.csv")
    assert list(extra.columns) == ["a", "b"]
    assert extra["b"].tolist() == ["x", "y"] and pd.isna(extra.loc[1, "a"])


def test_fresh_run_overwrites_and_resume_appends_without_duplicate_header(tmp_path):
    with Logger(tmp_path, CONFIG, disabled()) as logger:
        logger.log("train", {"step": 1, "env_step": 1})
    with Logger(tmp_path, CONFIG, disabled()) as logger:  # not a resume: start anew
        logger.log("train", {"step": 1, "env_step": 10})
    assert pd.read_csv(tmp_path / "train.csv")["env_step"].tolist() == [10]

    with Logger(tmp_path, CONFIG, disabled(), resume=True) as logger:
        logger.log("train", {"step": 2, "env_step": 20})
    text = (tmp_path / "train.csv").read_text()
    assert text.count("step,env_step") == 1
    assert pd.read_csv(tmp_path / "train.csv")["env_step"].tolist() == [10, 20]


def test_truncate_drops_rows_after_env_step(tmp_path):
    with Logger(tmp_path, CONFIG, disabled()) as logger:
        for env_step in range(1, 7):
            logger.log("train", {"step": env_step, "env_step": env_step * 100})
        logger.log("eval", {"env_step": 300, "return_mean": 1.0})
        logger.log("eval", {"env_step": 600, "return_mean": 2.0})

    # A killed run resumed from its checkpoint at env_step 300: later rows are dropped, then logged again.
    with Logger(tmp_path, CONFIG, disabled(), resume=True) as logger:
        logger.truncate(300)
        assert pd.read_csv(tmp_path / "train.csv")["env_step"].tolist() == [100, 200, 300]
        for env_step in (400, 500):
            logger.log("train", {"step": env_step // 100, "env_step": env_step})

    train = pd.read_csv(tmp_path / "train.csv")
    assert train["env_step"].tolist() == [100, 200, 300, 400, 500]
    assert train["step"].tolist() == [1, 2, 3, 4, 5]
    assert pd.read_csv(tmp_path / "eval.csv")["env_step"].tolist() == [300]
    assert (tmp_path / "train.csv").read_text().count("step,env_step") == 1
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_truncate_keeps_rows_without_env_step_and_resume_drops_partial_row(tmp_path):
    with Logger(tmp_path, CONFIG, disabled(), csv_files={"s": ["env_step", "x"], "n": ["x"]}) as logger:
        logger.log("s", {"env_step": 1, "x": 1})
        logger.log("s", {"x": 2})  # no env_step value: kept
        logger.log("s", {"env_step": 5, "x": 3})
        logger.log("n", {"x": 4})  # no env_step column: untouched
    with open(tmp_path / "s.csv", "a") as f:
        f.write("9,")  # a row a crash cut short (no newline)

    with Logger(tmp_path, CONFIG, disabled(), resume=True,
                csv_files={"s": ["env_step", "x"], "n": ["x"]}) as logger:
        logger.truncate(4)
        logger.log("s", {"env_step": 6, "x": 5})
    assert (tmp_path / "s.csv").read_text() == "env_step,x\n1,1\n,2\n6,5\n"
    assert (tmp_path / "n.csv").read_text() == "x\n4\n"


def test_truncate_reaches_a_stream_first_logged_after_the_resume(tmp_path):
    # "prune" is not in csv_files: its CSV is created at its first row, and on resume it is only opened
    # when the resumed run logs to it again; the rows after the checkpoint must go at once all the same.
    with Logger(tmp_path, CONFIG, disabled()) as logger:
        for env_step in (100, 200, 300):
            logger.log("prune", {"env_step": env_step, "channels": 1000 - env_step})
    with Logger(tmp_path, CONFIG, disabled(), resume=True) as logger:
        logger.truncate(150)
        # rewritten at once, although not opened: a resumed run that never prunes again keeps no stale row
        assert pd.read_csv(tmp_path / "prune.csv")["env_step"].tolist() == [100]
        logger.log("prune", {"env_step": 210, "channels": 790})
        logger.log("prune", {"env_step": 310, "channels": 690})
    assert (tmp_path / "prune.csv").read_text() == "env_step,channels\n100,900\n210,790\n310,690\n"

    # a resume without truncate() appends as before
    with Logger(tmp_path, CONFIG, disabled(), resume=True) as logger:
        logger.log("prune", {"env_step": 400, "channels": 600})
    assert pd.read_csv(tmp_path / "prune.csv")["env_step"].tolist() == [100, 210, 310, 400]


def test_summary_json_is_merged(tmp_path):
    with Logger(tmp_path, CONFIG, disabled()) as logger:
        logger.summary({"final_return": 10.0, "env_steps": 100})
        logger.summary({"final_return": 12.0})
        logger.log_image("img", tmp_path / "missing.png")  # no-ops without W&B
        logger.log_table("table", pd.DataFrame({"a": [1]}))
    assert json.loads((tmp_path / "summary.json").read_text()) == {"final_return": 12.0, "env_steps": 100}


def test_finish_is_idempotent_and_log_after_finish_fails(tmp_path):
    logger = Logger(tmp_path, CONFIG, disabled())
    logger.finish()
    logger.finish()
    with pytest.raises(RuntimeError, match="after finish"):
        logger.log("train", {"step": 1})


def test_disabled_mode_never_imports_wandb(tmp_path):
    code = ("import sys; from tdmpc.logger import Logger, WandbConfig; "
            f"lg = Logger({str(tmp_path)!r}, {{}}, WandbConfig(mode='disabled')); lg.log('train', {{'step': 1}}); "
            "lg.finish(); assert 'wandb' not in sys.modules, 'wandb was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
    assert (tmp_path / "train.csv").exists()


def test_flatten():
    assert flatten(CONFIG)["pruning.metric"] == "taylor"
    assert flatten({"a": {"b": {"c": 1}}, "d": [1, 2]}) == {"a.b.c": 1, "d": [1, 2]}


# --------------------------------------------------------------------------------------------- W&B mode


def test_resolve_wandb_mode_online_with_api_key(wandb_env, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("auto") == "online"


def test_resolve_wandb_mode_offline_without_key(wandb_env):
    pytest.importorskip("wandb")
    assert not (wandb_env / ".netrc").exists()
    assert resolve_wandb_mode("auto") == "offline"


def test_resolve_wandb_mode_online_with_netrc(wandb_env):
    pytest.importorskip("wandb")
    netrc_file = wandb_env / ".netrc"
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc_file.chmod(0o600)
    assert resolve_wandb_mode("auto") == "online"


def test_resolve_wandb_mode_respects_wandb_mode_env(wandb_env, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_wandb_mode("auto") == "offline"


def test_resolve_wandb_mode_without_wandb_is_disabled(wandb_env, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` fail
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("auto") == "disabled"


@pytest.mark.parametrize("mode", ["online", "offline", "disabled"])
def test_resolve_wandb_mode_explicit(mode):
    assert resolve_wandb_mode(mode) == mode


def test_resolve_wandb_mode_invalid():
    with pytest.raises(ValueError) as info:
        resolve_wandb_mode("sometimes")
    message = str(info.value)
    assert "logger.wandb.mode" in message and "sometimes" in message
    for allowed in ("auto", "online", "offline", "disabled"):
        assert allowed in message


def test_invalid_mode_fails_before_any_file_is_written(tmp_path):
    with pytest.raises(ValueError, match="logger.wandb.mode"):
        Logger(tmp_path / "run", CONFIG, WandbConfig(mode="cloud"))
    assert not list((tmp_path / "run").glob("*.csv"))


def test_auto_mode_without_wandb_logs_csv_only(tmp_path, wandb_env, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with Logger(tmp_path / "run", CONFIG, WandbConfig(mode="auto")) as logger:
        assert logger.mode == "disabled" and logger.wandb_run is None
        logger.log("train", {"step": 1, "env_step": 1})
    assert len(pd.read_csv(tmp_path / "run" / "train.csv")) == 1


def test_explicit_mode_without_wandb_raises(tmp_path, wandb_env, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(RuntimeError, match="W&B could not start in mode 'offline'"):
        Logger(tmp_path / "run", CONFIG, WandbConfig(mode="offline"))


def test_auto_mode_start_failure_warns_and_continues(tmp_path, wandb_env, monkeypatch):
    wandb = pytest.importorskip("wandb")

    def broken_init(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(wandb, "init", broken_init)
    with pytest.warns(RuntimeWarning, match="no space left"):
        logger = Logger(tmp_path / "run", CONFIG, WandbConfig(mode="auto"))
    with logger:
        assert logger.mode == "disabled" and logger.wandb_run is None
        logger.log("eval", {"env_step": 1, "return_mean": 2.0})
    assert len(pd.read_csv(tmp_path / "run" / "eval.csv")) == 1
    with pytest.raises(RuntimeError, match="no space left"):
        Logger(tmp_path / "run2", CONFIG, WandbConfig(mode="offline"))


# --------------------------------------------------------------------------------------------- W&B offline

def _offline_run_dirs(run_dir: Path, run_id: str) -> list[Path]:
    """The offline run folders of ``run_id`` in the order they were started.

    wandb names them ``offline-run-<YYYYmmdd_HHMMSS>-<id>`` and appends ``-1``, ``-2`` ... when a resumed run
    starts within the same second as an earlier one (the folder already exists).
    """
    pattern = re.compile(rf"offline-run-(\d{{8}}_\d{{6}})-{re.escape(run_id)}(?:-(\d+))?")
    found = []
    for d in (run_dir / "wandb").glob("offline-run-*"):
        match = pattern.fullmatch(d.name)
        if match:
            found.append((match[1], int(match[2] or 0), d))
    return [d for *_, d in sorted(found)]


def test_wandb_offline_run_records_history_config_and_resume(tmp_path, wandb_env):
    pytest.importorskip("wandb")
    run_dir = tmp_path / "run"
    wcfg = WandbConfig(mode="offline", group="sweep-a", job_type="train", tags=["unit"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Logger(run_dir, CONFIG, wcfg, run_name="unit-run") as logger:
            assert logger.mode == "offline"
            run_id = logger.wandb_run.id
            for i in range(3):
                logger.log("train", {"step": i, "env_step": 2 * i, "total_loss": 1.0 / (i + 1), "extra_key": i})
            logger.log("eval", {"env_step": 4, "return_mean": 123.5, "return_std": 2.0, "episodes": 10})
            logger.log_table("curve", pd.DataFrame({"sparsity": [0.1, 0.2], "return": [5.0, 4.0]}))
            logger.summary({"final_return": 123.5})
        assert logger.wandb_run is None
        logger.finish()  # idempotent

    assert (run_dir / "wandb_id.txt").read_text().strip() == run_id
    assert not list((tmp_path / "home").iterdir())  # nothing written to HOME
    [offline] = _offline_run_dirs(run_dir, run_id)
    records = read_wandb_records(offline / f"run-{run_id}.wandb")
    by_type: dict[str, list] = {}
    for record in records:
        by_type.setdefault(record.WhichOneof("record_type"), []).append(record)

    [run] = by_type["run"]
    assert run.run.run_id == run_id and run.run.project == "ca-prune" and run.run.display_name == "unit-run"
    assert run.run.run_group == "sweep-a" and run.run.job_type == "train"
    assert set(run.run.tags) == {"unit", "task:cartpole-swingup", "seed:3", "model_size:5"}
    config = wandb_items(run.run.config.update)
    for key, value in flatten(CONFIG).items():
        assert config[key] == value

    history = [wandb_items(r.history.item) for r in by_type["history"]]
    train = [h for h in history if "train/total_loss" in h]
    assert [h["train/env_step"] for h in train] == [0, 2, 4]
    assert [h["env_step"] for h in train] == [0, 2, 4]
    assert train[1]["train/total_loss"] == 0.5 and train[2]["train/extra_key"] == 2
    [evals] = [h for h in history if "eval/return_mean" in h]
    assert evals["eval/return_mean"] == 123.5 and evals["env_step"] == 4 and evals["eval/episodes"] == 10
    assert any(h.get("curve/_type") == "table-file" for h in history)
    assert list((offline / "files" / "media" / "table").glob("curve_*.table.json"))

    metrics = {(m.metric.glob_name or m.metric.name): m.metric.step_metric for m in by_type["metric"]}
    assert metrics["train/*"] == "env_step" and metrics["eval/*"] == "env_step"
    summary = {}
    for record in by_type["summary"]:
        summary.update(wandb_items(record.summary.update))
    assert summary["final_return"] == 123.5
    assert json.loads((run_dir / "summary.json").read_text()) == {"final_return": 123.5}
    # Offline runs keep everything in the .wandb file; config.yaml / wandb-summary.json only appear once
    # the run is synced, but check them if this wandb version writes them.
    if (offline / "files" / "wandb-summary.json").exists():
        assert json.loads((offline / "files" / "wandb-summary.json").read_text())["final_return"] == 123.5
    if (offline / "files" / "config.yaml").exists():
        assert "pruning.metric" in (offline / "files" / "config.yaml").read_text()

    # Resume in the same run dir: CSVs appended; offline, a new W&B run that names the one it continues
    # (a second offline run under the same id would replace the first's history when both are synced).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Logger(run_dir, CONFIG, wcfg, resume=True, run_name="unit-run") as logger:
            resumed_id = logger.wandb_run.id
            logger.truncate(2)
            logger.log("train", {"step": 2, "env_step": 4, "total_loss": 0.25})
    assert resumed_id != run_id and (run_dir / "wandb_id.txt").read_text().strip() == resumed_id
    assert _offline_run_dirs(run_dir, run_id) == [offline]  # the first part is untouched
    [second] = _offline_run_dirs(run_dir, resumed_id)
    resumed = [r for r in read_wandb_records(second / f"run-{resumed_id}.wandb")
               if r.WhichOneof("record_type") in ("run", "history")]
    assert resumed[0].run.display_name == "unit-run (resumed)" and resumed[0].run.run_group == "sweep-a"
    assert f"resumed_from:{run_id}" in resumed[0].run.tags
    # the new run re-logs the CSV history up to the checkpoint (a killed part's record may lack its last rows)
    history = [wandb_items(r.history.item) for r in resumed[1:]]
    assert [h["train/total_loss"] for h in history] == [1.0, 0.5, 0.25]
    assert [h["env_step"] for h in history] == [0, 2, 4] and history[1]["train/step"] == 1
    assert "train/extra_key" not in history[1]  # only what the CSV holds can be re-logged
    assert pd.read_csv(run_dir / "train.csv")["env_step"].tolist() == [0, 2, 4]
    assert pd.read_csv(run_dir / "eval.csv").empty


def test_fresh_run_gets_a_new_wandb_id(tmp_path, wandb_env):
    pytest.importorskip("wandb")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "wandb_id.txt").write_text("oldrunid\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Logger(tmp_path / "run", CONFIG, WandbConfig(mode="offline")) as logger:
            new_id = logger.wandb_run.id
    assert new_id != "oldrunid"
    assert (tmp_path / "run" / "wandb_id.txt").read_text().strip() == new_id


def test_a_damaged_wandb_folder_is_moved_aside_and_the_resumed_run_goes_on(tmp_path, wandb_env, capsys):
    pytest.importorskip("wandb")
    run_dir = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Logger(run_dir, CONFIG, WandbConfig(mode="offline")) as logger:
            run_id = logger.wandb_run.id
            logger.log("train", {"step": 0, "env_step": 1000, "total_loss": 1.0})
        shutil.rmtree(run_dir / "wandb")
        (run_dir / "wandb").write_text("not a folder")  # damaged: a file where the folder was
        capsys.readouterr()
        with Logger(run_dir, CONFIG, WandbConfig(mode="offline"), resume=True) as logger:
            assert logger.mode == "offline" and f"resumed_from:{run_id}" in logger.wandb_run.tags  # continued
            logger.log("train", {"step": 1, "env_step": 2000, "total_loss": 0.5})
    [moved] = run_dir.glob("wandb.corrupt-*")
    assert moved.read_text() == "not a folder"  # kept, byte-identical
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith(f"warning: W&B could not resume from {run_dir / 'wandb'}")
    assert f"moved it aside to {moved.name}" in err[0]
    assert pd.read_csv(run_dir / "train.csv")["env_step"].tolist() == [1000, 2000]
    assert (run_dir / "wandb").is_dir() and list((run_dir / "wandb").glob("offline-run-*"))


def test_truncate_also_cuts_rows_logged_by_updates_after_the_checkpoint(tmp_path):
    """Pretraining runs its updates at one env step: a prune row of update 3 at the checkpoint's env step 1000 is
    after a checkpoint of 0 updates, and a resumed run logs it again."""
    with Logger(tmp_path, CONFIG, disabled()) as logger:
        logger.log("prune", {"env_step": 1000, "update": 0, "channels": 10})
        logger.log("prune", {"env_step": 1000, "update": 3, "channels": 8})
        logger.log("train", {"step": 1, "env_step": 1000, "episode": 1})
    with Logger(tmp_path, CONFIG, disabled(), resume=True) as logger:
        logger.truncate(1000, after_updates=0)
    assert pd.read_csv(tmp_path / "prune.csv")["update"].tolist() == [0]
    assert pd.read_csv(tmp_path / "train.csv")["env_step"].tolist() == [1000]  # no update column: env_step only
