"""Hook-based metrics (``fisher``, ``bayes``; pruning/gates.py) against an independent ``torch.func`` reference.

The reference writes each model's forward by hand with an explicit multiplicative gate on every channel
(at every read of it), and takes per-sample derivatives with ``vmap(grad(...))``: nothing of
``pruning/`` is used to compute the expected values.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import grad, vmap

from pruning.config import TrackingConfig
from pruning.groups import Coupling
from pruning.tracker import ImportanceTracker
from tdmpc.layers import QEnsemble

BETA = 0.9


def cfg(**kw) -> TrackingConfig:
    return TrackingConfig(**{"metrics": ["fisher", "bayes"], "beta": BETA, "normalize": "none",
                             "snapshot_interval": 0, **kw})


class MLP(nn.Module):
    """One component: Linear -> LayerNorm -> Tanh -> Linear -> LayerNorm -> Tanh -> Linear (groups a/0, a/3)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5), nn.Tanh(), nn.Linear(5, 4), nn.LayerNorm(4),
                               nn.Tanh(), nn.Linear(4, 2))
        with torch.no_grad():
            for p in self.parameters():
                p.add_(0.3 * torch.randn_like(p))

    @property
    def components(self):
        return {"a": self.a}


def mlp_ref_loss(model: MLP, g0, g1, x, y):
    """Per-sample loss of one sample with gates ``g0`` (5) and ``g1`` (4) on the two hidden widths."""
    a = model.a
    h = torch.tanh(F.layer_norm(F.linear(x, a[0].weight, a[0].bias), (5,), a[1].weight, a[1].bias)) * g0
    h = torch.tanh(F.layer_norm(F.linear(h, a[3].weight, a[3].bias), (4,), a[4].weight, a[4].bias)) * g1
    return ((F.linear(h, a[6].weight, a[6].bias) - y) ** 2).sum()


def per_sample_gate_grads(loss, gates, *batch):
    """``(B, C)``: d loss_i / d gates for every sample (gates concatenated in order)."""
    fn = vmap(grad(loss, argnums=tuple(range(len(gates)))), in_dims=(*(None,) * len(gates), *(0,) * len(batch)))
    return torch.cat([g.detach().double() for g in fn(*gates, *batch)], dim=-1)


def tracked_mse_step(model: MLP, t: ImportanceTracker) -> torch.Tensor:
    """One tracked backward of the MSE loss on a fresh batch; checks ``fisher`` against the ``torch.func``
    reference and returns the per-sample gate derivatives ``(8, 9)``."""
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    ((model.a(x) - y) ** 2).sum(-1).mean().backward()
    t.step(1)
    d = per_sample_gate_grads(lambda g0, g1, xi, yi: mlp_ref_loss(model, g0, g1, xi, yi),
                              (torch.ones(5), torch.ones(4)), x, y)
    got = torch.cat(list(t.scores("fisher").values()))
    np.testing.assert_allclose(got.numpy(), d.square().mean(0).numpy(), rtol=1e-5)
    return d


def test_fisher_equals_per_sample_torch_func_reference_on_an_mlp_with_layernorm():
    model = MLP()
    t = ImportanceTracker(model, cfg(), samples=8)
    d = tracked_mse_step(model, t)
    # bayes after one step: the EMA posterior has no spread, its mean is |dL/dm| of the mini-batch
    np.testing.assert_allclose(torch.cat(list(t.scores("bayes").values())).numpy(), d.mean(0).abs().numpy(),
                               rtol=1e-5)
    # Fisher is not the squared mini-batch gradient: E[d^2] >= (E d)^2, strictly when samples disagree
    assert bool((d.square().mean(0) > d.mean(0).square() * 1.01).all())


def test_capture_ignores_no_grad_forwards_and_untracked_updates():
    model = MLP()
    t = ImportanceTracker(model, cfg(interval=2), samples=4)
    with torch.no_grad():
        model.a(torch.randn(4, 3))  # acting: nothing captured
    assert t.gates.take().gates is None
    model.a(torch.randn(4, 3)).sum().backward()
    assert not t.step(1)  # untracked update: its capture is dropped
    assert t.gates.take().gates is None and t.metrics["fisher"].n == 0


class Coupled(nn.Module):
    """A shared 4-dim code: produced by ``enc``, read by ``head`` once and by ``dyn`` at every horizon step."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.enc = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 4))
        self.dyn = nn.Sequential(nn.Linear(4 + 1, 6), nn.Tanh(), nn.Linear(6, 4))
        self.head = nn.Sequential(nn.Linear(4, 2))

    @property
    def components(self):
        return {"enc": self.enc, "dyn": self.dyn, "head": self.head}

    def couplings(self):
        return [Coupling("code", 4, producers=[self.enc[-1], self.dyn[-1]],
                         consumers=[(self.dyn[0], 0), (self.head[0], 0)])]

    def loss(self, x, acts, y):
        """Mean over the batch of a 2-step rollout loss; ``acts`` is ``(H, B, 1)`` (batch innermost)."""
        z = self.enc(x)
        total = 0.0
        for a in acts:
            z = self.dyn(torch.cat([z, a], -1))
            total = total + ((self.head(z) - y) ** 2).sum(-1)
        return total.mean()


def coupled_ref_loss(m: Coupled, g_enc, g_dyn, g_code, x, acts, y):
    """One sample, with gates on enc's hidden width, dyn's hidden width and on every read of the code."""
    z = F.linear(torch.tanh(F.linear(x, m.enc[0].weight, m.enc[0].bias)) * g_enc, m.enc[2].weight, m.enc[2].bias)
    total = 0.0
    for a in acts:
        h = torch.tanh(F.linear(torch.cat([z * g_code, a]), m.dyn[0].weight, m.dyn[0].bias)) * g_dyn
        z = F.linear(h, m.dyn[2].weight, m.dyn[2].bias)
        total = total + ((F.linear(z * g_code, m.head[0].weight, m.head[0].bias) - y) ** 2).sum()
    return total


def assert_coupled_fisher_is_the_reference(model: Coupled, t: ImportanceTracker, x, acts, y) -> None:
    """``t``'s fisher scores after one step on ``(x, acts, y)`` equal the ``torch.func`` per-sample reference."""
    d = per_sample_gate_grads(lambda ge, gd, gc, xi, ai, yi: coupled_ref_loss(model, ge, gd, gc, xi, ai, yi),
                              (torch.ones(6), torch.ones(6), torch.ones(4)), x, acts.transpose(0, 1), y)
    scores = t.scores("fisher")
    got = torch.cat([scores["enc/0"], scores["dyn/0"], scores["code"]])
    np.testing.assert_allclose(got.numpy(), d.square().mean(0).numpy(), rtol=1e-5)


def test_fisher_of_a_coupled_dimension_sums_every_read_over_the_horizon():
    model = Coupled()
    B, H = 6, 2
    t = ImportanceTracker(model, cfg(), samples=B)
    assert [g.name for g in t.groups] == ["enc/0", "dyn/0", "code"]
    x, acts, y = torch.randn(B, 3), torch.randn(H, B, 1), torch.randn(B, 2)
    model.loss(x, acts, y).backward()
    t.step(1)
    assert_coupled_fisher_is_the_reference(model, t, x, acts, y)


def test_bayes_moments_over_steps_match_the_reference_signal():
    model = MLP()
    t = ImportanceTracker(model, cfg(bayes_kappa=2.0), samples=5)
    gen = torch.Generator().manual_seed(3)
    seq = []
    for step in range(1, 8):
        x, y = torch.randn(5, 3, generator=gen), torch.randn(5, 2, generator=gen)
        model.zero_grad()
        ((model.a(x) - y) ** 2).sum(-1).mean().backward()
        t.step(step)
        d = per_sample_gate_grads(lambda g0, g1, xi, yi: mlp_ref_loss(model, g0, g1, xi, yi),
                                  (torch.ones(5), torch.ones(4)), x, y)
        seq.append(d.mean(0).abs().numpy())
    s = np.stack(seq)
    T = len(s)
    w = (1 - BETA) * BETA ** np.arange(T - 1, -1, -1) / (1 - BETA**T)
    mean_e = w @ s
    std_e = np.sqrt(w @ (s - mean_e) ** 2)
    for smoothing, mean, std in (("cumulative", s.mean(0), s.std(0)), ("ema", mean_e, std_e)):
        got = torch.cat(list(t.scores("bayes", smoothing).values())).numpy()
        np.testing.assert_allclose(got, mean + 2.0 * std, rtol=1e-5)
        np.testing.assert_allclose(torch.cat(list(t.snr(smoothing).values())).numpy(), mean / std, rtol=1e-4)


class Ens(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.qs = QEnsemble([nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5), nn.Mish(), nn.Linear(5, 2))
                             for _ in range(2)])

    @property
    def components(self):
        return {"qs": self.qs}


def test_stacked_ensemble_runs_member_hooks_and_stays_bit_identical():
    model = Ens()
    x = torch.randn(4, 7, 3, requires_grad=True)
    out_plain = model.qs(x)
    out_plain.square().sum((0, 1, 3)).mean().backward()  # mean over the 7 samples (dim 2)
    grads_plain = [p.grad.clone() for p in model.parameters()] + [x.grad.clone()]
    model.zero_grad()
    x.grad = None
    t = ImportanceTracker(model, cfg(), samples=7)
    out = model.qs(x)
    assert torch.equal(out, out_plain)
    out.square().sum((0, 1, 3)).mean().backward()
    assert all(torch.equal(a, b) for a, b in zip(grads_plain, [p.grad for p in model.parameters()] + [x.grad]))
    t.step(1)
    # reference: member e alone, with a gate on its hidden width; per-sample = position mod 7
    for e, member in enumerate(model.qs.members):
        def loss(g, xi, m=member):  # xi: (4, 3), the positions of one sample
            h = F.mish(F.layer_norm(F.linear(xi, m[0].weight, m[0].bias), (5,), m[1].weight, m[1].bias)) * g
            return F.linear(h, m[3].weight, m[3].bias).square().sum()
        d = vmap(grad(loss), in_dims=(None, 1))(torch.ones(5), x.detach()).detach().double()
        np.testing.assert_allclose(t.scores("fisher")[f"qs/{e}/0"].numpy(), d.square().mean(0).numpy(), rtol=1e-5)


def test_the_batch_must_be_the_innermost_leading_dimension():
    """Positions map to samples as ``p mod S``: a batch of another size, and a ``(batch, horizon, features)``
    input (its rows a multiple of the batch, but sample-major), are refused instead of mixing samples."""
    model = MLP()
    ImportanceTracker(model, cfg(), samples=3)
    with pytest.raises(RuntimeError, match=r"shape \(4, 4\) does not hold samples=3"):
        model.a(torch.randn(4, 3)).sum().backward()
    with pytest.raises(RuntimeError, match=r"shape \(3, 2, 4\) does not hold samples=3 .*not \(batch, horizon"):
        model.a(torch.randn(3, 2, 3)).sum().backward()
    model.a(torch.randn(2, 3, 3)).sum().backward()  # (horizon, batch, features): fine


def test_a_frozen_layer_is_scored_like_a_trained_one():
    """Only tied copies are left out of scoring, not every parameter without ``requires_grad``: a frozen
    consumer used to give its producer's channels zero ``fisher`` (pruned first), a frozen producer zero ``l2``."""
    model = MLP()
    model.a[6].requires_grad_(False)  # the last layer, consumer of a/3
    model.a[0].requires_grad_(False)  # the first layer, producer of a/0
    t = ImportanceTracker(model, cfg(metrics=["fisher", "l2", "grad_sq"]), samples=8)
    tracked_mse_step(model, t)
    rows = torch.cat([model.a[0].weight, model.a[0].bias[:, None]], 1).detach().double()
    np.testing.assert_allclose(t.scores("l2")["a/0"].numpy(), rows.norm(dim=1).numpy(), rtol=1e-6)
    # grad_sq of a/3: its own row and LayerNorm elements have gradients, the frozen consumer's columns none
    a3 = torch.cat([model.a[3].weight.grad, model.a[3].bias.grad[:, None], model.a[4].weight.grad[:, None],
                    model.a[4].bias.grad[:, None]], 1).double()
    np.testing.assert_allclose(t.scores("grad_sq")["a/3"].numpy(), a3.square().sum(1).numpy(), rtol=1e-6)


def test_fisher_with_a_gradient_penalty_equals_the_per_sample_reference():
    """A ``create_graph`` backward (the inner gradient of an input-gradient penalty) used to crash the capture
    (``out=`` with a gradient that requires grad) and would have added gradients that are not the loss's. It
    captures nothing itself; the loss's own backward captures the whole derivative, the path through the
    penalty's gradient graph included (``_Tap`` on the gradient)."""
    model, lam = MLP(), 0.7
    t = ImportanceTracker(model, cfg(), samples=8)
    x, y = torch.randn(8, 3, requires_grad=True), torch.randn(8, 2)
    out = model.a(x)
    (gx,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    (((out - y) ** 2).sum(-1) + lam * gx.square().sum(-1)).mean().backward()
    t.step(1)

    def loss(g0, g1, xi, yi):
        def f(xv):
            a = model.a
            h = torch.tanh(F.layer_norm(F.linear(xv, a[0].weight, a[0].bias), (5,), a[1].weight, a[1].bias)) * g0
            h = torch.tanh(F.layer_norm(F.linear(h, a[3].weight, a[3].bias), (4,), a[4].weight, a[4].bias)) * g1
            return F.linear(h, a[6].weight, a[6].bias)
        return ((f(xi) - yi) ** 2).sum() + lam * grad(lambda xv: f(xv).sum())(xi).square().sum()

    d = per_sample_gate_grads(loss, (torch.ones(5), torch.ones(4)), x.detach(), y)
    got = torch.cat(list(t.scores("fisher").values()))
    np.testing.assert_allclose(got.numpy(), d.square().mean(0).numpy(), rtol=1e-5)
    without = per_sample_gate_grads(lambda g0, g1, xi, yi: mlp_ref_loss(model, g0, g1, xi, yi),
                                    (torch.ones(5), torch.ones(4)), x.detach(), y)
    assert not np.allclose(got.numpy(), without.square().mean(0).numpy(), rtol=1e-2)  # the penalty counts


def test_gate_interval_captures_only_every_nth_update_and_removes_the_hooks_between():
    model = MLP()
    t = ImportanceTracker(model, cfg(gate_interval=3), samples=4)
    for update in range(1, 8):
        x = torch.randn(4, 3)
        assert (t.gates is not None) == (update % 3 == 0 or update == 1)  # on at start, then only before 3, 6
        model.a(x).sum().backward()
        t.step(update)
    assert t.num_steps == 7 and t.metrics["fisher"].n == 2 and t.metrics["bayes"].n == 2
    assert (t.gates is None) and not any(m._forward_pre_hooks for m in model.modules())


def test_stacked_ensemble_is_captured_once_per_layer_including_member_subsets():
    """One hook per stacked layer (none on the members); a call on a subset or permutation of members
    (``members=[1]``, ``[1, 0]``, as ``Q(..., return_type="avg")``) adds to those members only."""
    model = Ens()
    t = ImportanceTracker(model, cfg(), samples=7)
    assert not any(m._forward_pre_hooks for m in model.qs.members.modules())
    assert len(model.qs._stacked_input_hooks) == 1  # the second Linear reads the groups qs/e/0
    x = torch.randn(4, 7, 3)
    loss = sum(model.qs(x, members=idx).square().sum((0, 1, 3)).mean() for idx in (None, [1], [1, 0]))
    loss.backward()
    t.step(1)
    for e, member in enumerate(model.qs.members):
        def loss(g, xi, m=member, k=2 + e):  # member 0 is read by two calls, member 1 by three
            h = F.mish(F.layer_norm(F.linear(xi, m[0].weight, m[0].bias), (5,), m[1].weight, m[1].bias)) * g
            return k * F.linear(h, m[3].weight, m[3].bias).square().sum()
        d = vmap(grad(loss), in_dims=(None, 1))(torch.ones(5), x).detach().double()
        np.testing.assert_allclose(t.scores("fisher")[f"qs/{e}/0"].numpy(), d.square().mean(0).numpy(), rtol=1e-5)
    t.close()
    assert not model.qs._stacked_input_hooks


def test_an_indexed_ensemble_call_is_captured_like_the_list_call():
    """``forward_indexed`` (members as an int64 tensor: how a compiled agent's update, given its noise, calls
    ``Q(..., return_type="avg")``) is seen by the gate hooks like ``forward(members=[...])``; it used to skip
    them, so those updates lost the policy loss's Q evidence (channels of the Q members and of the latent)."""
    model = Ens()
    t = ImportanceTracker(model, cfg(), samples=7)
    x = torch.randn(4, 7, 3)
    out = model.qs.forward_indexed(x, torch.tensor([1, 0]))
    assert torch.equal(out, model.qs(x, members=[1, 0]).detach())
    out.square().sum((0, 1, 3)).mean().backward()
    t.step(1)
    for e, member in enumerate(model.qs.members):
        def loss(g, xi, m=member):  # each member read once
            h = F.mish(F.layer_norm(F.linear(xi, m[0].weight, m[0].bias), (5,), m[1].weight, m[1].bias)) * g
            return F.linear(h, m[3].weight, m[3].bias).square().sum()
        d = vmap(grad(loss), in_dims=(None, 1))(torch.ones(5), x).detach().double()
        assert d.abs().max() > 0
        np.testing.assert_allclose(t.scores("fisher")[f"qs/{e}/0"].numpy(), d.square().mean(0).numpy(), rtol=1e-5)
    with torch.no_grad():  # no gradients recorded: the indexed path itself, no hook, no host read
        assert torch.equal(model.qs.forward_indexed(x, torch.tensor([1, 0])), out.detach())


def test_fused_reductions_equal_the_per_sample_matrix_and_expire_with_the_next_update():
    model = Coupled()
    t = ImportanceTracker(model, cfg(), samples=6)
    model.loss(torch.randn(6, 3), torch.randn(2, 6, 1), torch.randn(6, 2)).backward()
    cap = t.gates.take()
    d = cap.gates  # (S, C): the latent is read by dyn (twice) and head (twice)
    assert d.shape == (6, t.layout.num_channels)
    torch.testing.assert_close(cap.mean, d.mean(0), rtol=1e-6, atol=1e-12)  # float32 reductions
    torch.testing.assert_close(cap.sq_mean, d.square().mean(0), rtol=1e-6, atol=0)
    assert bool((cap.sq_mean > cap.mean.square() * 1.01).all())
    model.loss(torch.randn(6, 3), torch.randn(2, 6, 1), torch.randn(6, 2)).backward()
    late = t.gates.take()  # not read before the next update's backward pass overwrites the buffer
    model.loss(torch.randn(6, 3), torch.randn(2, 6, 1), torch.randn(6, 2)).backward()
    with pytest.raises(RuntimeError, match="overwritten"):
        _ = late.mean
    assert t.gates.take().mean is not None


def test_pruning_keeps_the_gate_hooks_off_between_gate_updates():
    """after_pruning rebuilds the hooks for the new groups only when they are on (gate_interval > 1
    removes them until the update before the next gate update)."""
    from pruning.prune import prune

    model = MLP()
    t = ImportanceTracker(model, cfg(gate_interval=3), samples=4)
    model.a(torch.randn(4, 3)).sum().backward()
    t.step(1)  # the next gate update is 3: hooks off
    assert t.gates is None
    keep = prune(t.groups, t.scores("fisher"), 0.25, scope="per_group")
    t.after_pruning(keep)
    assert t.layout.sizes == [4, 3]
    assert t.gates is None and not any(m._forward_pre_hooks for m in model.modules())
    for update in (2, 3):
        model.zero_grad()
        model.a(torch.randn(4, 3)).sum().backward()
        t.step(update)
    assert t.metrics["fisher"].n == 1  # update 3 only (update 1 is not a gate update), with the pruned groups
    t.step(4)
    assert t.gates is None


def test_pruning_without_after_pruning_is_refused_when_only_gates_are_tracked():
    """With only gate metrics tracked, a model pruned without tracker.after_pruning used to be read onto the old
    buffer layout (samples and channels scrambled, step() returning True) or blamed the batch layout. The probe
    now refuses a consumer input whose width is not the one its hooks were built for."""
    from pruning.prune import prune

    model = MLP()
    t = ImportanceTracker(model, cfg(metrics=["fisher", "bayes"]), samples=4)
    model.a(torch.randn(4, 3)).sum().backward()
    t.step(1)
    prune(t.groups, t.scores("fisher"), 0.5, scope="per_group")  # no after_pruning
    with pytest.raises(RuntimeError, match="the model was pruned; call tracker.after_pruning"):
        model.a(torch.randn(4, 3))
    assert t.metrics["fisher"].n == 1


def test_activation_sq_is_the_mean_square_of_every_read_including_stacked_members():
    from pruning.gates import GateCapture

    model = Ens()
    t = ImportanceTracker(model, cfg(), samples=7)
    gc = GateCapture(t.groups, t.layout.offsets, t.layout.num_channels, samples=7, activations=True, model=model)
    x = torch.randn(4, 7, 3)
    (model.qs(x).sum() + model.qs(x, members=[1]).sum()).backward()
    act = gc.take().activation_sq
    for e, m in enumerate(model.qs.members):
        h = F.mish(F.layer_norm(F.linear(x, m[0].weight, m[0].bias), (5,), m[1].weight, m[1].bias)).detach()
        off = t.layout.offsets[e]
        np.testing.assert_allclose(act[off: off + 5].numpy(), h.square().mean((0, 1)).double().numpy(), rtol=1e-5)
    gc.remove()


def _compiled(fn):
    """``fn`` compiled as the TD-MPC agent compiles its update (graphs guarded on module hooks); ``aot_eager``
    traces it (dynamo + AOTAutograd, so ``torch.compiler.is_compiling()`` holds in the hooks) without
    inductor's code generation, which the agent-level test of ``tests/test_compile.py`` covers."""
    compiled = torch.compile(fn, backend="aot_eager", dynamic=False)

    def run(*args):
        with torch._dynamo.config.patch(skip_nnmodule_hook_guards=False):
            return compiled(*args)
    return run


def test_inside_a_compiled_graph_the_gate_leaves_give_the_reference_fisher():
    """Traced into a compiled graph, the hooks multiply each consumer input by a gate leaf instead of adding
    a backward callback (pruning/gates.py); the leaves' gradients give the ``torch.func`` reference: a coupled
    dimension read at every horizon step, and an ensemble called with a tensor of members (``forward_indexed``,
    as in a compiled TD-MPC update)."""
    from pruning.gates import TRACEABLE_HOOK

    model, B, H = Coupled(), 6, 2
    t = ImportanceTracker(model, cfg(), samples=B)
    assert all(getattr(fn, TRACEABLE_HOOK) for fn in t.gates._hook_fns)
    x, acts, y = torch.randn(B, 3), torch.randn(H, B, 1), torch.randn(B, 2)
    eager_loss = model.loss(x, acts, y).detach()  # a no-op gate: the loss does not change
    t.gates.reset()

    def coupled_step(x, acts, y):
        loss = model.loss(x, acts, y)
        loss.backward()
        return loss.detach()
    assert torch.equal(_compiled(coupled_step)(x, acts, y), eager_loss)
    assert not t.gates._written  # no eager backward callback ran
    t.step(1)
    assert_coupled_fisher_is_the_reference(model, t, x, acts, y)
    assert all(leaf.grad is None for leaf in t.gates._leaves)  # taken: the next update starts from zero

    model = Ens()
    t = ImportanceTracker(model, cfg(), samples=7)
    x = torch.randn(4, 7, 3)

    def ensemble_step(x, members):
        model.qs.forward_indexed(x, members).square().sum((0, 1, 3)).mean().backward()
    _compiled(ensemble_step)(x, torch.tensor([1, 0]))
    assert not t.gates._written
    t.step(1)
    for e, member in enumerate(model.qs.members):
        def loss(g, xi, m=member):
            h = F.mish(F.layer_norm(F.linear(xi, m[0].weight, m[0].bias), (5,), m[1].weight, m[1].bias)) * g
            return F.linear(h, m[3].weight, m[3].bias).square().sum()
        d = vmap(grad(loss), in_dims=(None, 1))(torch.ones(5), x).detach().double()
        np.testing.assert_allclose(t.scores("fisher")[f"qs/{e}/0"].numpy(), d.square().mean(0).numpy(), rtol=1e-5)


def test_gate_hooks_are_traceable_only_with_a_fixed_number_of_samples_and_no_activations():
    from pruning.gates import TRACEABLE_HOOK, GateCapture

    for samples, traceable in ((8, True), (None, False)):
        t = ImportanceTracker(MLP(), cfg(metrics=["fisher"]), samples=samples)
        assert [getattr(fn, TRACEABLE_HOOK) for fn in t.gates._hook_fns] == [traceable] * 2
        assert (t.gates._leaves[0] is not None) == traceable
    gc = GateCapture(t.groups, t.layout.offsets, t.layout.num_channels, samples=8, activations=True)
    assert not any(getattr(fn, TRACEABLE_HOOK) for fn in gc._hook_fns)  # activations: eager only
    gc.remove()
    model = MLP()
    ImportanceTracker(model, cfg(), samples=8)

    def step(x):
        model.a(x).sum().backward()
    with pytest.raises(RuntimeError, match=r"shape \(12, 4\) does not hold samples=8"):  # as eagerly
        _compiled(step)(torch.randn(12, 3))
