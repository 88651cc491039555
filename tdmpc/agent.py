"""The TD-MPC2 agent: world model + planner + losses and optimisers."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tdmpc.config import TrainConfig
from tdmpc.planner import MPPIPlanner, PlanNoise
from tdmpc.world_model import WorldModel


class RunningScale:
    """Running 5th-95th percentile range of Q-values (EMA with rate ``tau``), used to scale the policy loss."""

    def __init__(self, tau: float, device: torch.device):
        self.tau = tau
        self.value = torch.ones(1, device=device)
        self.percentiles = torch.tensor([5.0, 95.0], device=device)

    def _percentile(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().flatten().float()
        return torch.quantile(x, self.percentiles / 100.0)

    def update(self, x: torch.Tensor) -> None:
        lo, hi = self._percentile(x)
        self.value.lerp_(torch.clamp(hi - lo, min=1.0).view(1), self.tau)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.value

    def state_dict(self) -> dict:
        return {"value": self.value.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.value.copy_(state["value"])


def heuristic_discount(episode_length: int, cfg) -> float:
    """TD-MPC2's discount from the episode length (agent steps): ``(f - 1) / f`` with ``f = L / denom``."""
    frac = episode_length / cfg.discount_denom
    return float(min(max((frac - 1) / frac, cfg.discount_min), cfg.discount_max))


@dataclass
class UpdateNoise:
    """Every random draw of one update, passed in so that compiled and eager updates can be compared exactly
    (and so that the compiled graph holds no RNG and no host sync). With ``H`` = horizon, ``B`` = batch:
    ``td_eps (H, B, A)`` / ``pi_eps (H+1, B, A)``: standard-normal draws of the policy samples of the TD target
    and of the policy loss; ``td_members`` / ``pi_members`` ``(2,)`` int64: the two Q-members of each.

    The eager update without a ``UpdateNoise`` draws the same quantities inline, in another order (as it
    always did; ``compile=false`` reproduces earlier runs bit for bit).
    """

    td_eps: torch.Tensor
    td_members: torch.Tensor
    pi_eps: torch.Tensor
    pi_members: torch.Tensor

    @staticmethod
    def draw(horizon: int, batch: int, action_dim: int, num_q: int, device: torch.device) -> UpdateNoise:
        return UpdateNoise(
            td_eps=torch.randn(horizon, batch, action_dim).to(device),
            td_members=torch.randperm(num_q)[:2].to(device),
            pi_eps=torch.randn(horizon + 1, batch, action_dim).to(device),
            pi_members=torch.randperm(num_q)[:2].to(device),
        )


def _quiet_profiler_notice() -> None:
    """Drop dynamo's one-line notice that it ignores ``record_function`` inside ``Optimizer.step`` (printed on
    every compiled run; it says nothing about this run). Other messages of that logger are kept."""
    log = logging.getLogger("torch._dynamo.variables.ctx_manager")
    if not any(getattr(f, "ca_prune", False) for f in log.filters):
        notice = logging.Filter()
        notice.filter = lambda record: not str(record.msg).startswith("Profiler record function")
        notice.ca_prune = True
        log.addFilter(notice)


def compile_enabled(setting: str | bool, device: torch.device) -> bool:
    """``compile`` = ``true`` | ``false`` | ``auto``; ``auto`` compiles where it was measured to pay
    (``AUTO_COMPILE_DEVICES``, see ``docs/speed.md``)."""
    s = str(setting).lower()
    return s == "true" or (s == "auto" and device.type in AUTO_COMPILE_DEVICES)


#: Compiled variants kept per function (dynamo's default, 8, is reached by a process that builds several
#: agents or prunes several times; past it dynamo silently runs eagerly).
RECOMPILE_LIMIT = 64

#: Device types on which ``compile=auto`` compiles (``docs/speed.md`` has the measurements).
AUTO_COMPILE_DEVICES: tuple[str, ...] = ()

#: Inductor options of the compiled update. ``fallback_random``: dropout draws its mask with ATen's
#: ``bernoulli_``, as the eager update does, instead of inductor's per-element generator inside the fused
#: kernel. Profiled (CPU preset, 1 thread), the two fused kernels holding the Q members' dropout took 9.3 ms of
#: a compiled update, ATen's draws 2.2 ms. Timed (two compiled agents, 8 interleaved rounds of 5 updates): 48.1
#: -> 41.9 ms per update with 1 thread, 29.3 -> 27.7 ms with 2. It also makes the compiled update draw the
#: same masks as the eager one from the same RNG state (``tests/test_compile.py``).
UPDATE_INDUCTOR_OPTIONS = {"fallback_random": True}

#: A hook (a module forward pre-hook or forward hook, or a ``QEnsemble`` stacked-input hook) whose callable
#: carries this attribute set to ``True`` declares that dynamo may trace it into the compiled update: it
#: behaves the same under ``torch.compiler.is_compiling()`` and has no Python side effects in backward.
#: Every other hook makes the update run eagerly (hooks are not traced otherwise). The compiled update is
#: called with ``torch._dynamo.config.skip_nnmodule_hook_guards=False``, so its graphs are guarded on
#: the hooks they were traced with: registering or removing a hook selects (or compiles) another graph
#: instead of silently reusing one traced without it. The planner runs under ``no_grad`` and is compiled
#: without these guards (a traceable hook must be a no-op without gradients).
TRACEABLE_HOOK = "compile_traceable"


class TDMPC:
    """Acts by MPPI planning (or the policy prior) and learns from sub-trajectories.

    Loss signals, per component (documented here because ``pruning/`` reads gradients):

    - ``encoder``, ``dynamics``, ``reward``, ``qs`` get the gradient of the world-model loss
      ``consistency_coef * L_consistency + reward_coef * L_reward + value_coef * L_value``.
    - ``policy`` gets the gradient of the policy loss only (Q-values are evaluated with detached
      parameters on detached latents), stepped by its own optimiser.
    """

    def __init__(self, obs_dim: int, action_dim: int, episode_length: int, cfg: TrainConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.obs_dim, self.action_dim = obs_dim, action_dim
        # Eval mode (no dropout) except inside update(): acting must not depend on where training resumed.
        self._check_model_fits(obs_dim, action_dim, cfg, device)
        self.model = WorldModel(obs_dim, action_dim, cfg.model).to(device).eval()
        self.discount = heuristic_discount(episode_length, cfg.optim)
        self.planner = MPPIPlanner(self.model, cfg.planner, action_dim, self.discount)
        self.scale = RunningScale(cfg.optim.tau, device)
        self.build_optimizers()
        self._compiled_update = None
        self.set_compile(compile_enabled(cfg.compile, device))

    def set_compile(self, enabled: bool) -> None:
        """Compile (``torch.compile``) the update and the planner, or run both eagerly (the eager twin).

        The compiled update is the same :meth:`_update` traced by dynamo (graph breaks at ``backward``).
        Module hooks that declare themselves traceable (:data:`TRACEABLE_HOOK`, e.g. pruning's gate capture)
        are traced into it; an update during which any other hook is registered runs eagerly. See
        ``docs/speed.md``.
        """
        self.compiled = bool(enabled)
        if enabled:  # dynamo caches per code object: every agent and every pruned shape is one more entry
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
            _quiet_profiler_notice()
        self._compiled_update = torch.compile(self._update, dynamic=False, options=UPDATE_INDUCTOR_OPTIONS) \
            if enabled else None
        self.planner.compile(enabled)

    def _hooks(self) -> list:
        """Every hook registered on a module of the model (forward pre-hooks, forward hooks and the
        Q-ensemble's stacked-input hooks)."""
        out = []
        for m in self.model.modules():
            out += list(m._forward_pre_hooks.values()) + list(m._forward_hooks.values())
            out += [hook for _, hook in getattr(m, "_stacked_input_hooks", {}).values()]
        return out

    def _run_compiled(self, obs, action, reward, terminated, noise: UpdateNoise) -> dict[str, torch.Tensor]:
        """The compiled update, its graphs guarded on the traceable hooks they were traced with (see
        :data:`TRACEABLE_HOOK`; always call it through here, so that no graph is traced without those guards)."""
        with torch._dynamo.config.patch(skip_nnmodule_hook_guards=False):
            return self._compiled_update(obs, action, reward, terminated, noise=noise)

    def _hooked(self) -> bool:
        """Whether a module of the model carries a hook that is not traceable (it forces the eager update)."""
        return any(not getattr(h, TRACEABLE_HOOK, False) for h in self._hooks())

    @staticmethod
    def _check_model_fits(obs_dim: int, action_dim: int, cfg: TrainConfig, device: torch.device) -> None:
        """Refuse widths whose training state does not fit in memory (counted on the meta device)."""
        from tdmpc.memory import TRAIN_BYTES_PER_PARAM, require_fits

        with torch.device("meta"):
            n = sum(p.numel() for p in WorldModel(obs_dim, action_dim, cfg.model).parameters())
        m = cfg.model
        widths = f"enc_dim={m.enc_dim}, mlp_dim={m.mlp_dim}, latent_dim={m.latent_dim}, num_q={m.num_q}"
        require_fits(n * TRAIN_BYTES_PER_PARAM, "model", widths, f"training {n / 1e6:.0f} M parameters", device)

    def build_optimizers(self) -> None:
        """(Re)create the optimisers over the current parameters (pruning replaces parameters)."""
        o, m = self.cfg.optim, self.model
        self.optim = torch.optim.Adam(
            [
                {"params": m.encoder.parameters(), "lr": o.lr * o.enc_lr_scale},
                {"params": m.dynamics.parameters()},
                {"params": m.reward.parameters()},
                {"params": m.qs.parameters()},
            ],
            lr=o.lr,
        )
        self.pi_optim = torch.optim.Adam(m.policy.parameters(), lr=o.lr, eps=1e-5)

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: torch.Tensor, eval_mode: bool = False, noise: PlanNoise | None = None) -> torch.Tensor:
        """Action in [-1, 1] for one observation ``(obs_dim,)``.

        ``noise`` (planning only) replaces the planner's random draws (:class:`~tdmpc.planner.PlanNoise`).
        """
        z = self.model.encode(obs.to(self.device).unsqueeze(0))
        if self.cfg.planner.mpc:
            return self.planner.plan(z, eval_mode=eval_mode, noise=noise).cpu()
        mu, pi, _, _ = self.model.pi(z)
        return (mu if eval_mode else pi)[0].cpu()

    # ------------------------------------------------------------------ learning
    def update(self, batch) -> dict[str, torch.Tensor]:
        """One gradient step on the world model and one on the policy; returns the losses as detached 0-d
        tensors (no host sync per update: convert with ``float`` when logging)."""
        self.model.train()
        if self._compiled_update is None:
            out = self._update(*batch)
        else:  # noise drawn here, outside the graph; updates with untraceable hooks run it eagerly
            noise = UpdateNoise.draw(batch[1].shape[0], batch[1].shape[1], self.action_dim, len(self.model.qs),
                                     self.device)
            out = self._update(*batch, noise=noise) if self._hooked() else self._run_compiled(*batch, noise=noise)
        self.model.soft_update_target(self.cfg.optim.tau)
        self.model.eval()
        return out

    def _update(self, obs, action, reward, terminated, noise: UpdateNoise | None = None) -> dict[str, torch.Tensor]:
        """The update; ``noise`` replaces its random draws (:class:`UpdateNoise`), ``None`` draws them inline."""
        o, m = self.cfg.optim, self.model
        H = action.shape[0]
        with torch.no_grad():
            next_z = m.encode(obs[1:])
            next_a = m.pi(next_z, eps=None if noise is None else noise.td_eps)[1]
            members = None if noise is None else noise.td_members
            td_target = reward + self.discount * (1 - terminated) * m.Q(
                next_z, next_a, return_type="min", target=True, members=members
            )

        zs = [m.encode(obs[0])]
        consistency_loss = 0.0
        for t in range(H):
            z = m.next(zs[-1], action[t])
            consistency_loss = consistency_loss + F.mse_loss(z, next_z[t]) * o.rho**t
            zs.append(z)
        zs = torch.stack(zs)  # (H+1, B, Z)
        _zs = zs[:-1]
        q_logits = m.Q(_zs, action, return_type="all")  # (num_q, H, B, bins)
        reward_logits = m.reward_logits(_zs, action)  # (H, B, bins)
        rho = o.rho ** torch.arange(H, device=obs.device, dtype=obs.dtype)
        reward_loss = (m.two_hot.soft_ce(reward_logits, reward).mean(dim=(1, 2)) * rho).sum()
        value_ce = m.two_hot.soft_ce(q_logits, td_target.unsqueeze(0).expand(len(m.qs), -1, -1, -1))
        value_loss = (value_ce.mean(dim=(2, 3)) * rho).sum()  # summed over members and horizon
        consistency_loss = consistency_loss / H
        reward_loss = reward_loss / H
        value_loss = value_loss / (H * len(m.qs))
        total_loss = o.consistency_coef * consistency_loss + o.reward_coef * reward_loss + o.value_coef * value_loss
        self.optim.zero_grad(set_to_none=True)
        total_loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for g in self.optim.param_groups for p in g["params"]], o.grad_clip_norm
        )
        self.optim.step()

        pi_loss, pi_scale = self._update_pi(zs.detach(), noise)
        return {
            "consistency_loss": consistency_loss.detach(),
            "reward_loss": reward_loss.detach(),
            "value_loss": value_loss.detach(),
            "pi_loss": pi_loss.detach(),
            "total_loss": total_loss.detach(),
            "grad_norm": grad_norm.detach(),
            "pi_scale": pi_scale,
        }

    def _update_pi(self, zs: torch.Tensor, noise: UpdateNoise | None = None):
        o, m = self.cfg.optim, self.model
        _, pis, log_pis, _ = m.pi(zs, eps=None if noise is None else noise.pi_eps)
        qs = m.Q(zs, pis, return_type="avg", detach=True, members=None if noise is None else noise.pi_members)
        self.scale.update(qs[0])
        qs = self.scale(qs)
        rho = o.rho ** torch.arange(len(qs), device=zs.device, dtype=zs.dtype)
        pi_loss = ((o.entropy_coef * log_pis - qs).mean(dim=(1, 2)) * rho).mean()
        self.pi_optim.zero_grad(set_to_none=True)
        pi_loss.backward()
        torch.nn.utils.clip_grad_norm_(m.policy.parameters(), o.grad_clip_norm)
        self.pi_optim.step()
        return pi_loss, self.scale.value[0].detach().clone()

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "widths": self.model.widths(),
            "optim": self.optim.state_dict(),
            "pi_optim": self.pi_optim.state_dict(),
            "scale": self.scale.state_dict(),
            "planner_prev_mean": self.planner.prev_mean,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optim.load_state_dict(state["optim"])
        self.pi_optim.load_state_dict(state["pi_optim"])
        self.scale.load_state_dict(state["scale"])
        self.planner.prev_mean = state.get("planner_prev_mean")
