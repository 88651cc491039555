"""A generated sweep of prune-job results and a training run's importance snapshots (report tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

# (metric, ratio) -> returns of seeds 1, 2; flops shrink with the ratio.
RETURNS = {("l1", 0.0): [800.0, 820.0], ("fisher", 0.5): [700.0, 760.0], ("l1", 0.5): [600.0, 500.0],
           ("fisher", 0.75): [300.0, 340.0], ("l1", 0.75): [420.0, 400.0]}


def _result(metric: str, ratio: float, seed: int, ret: float, finetune_steps: int = 500) -> dict:
    flops = 1e9 * (1 - ratio) ** 2 + 1e6 * seed
    return {"task": "cartpole-swingup", "seed": seed, "train_seed": 1, "model_size": "cpu", "metric": metric,
            "ratio": ratio, "scope": "global", "finetune_steps": finetune_steps, "dense_return": 810.0,
            "return_mean": ret, "return_std": 1.0, "eval_episodes": 3, "params": int(3e5 * (1 - ratio)),
            "params_dense": 300000, "flops_policy": flops / 1e4, "flops_plan": flops, "latency_policy_ms": 0.7,
            "latency_policy_iqr_ms": 0.01, "latency_plan_ms": 80 * (1 - ratio) + 10, "latency_plan_iqr_ms": 1.0,
            "widths": {"encoder": [128, 64]}, "git_commit": "abc", "config": {"x": 1}}


def _importance(step_scores: dict[int, dict[str, np.ndarray]]) -> pd.DataFrame:
    """Rows of importance.parquet: channels 0-2 in layer encoder/0, 3-5 in latent."""
    rows = []
    for step, by_metric in step_scores.items():
        for metric, score in by_metric.items():
            for c in range(len(score)):
                comp = "encoder" if c < 3 else "latent"
                rows.append({"step": step, "component": comp, "layer": f"{comp}/0", "channel": c % 3,
                             "metric": metric, "score": float(score[c])})
    return pd.DataFrame(rows)


def make_sweep(tmp_path: Path) -> Path:
    """The ``sweep`` fixture (conftest.py): result.json / error.json files and an importance.parquet."""
    root = tmp_path / "sweep"
    for (metric, ratio), rets in RETURNS.items():
        for seed, ret in zip((1, 2), rets):
            d = root / "cartpole-swingup_seed1" / f"{metric}_ratio{ratio}_seed{seed}"
            d.mkdir(parents=True)
            (d / "result.json").write_text(json.dumps(_result(metric, ratio, seed, ret)))
    bad = root / "cartpole-swingup_seed1" / "bayes_ratio0.5_seed1"
    bad.mkdir(parents=True)
    (bad / "error.json").write_text(json.dumps({"error": "RuntimeError", "message": "diverged"}))
    # Importance snapshots of a training run: fisher == grad_acc order, l1 reversed.
    train = tmp_path / "sweep" / "train" / "cartpole-swingup" / "seed1"
    train.mkdir(parents=True)
    rng = np.random.default_rng(0)
    snaps = {}
    for step in (500, 1000, 1500):
        base = rng.random(6)
        snaps[step] = {"fisher": base, "grad_acc": 2 * base + 1, "l1": -base}
    _importance(snaps).to_parquet(train / "importance.parquet")
    return root
