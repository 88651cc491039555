"""Does capturing gate derivatives on every k-th update only (``pruning.gate_interval=k``) change the rankings?

    python benchmarks/gate_interval.py a=RUN_A/importance.parquet b=RUN_B/importance.parquet
        [label_a=1] [label_b=10] [out=gate_interval.json]

``a`` and ``b`` are the importance files of two training runs that differ only in ``pruning.gate_interval``
(same seed: tracking does not change training, so both see the same updates). For every metric in both
files and every snapshot step the script reports Spearman's rho between the two runs' channel scores,
within each layer and averaged over layers weighted by their channels
(:func:`pruning.study.importance_report.rank_correlations`), and the last snapshot's figure per metric.
Metrics that read only parameters and ``.grad`` (``grad_acc``, ``l1``, ...) must agree exactly (rho = 1):
that checks that the two runs trained identically.

Writes benchmarks/results/<out>.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.argv import fail, parse_args  # noqa: E402
from pruning.study.importance_report import rank_correlations  # noqa: E402

DEFAULTS = {"a": "", "b": "", "label_a": "1", "label_b": "10", "out": "gate_interval.json"}


def compare(a: pd.DataFrame, b: pd.DataFrame, label_a: str, label_b: str) -> pd.DataFrame:
    """Per metric and step: within-layer Spearman rho between the scores of ``a`` and ``b``."""
    steps = sorted(set(a["step"]) & set(b["step"]))
    metrics = sorted(set(a["metric"]) & set(b["metric"]))
    parts = []
    for table, label in ((a, label_a), (b, label_b)):
        t = table[table["step"].isin(steps) & table["metric"].isin(metrics)].copy()
        t["metric"] = t["metric"].astype(str) + "@" + label
        parts.append(t)
    corr = rank_correlations(pd.concat(parts, ignore_index=True))
    corr = corr[corr["metric_a"].str.split("@").str[0] == corr["metric_b"].str.split("@").str[0]]
    corr = corr[corr["metric_a"] != corr["metric_b"]].copy()
    corr["metric"] = corr["metric_a"].str.split("@").str[0]
    return corr[["metric", "step", "spearman"]].reset_index(drop=True)


def main(argv: list[str]) -> None:
    args = parse_args(argv, DEFAULTS)
    if not args["a"] or not args["b"]:
        fail("a=... and b=... (two importance.parquet files) are required")
    a, b = pd.read_parquet(args["a"]), pd.read_parquet(args["b"])
    corr = compare(a, b, args["label_a"], args["label_b"])
    last = corr[corr["step"] == corr["step"].max()]
    summary = {m: {"last_step": float(r["spearman"].iloc[0]), "mean_over_steps": float(corr[corr["metric"] == m]
                                                                                       ["spearman"].mean()),
                   "min_over_steps": float(corr[corr["metric"] == m]["spearman"].min())}
               for m, r in last.groupby("metric")}
    for m, v in summary.items():
        print(f"{m:>10}: rho at the last snapshot {v['last_step']:.3f}, mean over snapshots {v['mean_over_steps']:.3f}"
              f" (min {v['min_over_steps']:.3f})")
    out = {"command": " ".join(["python benchmarks/gate_interval.py", *argv]), "a": args["a"], "b": args["b"],
           "label_a": args["label_a"], "label_b": args["label_b"], "summary": summary,
           "per_step": corr.to_dict(orient="records")}
    path = ROOT / "benchmarks" / "results" / args["out"]
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
