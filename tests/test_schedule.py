"""Pruning schedules (pruning/schedule.py): ratio curves, validation and iterative pruning to the target."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pruning import model_groups, prune
from pruning.schedule import PruningSchedule, incremental_ratio, ratio_at
from tdmpc.config import ModelConfig
from tdmpc.world_model import WorldModel

OBS, ACT = 5, 2


def test_ratio_at_values():
    assert ratio_at(9, 0.6, 10, 20) == 0.0
    assert ratio_at(10, 0.6, 10, 20) == 0.0
    assert ratio_at(15, 0.6, 10, 20) == pytest.approx(0.3)  # cosine midpoint = target / 2
    assert ratio_at(12, 0.6, 10, 20) == pytest.approx(0.6 * (1 - math.cos(0.2 * math.pi)) / 2)
    assert ratio_at(12, 0.6, 10, 20, "linear") == pytest.approx(0.12)
    assert ratio_at(20, 0.6, 10, 20) == ratio_at(10**6, 0.6, 10, 20) == 0.6
    assert ratio_at(4, 0.5, 5, 5) == 0.0 and ratio_at(5, 0.5, 5, 5) == 0.5  # one-shot


@settings(max_examples=60, deadline=None)
@given(target=st.floats(0, 0.99), start=st.integers(0, 50), length=st.integers(0, 50),
       kind=st.sampled_from(["cosine", "linear"]))
def test_ratio_at_is_monotone_and_bounded(target, start, length, kind):
    end = start + length
    values = [ratio_at(s, target, start, end, kind) for s in range(start - 2, end + 3)]
    assert all(b >= a - 1e-12 for a, b in zip(values, values[1:]))
    assert all(0 <= v <= target for v in values)
    assert values[0] == 0 and values[-1] == target
    if kind == "cosine" and length > 0:  # the cosine ramp starts slower than the linear one
        assert ratio_at(start + length / 4, target, start, end) <= ratio_at(start + length / 4, target, start, end,
                                                                             "linear") + 1e-12


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"kind": "step"}, "kind='step'.*cosine\\|linear"), ({"target": 1.0}, "target=1.0.*\\[0, 1\\)"),
     ({"target": -0.1}, "target=-0.1"), ({"target": True}, "target=True"),
     ({"start_step": 10, "end_step": 5}, "end_step=5.*>= start_step=10"), ({"every": 0}, "every=0"),
     ({"finetune_steps": -1}, "finetune_steps=-1"), ({"start_step": 1.5}, "start_step=1.5")],
)
def test_schedule_validation_names_key_value_and_allowed(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        PruningSchedule(**kwargs)
    assert "\n" not in str(err.value)
    if "kind" in kwargs:
        with pytest.raises(ValueError, match="kind"):
            ratio_at(0, 0.5, 0, 1, kwargs["kind"])


def test_one_shot_prunes_once_to_target():
    s = PruningSchedule(target=0.5, start_step=100, end_step=100, finetune_steps=50)
    assert s.one_shot and s.last_step == 150
    assert s.prune_steps() == [100]
    assert [s.prune_at(t) for t in (0, 99, 100, 101, 150)] == [None, None, 0.5, None, None]
    assert PruningSchedule(target=0.0).prune_steps() == []


def test_iterative_schedule_prune_steps_and_ratios():
    s = PruningSchedule(kind="linear", target=0.6, start_step=0, end_step=100, every=30)
    assert s.prune_steps() == [30, 60, 90, 100]
    assert [s.prune_at(t) for t in s.prune_steps()] == pytest.approx([0.18, 0.36, 0.54, 0.6])
    assert all(s.prune_at(t) is None for t in range(101) if t not in s.prune_steps())
    c = PruningSchedule(kind="cosine", target=0.5, start_step=10, end_step=50, every=10)
    ratios = [c.prune_at(t) for t in c.prune_steps()]
    assert c.prune_steps() == [20, 30, 40, 50] and ratios[-1] == 0.5
    assert ratios == sorted(ratios) and ratios[1] == pytest.approx(0.25)


@settings(max_examples=200, deadline=None)
@given(original=st.integers(1, 5000), data=st.data())
def test_incremental_ratio_removes_exactly_the_missing_channels(original, data):
    removed_so_far = data.draw(st.integers(0, original - 1))
    current = original - removed_so_far
    cumulative = data.draw(st.floats(0, 0.999))
    r = incremental_ratio(cumulative, original, current)
    want = max(math.floor(cumulative * original + 1e-9) - removed_so_far, 0)
    assert 0 <= r < 1
    assert math.floor(r * current + 1e-9) == want  # what pruning.prune removes from the current model


def test_incremental_ratio_rejects_bad_counts():
    with pytest.raises(ValueError, match="current"):
        incremental_ratio(0.5, 10, 11)
    with pytest.raises(ValueError, match="cumulative"):
        incremental_ratio(1.0, 10, 5)


def _hidden_channels(model, prune_latent):
    return sum(g.size for g in model_groups(model, prune_latent))


@pytest.mark.parametrize("prune_latent", [False, True])
def test_iterative_pruning_reaches_target_fraction_of_original_channels(prune_latent):
    cfg = ModelConfig(enc_dim=24, mlp_dim=40, latent_dim=32, num_enc_layers=2, num_q=3, num_bins=11)
    model = WorldModel(OBS, ACT, cfg)
    schedule = PruningSchedule(kind="cosine", target=0.7, start_step=0, end_step=1000, every=150)
    original = _hidden_channels(model, prune_latent)
    gen = torch.Generator().manual_seed(0)
    history = []
    for step in schedule.prune_steps():
        cumulative = schedule.prune_at(step)
        groups = model_groups(model, prune_latent)  # rebuilt: sizes changed
        current = sum(g.size for g in groups)
        ratio = incremental_ratio(cumulative, original, current)
        prune(groups, {g.name: torch.rand(g.size, generator=gen) for g in groups}, ratio, scope="global")
        history.append(original - _hidden_channels(model, prune_latent))
    target_removed = math.floor(0.7 * original)
    assert len(history) == 7 and history == sorted(history)
    if prune_latent:  # whole simplices of 8 and equal ensemble widths may leave a remainder below 8
        assert target_removed - 7 <= history[-1] <= target_removed
    else:
        assert history[-1] == target_removed
    # Each intermediate prune also lands on its own cumulative target (up to the unit remainder).
    for step, removed in zip(schedule.prune_steps(), history):
        want = math.floor(schedule.prune_at(step) * original + 1e-9)
        assert want - (7 if prune_latent else 0) <= removed <= want
    model.eval()
    assert model.Q(model.encode(torch.randn(2, OBS)), torch.zeros(2, ACT), "all").shape == (3, 2, 11)
