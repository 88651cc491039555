"""The MPPI planner on a toy latent model whose best action is known."""

import torch

from tdmpc.config import PlannerConfig
from tdmpc.planner import MPPIPlanner


class _Identity:
    def decode(self, x):
        return x


class ToyModel:
    """Latent never changes; reward = -||a - target||^2 (summed over action dims); Q = 0."""

    def __init__(self, target):
        self.target = torch.as_tensor(target, dtype=torch.float32)
        self.two_hot = _Identity()
        self.calls = 0

    def reward_logits(self, z, a):
        self.calls += 1
        return -((a - self.target) ** 2).sum(-1, keepdim=True)

    def next(self, z, a):
        return z

    def pi(self, z, eps=None):  # the planner's model protocol; the toy prior ignores a given draw
        a = torch.rand(z.shape[0], self.target.numel()) * 2 - 1
        return a, a, torch.zeros(z.shape[0], 1), torch.zeros_like(a)

    def Q(self, z, a, return_type="avg", members=None):
        return torch.zeros(z.shape[0], 1)


def _planner(target, iterations, **kw):
    cfg = PlannerConfig(iterations=iterations, num_samples=kw.pop("num_samples", 256), num_elites=32,
                        num_pi_trajs=8, horizon=3, **kw)
    return MPPIPlanner(ToyModel(target), cfg, action_dim=len(target), discount=0.99)


def objective(target, action):
    return -((action - torch.as_tensor(target)) ** 2).sum().item()


def test_planner_finds_known_best_action():
    torch.manual_seed(0)
    target = [0.3, -0.6]
    action = _planner(target, iterations=6).plan(torch.zeros(1, 4), eval_mode=True)
    assert action.shape == (2,)
    assert torch.allclose(action, torch.tensor(target), atol=0.1)


def test_more_iterations_improve_the_objective():
    target = [0.3, -0.6, 0.8]
    scores = {}
    for iters in (1, 6):
        vals = []
        for seed in range(10):
            torch.manual_seed(seed)
            vals.append(objective(target, _planner(target, iters).plan(torch.zeros(1, 4), eval_mode=True)))
        scores[iters] = sum(vals) / len(vals)
    torch.manual_seed(0)
    random_score = sum(objective(target, torch.rand(3) * 2 - 1) for _ in range(100)) / 100
    assert scores[6] > scores[1] > random_score
    assert scores[6] > -0.02


def test_actions_stay_in_bounds_when_optimum_is_outside():
    torch.manual_seed(0)
    planner = _planner([1.7, -2.5], iterations=4)
    for _ in range(5):
        a = planner.plan(torch.zeros(1, 4), eval_mode=False)  # exploration noise added
        assert a.min() >= -1 and a.max() <= 1
    assert torch.allclose(planner.plan(torch.zeros(1, 4), eval_mode=True), torch.tensor([1.0, -1.0]), atol=0.05)


def test_warm_start_shifts_previous_mean_and_reset_clears_it():
    torch.manual_seed(0)
    planner = _planner([0.5], iterations=3)
    planner.plan(torch.zeros(1, 4))
    assert planner.prev_mean.shape == (3, 1)
    planner.reset()
    assert planner.prev_mean is None


def test_planning_is_vectorised_over_samples():
    # reward is evaluated once per horizon step per iteration, for all samples at once
    torch.manual_seed(0)
    planner = _planner([0.0], iterations=5, num_samples=512)
    planner.plan(torch.zeros(1, 4))
    assert planner.model.calls == 5 * 3
