"""Importance metrics (pruning/importance.py, scores of pruning/tracker.py) against their formulas.

Every expected value is computed here with explicit numpy from the parameters and their ``.grad``,
slice by slice, independently of the vectorised implementation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from pruning.config import TrackingConfig
from pruning.groups import model_groups
from pruning.importance import normalize_scores
from pruning.metrics import metric_names
from pruning.tracker import ImportanceTracker

BETA = 0.9


class Tiny(nn.Module):
    """Two components with one hidden group each (a LayerNorm in ``a``), plus a tied frozen copy of ``b``."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 2))
        self.b = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2))
        self.b_target = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2)).requires_grad_(False)
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))

    @property
    def components(self):
        return {"a": self.a, "b": self.b}

    def shape_tied(self):
        return [(self.b, self.b_target)]


def tiny_world_model() -> nn.Module:
    """A small TD-MPC world model (5-dim observation, 1-dim action) for tests on the real component layout."""
    from tdmpc.config import ModelConfig
    from tdmpc.world_model import WorldModel

    return WorldModel(5, 1, ModelConfig(enc_dim=16, mlp_dim=16, latent_dim=16, num_enc_layers=2, num_q=2,
                                        num_bins=11))


def set_grads(model: nn.Module, seed: int) -> None:
    """Deterministic pseudo-gradients on every parameter (also on the frozen copy, which must be ignored)."""
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen) * (100.0 if not p.requires_grad else 1.0)


def channel_sums(model: Tiny, fn) -> dict[str, np.ndarray]:
    """Per-channel sum of ``fn(theta, g)`` over the slices of each group, written out by hand."""
    def np_(t):
        return np.zeros(1) if t is None else t.detach().double().numpy()

    a0, ln, a3 = model.a[0], model.a[1], model.a[3]
    b0, b2 = model.b[0], model.b[2]
    ga = (fn(np_(a0.weight), np_(a0.weight.grad)).sum(1) + fn(np_(a0.bias), np_(a0.bias.grad))
          + fn(np_(ln.weight), np_(ln.weight.grad)) + fn(np_(ln.bias), np_(ln.bias.grad))
          + fn(np_(a3.weight), np_(a3.weight.grad)).sum(0))
    gb = (fn(np_(b0.weight), np_(b0.weight.grad)).sum(1) + fn(np_(b0.bias), np_(b0.bias.grad))
          + fn(np_(b2.weight), np_(b2.weight.grad)).sum(0))
    return {"a/0": ga, "b/0": gb}


def signal(model: Tiny, metric: str, grad_acc_variant="l2", grad_sq_variant="diag") -> dict[str, np.ndarray]:
    g2 = channel_sums(model, lambda t, g: g * g)
    tg = channel_sums(model, lambda t, g: t * g)
    t2g2 = channel_sums(model, lambda t, g: t * t * g * g)
    out = {}
    for k in g2:
        if metric == "grad_acc":
            out[k] = np.sqrt(g2[k]) if grad_acc_variant == "l2" else np.abs(tg[k])
        elif metric == "grad_sq":
            out[k] = g2[k] if grad_sq_variant == "diag" else t2g2[k]
        elif metric == "taylor":
            out[k] = tg[k] ** 2
    return out


def tracker(model, **kw) -> ImportanceTracker:
    kw = {"beta": BETA, "normalize": "none", "snapshot_interval": 0, **kw}
    return ImportanceTracker(model, TrackingConfig(**kw))


def one_step_tracker(model, **kw) -> ImportanceTracker:
    """A tracker (default config but for ``kw``) that has read one set of seed-0 gradients."""
    t = ImportanceTracker(model, TrackingConfig(snapshot_interval=0, **kw))
    set_grads(model, 0)
    t.step(1)
    return t


def test_groups_of_the_tiny_model():
    groups = model_groups(Tiny())
    assert [(g.name, g.size) for g in groups] == [("a/0", 4), ("b/0", 3)]


@pytest.mark.parametrize(
    "metric, variant",
    [("grad_acc", {}), ("grad_acc", {"grad_acc_variant": "taylor_abs"}), ("grad_sq", {}),
     ("grad_sq", {"grad_sq_variant": "obd"}), ("taylor", {})],
)
def test_gradient_metric_equals_its_formula_after_one_step(metric, variant):
    model = Tiny()
    t = tracker(model, **variant)
    set_grads(model, 0)
    assert t.step(1)
    expected = signal(model, metric, **variant)
    for smoothing in ("cumulative", "ema"):  # one step: the bias-corrected EMA is the signal itself
        got = t.scores(metric, smoothing=smoothing)
        assert list(got) == ["a/0", "b/0"]
        for k in expected:
            assert got[k].dtype == torch.float64 and got[k].shape == (len(expected[k]),)
            np.testing.assert_allclose(got[k].numpy(), expected[k], rtol=1e-5)
    assert float(t.scores(metric)["a/0"].sum()) > 0


def producing_sums(model: Tiny, fn) -> dict[str, np.ndarray]:
    """Per-channel sum of ``fn(theta)`` over the producing row and bias only (written out by hand)."""
    def np_(t):
        return t.detach().double().numpy()

    a0, b0 = model.a[0], model.b[0]
    return {"a/0": fn(np_(a0.weight)).sum(1) + fn(np_(a0.bias)), "b/0": fn(np_(b0.weight)).sum(1) + fn(np_(b0.bias))}


def test_weight_baselines_equal_their_formulas_and_ignore_the_frozen_copy():
    model = Tiny()
    t = tracker(model)
    l1 = producing_sums(model, np.abs)  # filter norm: the weights that produce the channel
    l2 = {k: np.sqrt(v) for k, v in producing_sums(model, np.square).items()}
    l1_group = channel_sums(model, lambda th, g: np.abs(th))  # the channel's whole slice
    l2_group = {k: np.sqrt(v) for k, v in channel_sums(model, lambda th, g: th * th).items()}
    assert not np.allclose(l1["a/0"], l1_group["a/0"])  # the LayerNorm and next columns make a difference
    for metric, expected in (("l1", l1), ("l2", l2), ("l1_group", l1_group), ("l2_group", l2_group)):
        got = t.scores(metric)
        for k in expected:
            np.testing.assert_allclose(got[k].numpy(), expected[k], rtol=1e-6)
    with torch.no_grad():  # the tied copy has requires_grad=False: changing it changes nothing
        for p in model.b_target.parameters():
            p.mul_(1000.0)
    set_grads(model, 3)
    t.step(1)
    np.testing.assert_allclose(t.scores("l1")["b/0"].numpy(), l1["b/0"], rtol=1e-6)
    np.testing.assert_allclose(t.scores("l1_group")["b/0"].numpy(), l1_group["b/0"], rtol=1e-6)
    np.testing.assert_allclose(t.scores("grad_sq", "cumulative")["b/0"].numpy(), signal(model, "grad_sq")["b/0"],
                               rtol=1e-5)


def test_target_q_slices_are_tied_but_never_scored():
    model = tiny_world_model()
    groups = model_groups(model)
    tied = [s for g in groups for s in g.slices if not s.param.requires_grad]
    assert tied, "the target Q-ensemble must appear in the groups (tied slices)"
    t = ImportanceTracker(model, TrackingConfig(snapshot_interval=0, normalize="none"), groups=groups)
    set_grads(model, 0)
    t.step(1)
    before = {m: t.scores(m, "cumulative") for m in metric_names()}
    with torch.no_grad():
        for p in model.target_qs.parameters():
            p.mul_(50.0)
            p.grad = torch.full_like(p, 1e3)
    t2 = ImportanceTracker(model, TrackingConfig(snapshot_interval=0, normalize="none"), groups=groups)
    set_grads(model, 0)  # same online gradients again (frozen ones get new huge values)
    for p in model.target_qs.parameters():
        p.grad = torch.full_like(p, 1e3)
    t2.step(1)
    for m in metric_names():
        after = t2.scores(m, "cumulative")
        for k in before[m]:
            assert torch.allclose(before[m][k], after[k], rtol=1e-6, atol=0), (m, k)


def test_smoothing_matches_numpy_over_a_sequence_of_random_gradients():
    model = Tiny()
    t = tracker(model)
    T = 9
    xs = {m: [] for m in ("grad_acc", "grad_sq", "taylor")}
    for step in range(1, T + 1):
        set_grads(model, 100 + step)
        t.step(step)
        for m in xs:
            xs[m].append(np.concatenate(list(signal(model, m).values())))
    w = (1 - BETA) * BETA ** np.arange(T - 1, -1, -1) / (1 - BETA**T)  # bias-corrected EMA weights
    assert np.isclose(w.sum(), 1.0)
    for m, seq in xs.items():
        x = np.stack(seq)  # (T, C)
        cum = np.concatenate(list(t.scores(m, "cumulative").values()))
        ema = np.concatenate(list(t.scores(m, "ema").values()))
        np.testing.assert_allclose(cum, x.sum(0), rtol=1e-5)
        np.testing.assert_allclose(ema, w @ x, rtol=1e-5)


def test_interval_reads_gradients_only_every_n_updates():
    model = Tiny()
    t = tracker(model, interval=3)
    total = 0.0
    for step in range(1, 8):
        set_grads(model, step)
        assert t.step(step) == (step % 3 == 0)
        if step % 3 == 0:
            total = total + np.concatenate(list(signal(model, "grad_sq").values()))
    assert t.num_steps == 2
    np.testing.assert_allclose(np.concatenate(list(t.scores("grad_sq", "cumulative").values())), total, rtol=1e-5)


def test_scores_before_any_step_are_zero_and_finite():
    t = tracker(Tiny(), normalize="mean")
    for m in ("grad_acc", "fisher", "bayes", "taylor"):
        for v in t.scores(m).values():
            assert torch.equal(v, torch.zeros_like(v))


def test_normalisation_divides_by_the_component_statistic():
    model = Tiny()
    t = tracker(model)
    set_grads(model, 5)
    t.step(1)
    raw = t.scores("grad_sq", normalize="none")
    for how, fn in (("mean", np.mean), ("max", np.max), ("sum", np.sum)):
        got = t.scores("grad_sq", normalize=how)
        for k, v in raw.items():
            np.testing.assert_allclose(got[k].numpy(), v.numpy() / fn(v.numpy()), rtol=1e-12)
    assert t.cfg.normalize == "none" and torch.equal(t.scores("grad_sq")["a/0"], raw["a/0"])


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(0.0, 1e3, allow_nan=False, allow_subnormal=False), min_size=1, max_size=12),
    st.lists(st.integers(0, 2), min_size=12, max_size=12),
    st.sampled_from(["mean", "max", "sum"]),
    st.floats(1e-3, 1e3),
)
def test_normalisation_laws(values, comps, how, scale):
    """Per component: mean -> 1, max -> 1, sum -> 1 (unless all zero); invariant to a per-component scale."""
    x = torch.tensor(values, dtype=torch.float64)
    idx = torch.tensor(comps[: len(values)])
    y = normalize_scores(x, idx, how)
    for c in idx.unique():
        sel = idx == c
        stat = {"mean": y[sel].mean(), "max": y[sel].max(), "sum": y[sel].sum()}[how]
        if bool((x[sel] == 0).all()):
            assert bool((y[sel] == 0).all())
        else:
            assert abs(float(stat) - 1.0) < 1e-9
    scaled = x * torch.where(idx == 0, scale, 1.0)
    assert torch.allclose(normalize_scores(scaled, idx, how), y, rtol=1e-9, atol=0)


def test_latent_coupling_is_its_own_component_for_normalisation():
    model = tiny_world_model()
    t = one_step_tracker(model, normalize="max")
    scores = t.scores("grad_acc")
    comp = {g.name: g.component for g in t.groups}
    assert comp["latent"] == "latent"
    for c in set(comp.values()):
        assert torch.cat([v for k, v in scores.items() if comp[k] == c]).max().item() == pytest.approx(1.0)


def test_normalize_by_group_gives_every_layer_mean_one_and_ignores_a_layers_gradient_scale():
    model = tiny_world_model()
    t = one_step_tracker(model, normalize_by="group")
    by_group = t.scores("grad_sq")
    assert len(by_group) > len(t.layout.components)  # several layers per component
    for name, s in by_group.items():
        assert s.mean().item() == pytest.approx(1.0), name
    by_component = t.scores("grad_sq", normalize_by="component")
    comp = {g.name: g.component for g in t.groups}
    for c in set(comp.values()):
        assert torch.cat([v for k, v in by_component.items() if comp[k] == c]).mean().item() == pytest.approx(1.0)
    assert any(abs(s.mean().item() - 1.0) > 1e-3 for s in by_component.values())  # layers differ per component
    # Scaling the gradients of one layer (here: everything the reward head's 2nd hidden width touches)
    # changes its raw squared-gradient scores by the square of the scale, but not its group-normalised scores.
    u = ImportanceTracker(model, TrackingConfig(snapshot_interval=0, normalize_by="group"))
    set_grads(model, 0)
    group = [g for g in u.groups if g.component == "reward"][-1]  # the head's last hidden width
    for p in {id(sl.param): sl.param for sl in group.slices}.values():
        p.grad.mul_(10.0)
    u.step(1)
    raw_u, raw_t = u.scores("grad_sq", normalize="none")[group.name], t.scores("grad_sq", normalize="none")[group.name]
    assert torch.allclose(raw_u, 100 * raw_t, rtol=1e-5)  # float32 gradients
    assert torch.allclose(u.scores("grad_sq")[group.name], by_group[group.name], rtol=1e-5)
    with pytest.raises(ValueError, match="normalize_by"):
        t.scores("grad_sq", normalize_by="layer")


def test_random_baseline_is_seeded_reproducible_and_survives_a_checkpoint(tmp_path):
    a, b, c = (tracker(Tiny(), seed=s) for s in (7, 7, 8))
    ra, rb, rc = (torch.cat(list(t.scores("random").values())) for t in (a, b, c))
    assert torch.equal(ra, rb) and not torch.equal(ra, rc)
    assert ra.shape == (7,) and bool(((ra >= 0) & (ra < 1)).all())
    torch.save(a.state_dict(), tmp_path / "s.pt")
    d = tracker(Tiny(), seed=7)
    d.metrics["random"].values.zero_()  # whatever it drew, the checkpoint wins
    d.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert torch.equal(torch.cat(list(d.scores("random").values())), ra)


def test_unknown_or_untracked_metric_is_rejected():
    t = tracker(Tiny(), metrics=["l1", "fisher"])
    with pytest.raises(ValueError, match="not tracked"):
        t.scores("bayes")
    with pytest.raises(ValueError, match="unknown metric 'magnitude'; registered: grad_acc"):
        t.scores("magnitude")
    with pytest.raises(ValueError, match="smoothing"):
        t.scores("fisher", smoothing="window")
    with pytest.raises(ValueError, match="normalize"):
        t.scores("fisher", normalize="median")


def test_channel_sums_of_every_statistic_at_once_equal_their_formulas_and_a_missing_gradient_counts_zero():
    model = Tiny()
    t = tracker(model)
    set_grads(model, 5)
    model.a[1].bias.grad = None  # a parameter the loss did not reach: its terms are 0, not an error
    stats = ["g2", "tg", "t2g2", "abs", "t2"]
    got = dict(zip(stats, t.layout.channel_sums(stats)))
    formulas = {"g2": lambda th, g: g * g, "tg": lambda th, g: th * g, "t2g2": lambda th, g: th * th * g * g,
                "abs": lambda th, g: np.abs(th), "t2": lambda th, g: th * th}
    for s, fn in formulas.items():
        expected = channel_sums(model, fn)
        for k, v in t.layout.split(got[s]).items():
            np.testing.assert_allclose(v.numpy(), expected[k], rtol=1e-6, atol=1e-12)
    with pytest.raises(ValueError, match="unknown statistic"):
        t.layout.channel_sums(["g3"])
