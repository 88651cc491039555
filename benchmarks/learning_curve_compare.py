"""Are two sets of learning curves (e.g. compiled vs eager, several seeds each) within each other's spread?

    python benchmarks/learning_curve_compare.py \
        a=learning_curve_cartpole-swingup_cpu_round2.json,learning_curve_cartpole-swingup_cpu_seed2.json,... \
        b=learning_curve_cartpole-swingup_cpu_compiled.json,... label_a=eager label_b=compiled

``a`` and ``b`` are comma-separated result files of ``benchmarks/learning_curve.py`` (names in
``benchmarks/results``, or paths), one per seed, evaluated at the same env steps. Reported, into
``benchmarks/results/<out>`` (JSON) and a plot next to it (PNG + SVG):

- per eval point: each side's mean, min and max over seeds, and whether ``b``'s mean lies within ``a``'s
  seed range ``[min, max]``;
- ``b_seeds_in_a_range``: the fraction of (``b`` seed, eval point) pairs inside ``a``'s range, next to the
  same fraction for ``a``'s own seeds held out one at a time against the range of the others
  (``a_loo_in_a_range``): how often a seed of the *same* setting lands inside the range, i.e. what
  "within the spread" can be expected to look like with this few seeds;
- per seed, the mean eval return over the whole curve (area under the curve / its length) and the final
  return; per side their mean; and the exact two-sided permutation p-value of the difference of the
  means (every split of the pooled seeds; with 3 + 3 seeds the smallest possible p is 0.1, so only a
  large difference can show).

Written by hand: the permutation test over ≤ a few hundred splits is ten lines, and the seed ranges are
plain min / max; no library does this comparison as such.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.argv import fail, parse_args  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
DEFAULTS = {"a": "", "b": "", "label_a": "a", "label_b": "b", "out": "learning_curve_compare.json"}


def load(names: str) -> list[dict]:
    runs = []
    for name in [n for n in names.split(",") if n]:
        path = Path(name) if Path(name).exists() else RESULTS / name
        if not path.exists():
            fail(f"learning-curve file {name!r} not found (looked in {RESULTS})")
        runs.append(json.loads(path.read_text()))
    return runs


def curves(runs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """``(env steps (T,), returns (seeds, T))``; every run must be evaluated at the same env steps."""
    steps = [tuple(p["env_step"] for p in r["curve"]) for r in runs]
    if len(set(steps)) != 1:
        fail(f"the runs are evaluated at different env steps: {sorted(set(steps))}")
    return np.asarray(steps[0]), np.asarray([[p["return_mean"] for p in r["curve"]] for r in runs], float)


def permutation_p(x: np.ndarray, y: np.ndarray) -> float:
    """Exact two-sided permutation p-value of ``|mean(x) - mean(y)|`` over every split of the pooled values."""
    pooled, n = np.concatenate([x, y]), len(x)
    observed = abs(x.mean() - y.mean())
    diffs = []
    for idx in itertools.combinations(range(len(pooled)), n):
        mask = np.zeros(len(pooled), bool)
        mask[list(idx)] = True
        diffs.append(abs(pooled[mask].mean() - pooled[~mask].mean()))
    return float(np.mean(np.asarray(diffs) >= observed - 1e-9))


def in_range(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return (values >= lo) & (values <= hi)


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    """``a (Sa, T)``, ``b (Sb, T)`` returns over seeds and eval points -> the figures of the module doc."""
    lo, hi = a.min(0), a.max(0)
    loo = [in_range(a[i], np.delete(a, i, 0).min(0), np.delete(a, i, 0).max(0)) for i in range(len(a))]
    auc_a, auc_b = a.mean(1), b.mean(1)
    return {
        "b_mean_in_a_range": in_range(b.mean(0), lo, hi).tolist(),
        "b_seeds_in_a_range": float(in_range(b, lo, hi).mean()),
        "a_loo_in_a_range": float(np.mean(loo)) if len(a) > 2 else None,
        "curve_mean_per_seed": {"a": auc_a.tolist(), "b": auc_b.tolist()},
        "curve_mean": {"a": float(auc_a.mean()), "b": float(auc_b.mean()),
                       "p_permutation": permutation_p(auc_a, auc_b)},
        "final_per_seed": {"a": a[:, -1].tolist(), "b": b[:, -1].tolist()},
        "final": {"a": float(a[:, -1].mean()), "b": float(b[:, -1].mean()),
                  "p_permutation": permutation_p(a[:, -1], b[:, -1])},
    }


def plot(steps, a, b, label_a, label_b, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for values, label, color in ((a, label_a, "C0"), (b, label_b, "C1")):
        ax.plot(steps, values.mean(0), marker="o", color=color, label=f"{label} (mean of {len(values)} seeds)")
        ax.fill_between(steps, values.min(0), values.max(0), color=color, alpha=0.2, label=f"{label} seed range")
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval return")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    files = []
    for ext in ("png", "svg"):
        fig.savefig(out.with_suffix(f".{ext}"), dpi=120)
        files.append(str(out.with_suffix(f".{ext}").relative_to(ROOT)))
    plt.close(fig)
    return files


def main(argv: list[str]) -> dict:
    args = parse_args(argv, DEFAULTS)
    runs_a, runs_b = load(args["a"]), load(args["b"])
    if len(runs_a) < 2 or len(runs_b) < 1:
        fail(f"a needs >= 2 runs (a seed range) and b >= 1, got {len(runs_a)} and {len(runs_b)}")
    steps_a, a = curves(runs_a)
    steps_b, b = curves(runs_b)
    if not np.array_equal(steps_a, steps_b):
        fail("a and b are evaluated at different env steps")
    result = {
        "command": "python benchmarks/learning_curve_compare.py " + " ".join(argv),
        "label_a": args["label_a"], "label_b": args["label_b"],
        "files_a": args["a"].split(","), "files_b": args["b"].split(","),
        "seeds_a": [r["seed"] for r in runs_a], "seeds_b": [r["seed"] for r in runs_b],
        "env_steps": steps_a.tolist(),
        "a": {"mean": a.mean(0).tolist(), "min": a.min(0).tolist(), "max": a.max(0).tolist()},
        "b": {"mean": b.mean(0).tolist(), "min": b.min(0).tolist(), "max": b.max(0).tolist()},
        "train_minutes": {"a": [r["train_elapsed_s"] / 60 for r in runs_a],
                          "b": [r["train_elapsed_s"] / 60 for r in runs_b]},
        **compare(a, b),
    }
    out = RESULTS / Path(args["out"]).name
    result["plots"] = plot(steps_a, a, b, args["label_a"], args["label_b"], out)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("a", "b")}, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
