"""How much of the return drop right after pruning comes from LayerNorm re-normalisation?

    python benchmarks/removal_vs_zeroing.py checkpoint=runs/experiment/default/train/cartpole-swingup/seed1/checkpoint.pt

Structural removal is not zeroing where a LayerNorm follows the pruned width (docs/method.md): the kept
channels are normalised over fewer channels. For each metric and FLOPs budget the same kept channels
are applied two ways to the trained agent, both evaluated before any fine-tuning on the same episodes:

- ``removed``: the channels are really removed (``pruning.prune.apply_pruning``);
- ``zeroed``: the dense model with the removed channels' *consuming* columns set to 0 (the channel's
  output is masked downstream; every LayerNorm still normalises over all channels).

``explained = (zeroed - removed) / (dense - removed)``: the share of the post-prune drop due to
re-normalisation (negative: removal is better than masking). Writes
``benchmarks/results/removal_vs_zeroing.json``.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "disable")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from pruning.config import tracking_config  # noqa: E402
from pruning.cost import LinearCost  # noqa: E402
from pruning.groups import model_groups  # noqa: E402
from pruning.prune import apply_pruning, select_channels  # noqa: E402
from pruning.study.cost_model import plan_rows  # noqa: E402
from pruning.study.integration import CHECKPOINT_KEY  # noqa: E402
from pruning.tracker import ImportanceTracker  # noqa: E402
from tdmpc.checkpoint import load_checkpoint  # noqa: E402
from tdmpc.config import TrainConfig, from_dict, validate  # noqa: E402
from tdmpc.trainer import Trainer  # noqa: E402

DEFAULTS = {"checkpoint": "", "metrics": "grad_acc,fisher,bayes,taylor,l1,l2,random", "ratios": "0.25,0.5,0.75",
            "episodes": 5, "out": str(ROOT / "benchmarks" / "results" / "removal_vs_zeroing.json")}


def evaluate(trainer: Trainer, episodes: int) -> float:
    """Mean return over ``episodes``, every RNG restored afterwards (each variant sees the same episodes)."""
    torch_state, env_state = torch.get_rng_state(), trainer.eval_env.get_rng_state()
    ret = trainer.evaluate(episodes)["return_mean"]
    torch.set_rng_state(torch_state)
    trainer.eval_env.set_rng_state(env_state)
    return ret


@torch.no_grad()
def zero_removed(groups, keep) -> None:
    """Zero the consuming columns of every removed channel (the dense model, masked)."""
    for g in groups:
        removed = torch.ones(g.size, dtype=torch.bool)
        removed[keep[g.name]] = False
        for s in g.slices:
            if s.dim == 1 and s.param_name == "weight":
                s.param.narrow(1, s.offset, g.size)[:, removed] = 0.0


def main(args: dict) -> dict:
    state = load_checkpoint(args["checkpoint"])
    cfg = dict(state["config"])
    cfg.pop("pruning", None)
    cfg.update(run_dir=None, logger={"wandb": {"mode": "disabled"}, "progress": False}, num_threads=1)
    run_dir = Path(tempfile.mkdtemp(prefix="removal_vs_zeroing."))  # the trainer's scratch dir (nothing kept)
    trainer = Trainer(validate(from_dict(TrainConfig, cfg)), run_dir)
    trainer.load_state(state)
    model = trainer.agent.model
    dense_state = copy.deepcopy(model.state_dict())
    tracker = ImportanceTracker(model, tracking_config(state["config"].get("pruning") or {}))
    tracker.load_state_dict(state["extras"][CHECKPOINT_KEY])
    tracker.close()
    dense = evaluate(trainer, args["episodes"])
    metrics = args["metrics"].split(",")
    all_scores = {m: tracker.scores(m) for m in metrics}  # weight norms read the dense weights: before pruning
    rows = []
    for metric in metrics:
        scores = all_scores[metric]
        for ratio in map(float, args["ratios"].split(",")):
            model.load_state_dict(dense_state)
            groups = model_groups(model)
            keep = select_channels(groups, scores, ratio, cost=LinearCost(groups, plan_rows(model, trainer.cfg.planner)))
            zero_removed(groups, keep)
            zeroed = evaluate(trainer, args["episodes"])
            model.load_state_dict(dense_state)
            apply_pruning(keep, model_groups(model))
            removed = evaluate(trainer, args["episodes"])
            drop = dense - removed
            rows.append({"metric": metric, "ratio": ratio, "dense": dense, "zeroed": zeroed, "removed": removed,
                         "explained": (zeroed - removed) / drop if abs(drop) > 1e-9 else None})
            print(json.dumps(rows[-1]), flush=True)
            trainer.agent.model = model = type(model)(model.obs_dim, model.action_dim, model.cfg).to(trainer.device)
            trainer.agent.planner.model = model
            model.load_state_dict(dense_state)
            model.eval()
    out = {"checkpoint": args["checkpoint"], "episodes": args["episodes"], "rows": rows,
           "loadavg": os.getloadavg(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    Path(args["out"]).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    from benchmarks.argv import parse_args  # noqa: E402

    main(parse_args(sys.argv[1:], DEFAULTS))
