"""FLOPs budgets (pruning/cost.py, ``prune(..., cost_rows=...)``) against the analytic planned-action FLOPs.

``pruning.study.cost_model.plan_flops`` is itself checked against ``torch.utils.flop_counter`` in test_measure.py;
here the budget's incremental cost must equal it exactly after every selection, and every metric's
selection must land within 1 % of the requested FLOPs.
"""

from __future__ import annotations

import pytest
import torch

from pruning.cost import LinearCost
from pruning.groups import model_groups
from pruning.prune import prune, select_channels
from pruning.study.cost_model import plan_flops, plan_rows
from tdmpc.config import TrainConfig, resolve_presets
from tdmpc.world_model import WorldModel


def preset(size: str) -> TrainConfig:
    return resolve_presets(TrainConfig(model_size=size))


def model_of(cfg: TrainConfig, obs: int = 5, act: int = 1) -> WorldModel:
    torch.manual_seed(0)
    return WorldModel(obs, act, cfg.model)


def score_sets(groups, seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """Differently shaped score vectors: uniform random, latent-first, last-layers-first."""
    gen = torch.Generator().manual_seed(seed)
    rand = {g.name: torch.rand(g.size, generator=gen, dtype=torch.float64) for g in groups}
    latent_low = {n: s + (0.0 if n == "latent" else 1.0) for n, s in rand.items()}
    late_low = {g.name: rand[g.name] * (0.1 if g.name.endswith("/3") else 1.0) for g in groups}
    return {"random": rand, "latent_first": latent_low, "late_first": late_low}


def test_linear_cost_equals_plan_flops_dense_and_after_pruning():
    cfg = preset("cpu")
    model = model_of(cfg)
    groups = model_groups(model)
    assert LinearCost(groups, plan_rows(model, cfg.planner)).total == plan_flops(model, cfg.planner)
    prune(model, score_sets(groups, 1)["random"], 0.4)
    groups = model_groups(model)
    assert LinearCost(groups, plan_rows(model, cfg.planner)).total == plan_flops(model, cfg.planner)


@pytest.mark.parametrize("size", ["cpu", "5"])
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_flops_budget_lands_within_one_percent_for_every_score_shape(size, ratio):
    cfg = preset(size)
    for name, scores in score_sets(model_groups(model_of(cfg)), seed=3).items():
        model = model_of(cfg)
        dense = plan_flops(model, cfg.planner)
        groups = model_groups(model)
        cost = LinearCost(groups, plan_rows(model, cfg.planner))
        keep = select_channels(groups, scores, ratio, cost=cost)
        prune(model, scores, ratio, cost_rows=plan_rows(model, cfg.planner))
        after = plan_flops(model, cfg.planner)
        assert after == pytest.approx(cost.total, rel=1e-12), name  # the incremental cost is exact
        assert abs(after / dense - (1 - ratio)) <= 0.01, (name, after / dense)
        assert after <= (1 - ratio) * dense * (1 + 1e-9), name  # the budget is met, never exceeded
        assert {n: len(v) for n, v in keep.items()} == {g.name: g.size for g in model_groups(model)}


def test_a_latent_channel_costs_in_every_component_that_reads_or_writes_it():
    cfg = preset("cpu")
    model = model_of(cfg)
    groups = model_groups(model)
    cost = LinearCost(groups, plan_rows(model, cfg.planner))
    H, iters = cfg.planner.horizon, cfg.planner.iterations
    P, n = cfg.planner.num_pi_trajs, cfg.planner.num_samples + cfg.planner.num_pi_trajs
    h, enc = cfg.model.mlp_dim, cfg.model.enc_dim
    q = min(2, cfg.model.num_q)
    by_hand = 2 * (enc * 1                                   # encoder output row, 1 row
                   + h * ((H - 1) * P + iters * H * n) * 2       # dynamics output row and input column
                   + h * iters * H * n                           # reward input column
                   + h * (H * P + iters * n)                     # policy input column
                   + h * iters * n * q)                          # q evaluated members' input columns
    assert cost.price(["latent"], 1) == pytest.approx(by_hand, rel=1e-12)


def test_a_cost_budget_needs_the_global_scope():
    cfg = preset("cpu")
    model = model_of(cfg)
    groups = model_groups(model)
    with pytest.raises(ValueError, match="scope must be 'global'"):
        select_channels(groups, score_sets(groups, 0)["random"], 0.5, scope="per_group",
                        cost=LinearCost(groups, plan_rows(model, cfg.planner)))
