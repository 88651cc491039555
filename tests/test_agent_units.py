"""Unit tests of the agent's small pieces against hand computations: discount, Q-scale, target EMA, MPPI
elite weighting and policy-prior trajectory injection (with a stub world model whose values are known)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tdmpc.agent import RunningScale, heuristic_discount
from tdmpc.config import ModelConfig, OptimConfig, PlannerConfig
from tdmpc.planner import MPPIPlanner, PlanNoise
from tdmpc.world_model import WorldModel


@pytest.mark.parametrize("length, expected", [(125, 24 / 25), (10, 0.95), (10_000, 0.995), (500, 99 / 100)])
def test_heuristic_discount(length, expected):
    assert heuristic_discount(length, OptimConfig()) == pytest.approx(expected)  # (L/5 - 1) / (L/5), clamped


def test_running_scale_tracks_the_5_95_percentile_range():
    scale = RunningScale(tau=0.1, device=torch.device("cpu"))
    x = torch.arange(101, dtype=torch.float32)  # percentiles 5 and 95 are 5 and 95
    scale.update(x)
    assert float(scale.value) == pytest.approx(0.9 * 1.0 + 0.1 * 90.0)
    scale.update(torch.zeros(10))  # a range below 1 counts as 1
    assert float(scale.value) == pytest.approx(0.9 * 9.9 + 0.1 * 1.0)
    y = torch.randn(7, 5)
    np.testing.assert_allclose(scale(y).numpy(), (y / scale.value).numpy())
    state = scale.state_dict()
    other = RunningScale(0.1, torch.device("cpu"))
    other.load_state_dict(state)
    assert float(other.value) == float(scale.value)


def test_target_q_ema_update():
    model = WorldModel(4, 1, ModelConfig(enc_dim=8, mlp_dim=8, latent_dim=8, num_enc_layers=2, num_q=2, num_bins=5))
    with torch.no_grad():
        for p in model.qs.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.target_qs.parameters()]
    model.soft_update_target(0.25)
    for t, old, online in zip(model.target_qs.parameters(), before, model.qs.parameters()):
        np.testing.assert_allclose(t.numpy(), (0.75 * old + 0.25 * online).detach().numpy(), rtol=1e-6)


class Decode:
    @staticmethod
    def decode(x: torch.Tensor) -> torch.Tensor:
        return x


class StubModel:
    """Reward -(a - 0.3)^2 per step, static latent, zero terminal value, a policy that always says ``pi_a``."""

    two_hot = Decode()

    def __init__(self, pi_a: float = 0.0):
        self.pi_a = pi_a

    def reward_logits(self, z, a):
        return -(a - 0.3).square().sum(-1, keepdim=True)

    def next(self, z, a):
        return z

    def pi(self, z, eps=None):
        a = torch.full((z.shape[0], 1), self.pi_a)
        return a, a, None, None

    def Q(self, z, a, return_type="avg", members=None):
        return torch.zeros(z.shape[0], 1)


def test_elite_weighting_and_gumbel_choice_equal_a_hand_computation():
    cfg = PlannerConfig(horizon=1, iterations=1, num_samples=16, num_elites=4, num_pi_trajs=0, temperature=2.0,
                        min_std=0.05, max_std=2.0)
    noise = PlanNoise.draw(cfg, 1, 2, torch.Generator().manual_seed(0))
    planner = MPPIPlanner(StubModel(), cfg, action_dim=1, discount=0.9)
    action = planner.plan(torch.zeros(1, 3), eval_mode=True, noise=noise)
    a = (0.0 + 2.0 * noise.sample_eps[0, 0, :, 0]).clamp(-1, 1).double().numpy()  # (N,)
    value = -(a - 0.3) ** 2
    elite = np.argsort(-value, kind="stable")[:4]
    w = np.exp(2.0 * (value[elite] - value[elite].max()))
    w /= w.sum()
    np.testing.assert_allclose(planner.prev_mean.numpy()[0, 0], (w * a[elite]).sum(), rtol=1e-5)
    gumbel = -np.log(-np.log(noise.gumbel_u.double().numpy()))
    assert float(action) == pytest.approx(a[elite][np.argmax(np.log(w) + gumbel)], rel=1e-6)


def test_policy_prior_trajectories_are_injected_and_win_when_best():
    cfg = PlannerConfig(horizon=3, iterations=2, num_samples=8, num_elites=1, num_pi_trajs=2, temperature=0.5,
                        min_std=0.05, max_std=2.0)
    noise = PlanNoise.draw(cfg, 1, 2, torch.Generator().manual_seed(1))
    planner = MPPIPlanner(StubModel(pi_a=0.3), cfg, action_dim=1, discount=0.9)  # the prior is optimal
    action = planner.plan(torch.zeros(1, 3), eval_mode=True, noise=noise)
    assert float(action) == pytest.approx(0.3)
    np.testing.assert_allclose(planner.prev_mean.numpy(), np.full((3, 1), 0.3), rtol=1e-6)
    # warm start: the next plan starts from the previous mean shifted by one step
    planner2 = MPPIPlanner(StubModel(pi_a=-0.9), cfg, action_dim=1, discount=0.9)  # a bad prior loses
    planner2.plan(torch.zeros(1, 3), eval_mode=True, noise=noise)
    assert abs(float(planner2.prev_mean[0, 0]) + 0.9) > 0.1


def test_buffer_checkpoint_holds_only_the_filled_part_and_restores_exactly():
    """state_dict used to return views, and torch.save of a view writes its whole storage: one 125-step
    episode in a 100 000-slot buffer was saved as the full capacity."""
    import io

    from tdmpc.buffer import ReplayBuffer

    buf = ReplayBuffer(100_000, 5, 1, 3)
    gen = torch.Generator().manual_seed(0)
    buf.add_episode(torch.randn(126, 5, generator=gen), torch.rand(125, 1, generator=gen), torch.rand(125, generator=gen),
                    torch.zeros(125))
    data = io.BytesIO()
    torch.save(buf.state_dict(), data)
    assert data.tell() < 20_000  # 126 slots (~4 kB of values), not 100 000
    again = ReplayBuffer(100_000, 5, 1, 3)
    again.load_state_dict(torch.load(io.BytesIO(data.getvalue()), weights_only=True))
    a, b = buf.sample(8, np.random.default_rng(1)), again.sample(8, np.random.default_rng(1))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_fractional_updates_per_step_carry_over_episodes(tmp_path):
    """updates_per_step=0.375 over three 20-step episodes: 22 updates (60 x 0.375 = 22.5; the credit carries),
    not 21 with the half update dropped at every episode's end."""
    from conftest import tiny_cfg

    from tdmpc.trainer import Trainer

    t = Trainer(tiny_cfg(steps=10_000, action_repeat=50, seed_steps=0, updates_per_step=0.375), tmp_path)
    t.agent.update = lambda batch: {}  # count the updates only
    t.buffer.add_episode(torch.randn(21, 5), torch.rand(20, 1), torch.rand(20), torch.zeros(20))
    for _ in range(3):
        t._run_episode(pretrained=True)
    assert t.updates == 22 and t.update_credit == 0.5
    assert t.state_dict()["counters"]["update_credit"] == t.update_credit
