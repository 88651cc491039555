import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tdmpc.layers import Mish, QEnsemble, mlp
from tdmpc.math import SimNorm, TwoHot, gaussian_logprob, squash, symexp, symlog


def test_symlog_symexp_inverse_and_values():
    x = torch.tensor([-1e4, -3.0, -0.5, 0.0, 0.5, 3.0, 1e4], dtype=torch.float64)
    assert torch.allclose(symexp(symlog(x)), x, rtol=1e-12)
    assert symlog(torch.tensor(math.e - 1)).item() == torch.tensor(1.0).item()


@settings(max_examples=50, deadline=None)
@given(st.floats(min_value=-2000, max_value=2000, allow_nan=False))
def test_two_hot_round_trip(value):
    th = TwoHot(101, -10, 10)
    x = torch.tensor([[value]], dtype=torch.float64)
    enc = th.encode(x)
    assert enc.shape == (1, 101)
    assert torch.isclose(enc.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert (enc > 0).sum() <= 2
    # decode expects logits: log of the two-hot probabilities (zeros -> -inf weight).
    dec = th.decode(torch.log(enc.clamp_min(1e-30)))
    assert torch.allclose(dec, x, rtol=1e-6, atol=1e-6)


def test_two_hot_expected_bin_and_clamp():
    th = TwoHot(5, -2, 2)  # bins at -2,-1,0,1,2 in symlog space
    x = symexp(torch.tensor([[0.25]]))
    assert torch.allclose(th.encode(x), torch.tensor([[0, 0, 0.75, 0.25, 0]]))
    big = th.encode(torch.tensor([[1e9]]))
    assert torch.allclose(big, torch.tensor([[0, 0, 0, 0, 1.0]]))
    # soft cross-entropy is minimal (== entropy of target) when logits match the target
    target = torch.tensor([[1.3]])
    good = th.soft_ce(torch.log(th.encode(target).clamp_min(1e-12)), target)
    bad = th.soft_ce(torch.zeros(1, 5), target)
    assert good.item() < bad.item()


def test_simnorm_groups_are_simplices():
    x = torch.randn(3, 4, 24)
    y = SimNorm(8)(x)
    groups = y.view(3, 4, 3, 8)
    assert torch.allclose(groups.sum(-1), torch.ones(3, 4, 3))
    assert (y >= 0).all()
    # each group depends only on its own features
    x2 = x.clone()
    x2[..., :8] += 5.0
    assert torch.allclose(SimNorm(8)(x2)[..., 8:], y[..., 8:])


def test_fast_mish_matches_reference_and_gradient():
    x = torch.linspace(-30, 30, 2001, dtype=torch.float64, requires_grad=True)
    ref = torch.nn.functional.mish(x)
    out = Mish()(x)
    assert torch.allclose(out, ref, atol=1e-12)
    assert torch.autograd.gradcheck(Mish(), (torch.randn(20, dtype=torch.float64, requires_grad=True) * 4,))


def test_squashed_gaussian_logprob():
    mu, log_std = torch.zeros(1, 2), torch.log(torch.full((1, 2), 0.5))
    eps = torch.tensor([[0.3, -1.0]])
    lp = gaussian_logprob(eps, log_std)
    ref = torch.distributions.Normal(mu, log_std.exp()).log_prob(mu + eps * log_std.exp()).sum(-1, keepdim=True)
    assert torch.allclose(lp, ref, atol=1e-6)
    pi = mu + eps * log_std.exp()
    _, spi, slp = squash(mu, pi, lp)
    assert torch.allclose(spi, torch.tanh(pi))
    assert torch.allclose(slp, lp - torch.log(1 - torch.tanh(pi) ** 2 + 1e-6).sum(-1, keepdim=True))


def test_q_ensemble_equals_members_and_gradients_reach_them():
    torch.manual_seed(0)
    members = [mlp(7, [16, 16], 5, dropout=0.0) for _ in range(3)]
    ens = QEnsemble(members)
    x = torch.randn(4, 6, 7)
    out = ens(x)
    assert out.shape == (3, 4, 6, 5)
    for i, m in enumerate(members):
        assert torch.allclose(out[i], m(x), atol=1e-6)
    sub = ens(x, members=[2, 0])
    assert torch.allclose(sub[0], out[2], atol=1e-6) and torch.allclose(sub[1], out[0], atol=1e-6)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ens.parameters())
    ens.zero_grad()
    xd = x.clone().requires_grad_()
    ens(xd, detach=True).sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in ens.parameters())
    assert xd.grad is not None
