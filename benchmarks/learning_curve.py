"""Learning curve of the TD-MPC agent: trains with scripts/train.py and summarises eval.csv.

    python benchmarks/learning_curve.py task=cartpole-swingup            # CPU preset, 100k env steps
    python benchmarks/learning_curve.py task=walker-walk model_size=5 device=cuda

Any ``key=value`` is passed to scripts/train.py (defaults below). Writes
``benchmarks/results/learning_curve_<task>_<model_size>.json`` (curve, wall-clock, steps/s, command) and
a PNG plot next to it (``_seed<N>`` for seeds other than 1 and ``_compiled`` for ``compile=true`` are added to
the name, and ``label=X`` adds ``_X``: a series of runs that must not overwrite an earlier one); the
training run itself lives in ``runs/benchmarks/...`` (not committed).
"""

from __future__ import annotations

import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.argv import parse_args  # noqa: E402

DEFAULTS = {"task": "cartpole-swingup", "model_size": "cpu", "steps": "100000", "seed": "1",
            "eval_freq": "10000", "eval_episodes": "5", "num_threads": "2", "logger": "disabled", "label": ""}


def main(argv: list[str]) -> None:
    overrides = parse_args(argv, DEFAULTS, passthrough=True)  # every key=value goes on to scripts/train.py
    label = overrides.pop("label")  # ... except the label, which names the result files only
    tag = f"{overrides['task']}_{overrides['model_size']}_seed{overrides['seed']}"
    compiled = str(overrides.get("compile", "auto")).lower() == "true"
    # the result file of seed 1, eager keeps its old name; other seeds and compiled runs get their own
    suffix = ("" if overrides["seed"] == "1" else f"_seed{overrides['seed']}") + ("_compiled" if compiled else "")
    suffix += f"_{label}" if label else ""
    tag += ("_compiled" if compiled else "") + (f"_{label}" if label else "")
    run_dir = ROOT / "runs" / "benchmarks" / f"learning_curve_{tag}"
    overrides.setdefault("run_dir", str(run_dir))
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), *[f"{k}={v}" for k, v in overrides.items()]]
    print("+", shlex.join(cmd), flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True)
    wall = time.time() - t0
    run_dir = Path(overrides["run_dir"])
    evals = pd.read_csv(run_dir / "eval.csv")
    train = pd.read_csv(run_dir / "train.csv")
    learning = train[train["total_loss"].notna()]
    result = {
        "task": overrides["task"], "model_size": overrides["model_size"], "seed": int(overrides["seed"]),
        "label": label,
        "command": "python benchmarks/learning_curve.py " + " ".join(argv),
        "overrides": overrides, "machine": platform.processor() or platform.machine(),
        "wall_clock_s_this_invocation": round(wall, 1),
        "train_elapsed_s": float(train["elapsed_s"].iloc[-1]),
        "agent_steps_per_s_median": float(learning["steps_per_s"].median()) if len(learning) else None,
        "final_return_mean": float(evals["return_mean"].iloc[-1]),
        "best_return_mean": float(evals["return_mean"].max()),
        "curve": evals[["env_step", "return_mean", "return_std", "elapsed_s"]].to_dict(orient="records"),
    }
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"learning_curve_{overrides['task']}_{overrides['model_size']}{suffix}.json"
    out.write_text(json.dumps(result, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(evals["env_step"], evals["return_mean"], marker="o")
        ax.fill_between(evals["env_step"], evals["return_mean"] - evals["return_std"],
                        evals["return_mean"] + evals["return_std"], alpha=0.2)
        ax.set_xlabel("env steps")
        ax.set_ylabel("eval return")
        ax.set_title(f"{overrides['task']} ({overrides['model_size']})")
        fig.tight_layout()
        fig.savefig(out.with_suffix(".png"), dpi=120)
    except Exception as err:  # plotting is a convenience; the JSON is the record
        print(f"plot skipped: {err}")
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
