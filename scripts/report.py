"""Report of pruning sweeps: results.csv, summary.md, Pareto and control-rate plots, importance heat-maps, rank correlations.

    python scripts/report.py multirun/prune/2026... runs/train/... [--out DIR]

Reads every result.json, error.json and importance.parquet below the given folders (see pruning/study/report.py).
Default output: <first folder>/report. Exits 2 with one line, writing nothing, when a folder is missing or holds
nothing, or when --out is an existing file or a folder that cannot be created.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "disable")  # state-based tasks need no rendering (and no GLFW/X11 noise)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from tdmpc import quiet_start  # noqa: E402  (standard library only)

quiet_start.until_started()  # Ctrl-C during the imports below: one line and exit 130, no traceback
from tdmpc.plugins import load_plugins_or_exit  # noqa: E402

load_plugins_or_exit()  # the user's own metrics / env providers (CA_PRUNE_PLUGINS, docs/extending.md)

from pruning.study.report import ReportError, print_summary, write_report  # noqa: E402

quiet_start.started()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", help="sweep or run folders to read (searched recursively)")
    parser.add_argument("--out", default=None, help="output folder, created if missing (default: <first folder>/report)")
    parser.add_argument("--wandb", default="disabled", choices=["auto", "online", "offline", "disabled"],
                        help="also log the report to W&B (tables + plots, job_type=report); default: disabled")
    parser.add_argument("--group", default=None, help="W&B group (default: the first folder's name)")
    args = parser.parse_args(argv)
    missing = [d for d in args.dirs if not Path(d).is_dir()]
    if missing:  # before the default --out is built from the first of them
        print(f"error: not a folder: {missing[0]}", file=sys.stderr)
        return 2
    if args.wandb == "online":  # refused before the report is computed, as training refuses it at start
        from tdmpc.wandb_mode import wandb_online_possible

        if not wandb_online_possible():
            print("error: invalid argument --wandb online; allowed: online needs wandb installed and an API key "
                  "(WANDB_API_KEY or `wandb login`); use --wandb offline and `wandb sync` later", file=sys.stderr)
            return 2
    out = Path(args.out) if args.out else Path(args.dirs[0]) / "report"
    try:
        summary = write_report(args.dirs, out)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if len(summary):
        print_summary(summary, title="return vs FLOPs vs latency")
    if args.wandb != "disabled":
        from pruning.study.experiment import log_report

        group = args.group or Path(args.dirs[0]).resolve().name
        run_id = log_report(out, args.wandb, group=group, config={"report": {"dirs": [str(d) for d in args.dirs]}})
        print(f"W&B report run: {run_id} (group {group})" if run_id else "W&B disabled")
    print(f"report written to {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the report is built in a staging folder and published at the end
        print("interrupted: the report was not (completely) published; run the command again", file=sys.stderr)
        sys.exit(130)
