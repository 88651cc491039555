"""Online training loop: seeding, updates, evaluation, logging and exact checkpoint/resume.

Checkpoints are written every ``checkpoint_freq`` env steps (at the next episode end), at the end, at the
end of the seeding phase and at the end of the episode that pretrained the agent (so a run has one within
minutes). SIGINT/SIGTERM (when their handlers are Python's defaults, i.e. not taken over by e.g. submitit)
stop the run at the next safe point: the end of the current episode, which is then checkpointed; a signal
during pretraining stops it at once, and the run resumes from the checkpoint written after seeding.
:meth:`Trainer.train` then raises :class:`TrainingInterrupted` (the signal flag: :mod:`tdmpc.stop_signals`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tdmpc.agent import TDMPC
from tdmpc.buffer import ReplayBuffer
from tdmpc.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    get_rng_states,
    load_checkpoint,
    save_atomic,
    set_rng_states,
)
from tdmpc.config import EVAL_SEED_OFFSET, TrainConfig, default_seed_steps, require, task_default
from tdmpc.envs import make_env
from tdmpc.logger import Logger
from tdmpc.stop_signals import EXIT_CODES, PretrainingStopped, StopSignals, TrainingInterrupted

__all__ = ["EVAL_SEED_OFFSET", "EXIT_CODES", "Trainer", "TrainingInterrupted", "log_to_files", "rate",
           "resolve_device"]

PRETRAIN_REPORTS = 10  # progress lines printed during pretraining
def rate(x: float) -> str:
    """A speed with three significant digits below 100 and none above (``0.234``, ``12.3``, ``1234``)."""
    if not math.isfinite(x) or x <= 0:
        return "0"
    return f"{x:.{max(0, 2 - math.floor(math.log10(x)))}f}"


def log_to_files(line: str, name: str = __name__) -> None:
    """Write ``line`` to the log files of the root logger (e.g. Hydra's ``<job>.log``), not to the console."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    if handlers:
        record = logging.LogRecord(name, logging.INFO, __file__, 0, line, None, None)
        for h in handlers:
            h.handle(record)  # FileHandler flushes every record: the file can be followed with tail -f


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """Trains a :class:`TDMPC` agent online on one dm_control task.

    ``update_hooks`` are called after every gradient update with ``(trainer, losses)``; objects in
    ``checkpoint_extras`` (name -> object with ``state_dict``/``load_state_dict``) are saved in and
    restored from the checkpoint; ``finish_hooks`` are called with ``(trainer, summary)`` at the end of
    :meth:`train`, before the logger closes (they may add to ``summary``, which is then logged). These
    are how other packages (e.g. ``pruning``'s importance tracker and prune job) attach to training
    without the trainer knowing about them.
    """

    def __init__(self, cfg: TrainConfig, run_dir: str | Path, config_dict: dict | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config_dict = config_dict if config_dict is not None else dataclasses.asdict(cfg)
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        self.device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.env = make_env(cfg.task, cfg.seed, cfg.action_repeat)
        self.eval_env = make_env(cfg.task, cfg.seed + EVAL_SEED_OFFSET, cfg.action_repeat)
        self.env.reset(seed=cfg.seed)
        self.eval_env.reset(seed=cfg.seed + EVAL_SEED_OFFSET)
        obs_dim = self.env.observation_space.shape[0]
        action_dim = self.env.action_space.shape[0]
        self._check_episode_fits(cfg)
        self.agent = TDMPC(obs_dim, action_dim, self.env.episode_length, cfg, self.device)
        buffer_device = self.device if cfg.buffer_device == "auto" else torch.device(cfg.buffer_device)
        self.buffer = ReplayBuffer(cfg.buffer_size, obs_dim, action_dim, cfg.planner.horizon, buffer_device)
        self.sample_rng = np.random.default_rng(cfg.seed)
        self.seed_steps = cfg.seed_steps if cfg.seed_steps is not None else \
            default_seed_steps(self.env.max_episode_steps, self.env.action_repeat)
        # The values used, also where the config said null (the task's defaults): config.yaml, checkpoint, W&B.
        cfg.action_repeat, cfg.seed_steps = self.env.action_repeat, self.seed_steps
        self.config_dict = {**self.config_dict, "action_repeat": cfg.action_repeat, "seed_steps": cfg.seed_steps}
        self.step = 0  # agent steps
        self.env_step = 0
        self.episode = 0
        self.updates = 0
        self.update_credit = 0.0  # fraction of an update owed (updates_per_step < 1), kept across episodes
        self.elapsed = 0.0  # training wall-clock seconds, carried over resumes
        self.last_eval: dict[str, float] | None = None
        self.update_hooks: list[Callable[[Trainer, dict], None]] = []
        self.finish_hooks: list[Callable[[Trainer, dict], None]] = []
        self.checkpoint_extras: dict[str, Any] = {}
        self.logger: Logger | None = None
        self.checkpoint_path = self.run_dir / "checkpoint.pt"
        self._resume_state: dict | None = None  # the checkpoint read by resume_state(), until train() loads it
        self.resumed: bool | None = None  # set by restore()
        self._bar = None
        self.checkpoint_env_step: int | None = None  # env step of the last checkpoint written or loaded
        self.stops = StopSignals(self._print, lambda: self.checkpoint_env_step)  # SIGINT/SIGTERM

    def _check_episode_fits(self, cfg: TrainConfig) -> None:
        """Settings that only the task's episode length can refuse, refused here (a one-line
        :class:`ConfigError`, before the run dir holds anything) rather than after seeding."""
        length, repeat = self.env.episode_length, self.env.action_repeat
        episode = f"an episode of {cfg.task} at action_repeat={repeat} is {length} agent steps"
        require(cfg.buffer_size >= length + 1, "buffer_size", cfg.buffer_size,
                f"an integer >= {length + 1} ({episode}, stored as {length + 1} observations)")
        require(cfg.planner.horizon <= length, "planner.horizon", cfg.planner.horizon,
                f"an integer <= {length} ({episode}; training samples sub-trajectories of horizon steps)")

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config_dict,
            "agent": self.agent.state_dict(),
            "buffer": self.buffer.state_dict(),
            "counters": {"step": self.step, "env_step": self.env_step, "episode": self.episode,
                         "updates": self.updates, "elapsed": self.elapsed, "update_credit": self.update_credit},
            "rng": get_rng_states(),
            "sample_rng": self.sample_rng.bit_generator.state,
            "env_rng": self.env.get_rng_state(),
            "eval_env_rng": self.eval_env.get_rng_state(),
            "extras": {name: obj.state_dict() for name, obj in self.checkpoint_extras.items()},
            # the last evaluation, so that a run resumed from its final checkpoint reports the same return
            # instead of evaluating again on RNG states that have moved on
            "last_eval": self.last_eval,
        }

    def save_checkpoint(self) -> Path:
        path = save_atomic(self.state_dict(), self.checkpoint_path)
        self.checkpoint_env_step = self.env_step
        return path

    def load_checkpoint(self, path: str | Path | None = None, restore_rng: bool = True) -> None:
        """Restore agent, buffer, counters, extras and (unless ``restore_rng=False``) every RNG state.

        ``restore_rng=False`` keeps this trainer's own seeding: used to branch a new, differently seeded
        run (e.g. fine-tuning after pruning) off a checkpoint.
        """
        self.load_state(load_checkpoint(path or self.checkpoint_path), restore_rng)

    def resume_state(self) -> dict | None:
        """The run dir's checkpoint if this run resumes (``cfg.resume`` and the file exists), else ``None``.

        Read once: hooks that need it before :meth:`train` (e.g. to give a pruned model its shapes) and
        :meth:`train` itself share the copy in memory (a checkpoint holds the whole replay buffer)."""
        if not (self.cfg.resume and self.checkpoint_path.exists()):
            return None
        if self._resume_state is None:
            self._resume_state = load_checkpoint(self.checkpoint_path)
        return self._resume_state

    def load_state(self, state: dict, restore_rng: bool = True) -> None:
        """:meth:`load_checkpoint` from a checkpoint already in memory (see there)."""
        saved = state["config"]
        for key in ("task", "model_size", "action_repeat"):
            old = saved.get(key)
            if key == "action_repeat" and old is None and saved.get("task") == self.cfg.task:
                old = task_default(self.cfg.task, key)  # an older checkpoint: null was the task's default
            if old != self.config_dict.get(key):
                raise CheckpointError(
                    f"checkpoint was written with {key}={saved.get(key)!r}, this run has "
                    f"{key}={self.config_dict.get(key)!r}; use another run dir"
                )
        self.agent.load_state_dict(state["agent"])
        self.buffer.load_state_dict(state["buffer"])
        c = state["counters"]
        self.step, self.env_step, self.episode = c["step"], c["env_step"], c["episode"]
        self.updates, self.elapsed = c["updates"], c["elapsed"]
        self.update_credit = float(c.get("update_credit", 0.0))  # absent in older checkpoints (credit reset)
        self.checkpoint_env_step = self.env_step
        if restore_rng:  # resuming this run (a branched run, restore_rng=False, has not been evaluated yet)
            self.last_eval = state.get("last_eval")  # absent in checkpoints written before it was saved
            set_rng_states(state["rng"])
            self.sample_rng.bit_generator.state = state["sample_rng"]
            self.env.set_rng_state(state["env_rng"])
            self.eval_env.set_rng_state(state["eval_env_rng"])
        for name, obj in self.checkpoint_extras.items():
            if name in state["extras"]:
                obj.load_state_dict(state["extras"][name])

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, episodes: int | None = None) -> dict[str, float]:
        """Mean/std return over ``episodes`` episodes with no exploration noise."""
        returns = []
        for _ in range(episodes or self.cfg.eval_episodes):
            obs, _ = self.eval_env.reset()
            self.agent.planner.reset()
            done, ep_return = False, 0.0
            while not done:
                action = self.agent.act(torch.as_tensor(obs), eval_mode=True)
                obs, reward, terminated, truncated, _ = self.eval_env.step(action.numpy())
                ep_return += float(reward)
                done = terminated or truncated
            returns.append(ep_return)
        return {"return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)),
                "episodes": len(returns)}

    # ------------------------------------------------------------------ training
    def _run_updates(self, n: int) -> dict[str, float]:
        losses: dict[str, float] = {}
        for _ in range(n):
            batch = self.buffer.sample(self.cfg.optim.batch_size, self.sample_rng)
            losses = self.agent.update(batch)
            self.updates += 1
            for hook in self.update_hooks:
                hook(self, losses)
        return losses

    def _pretrain(self) -> dict[str, float]:
        """One update per transition of the seed data (TD-MPC2), with progress lines every ~10 %.

        Raises :class:`~tdmpc.stop_signals.PretrainingStopped` after the update during which a stop signal arrived."""
        n = len(self.buffer)
        every = max(1, math.ceil(n / PRETRAIN_REPORTS))
        self._print(f"[pretrain] {n} updates on the seed data (one per seed transition)")
        losses: dict[str, float] = {}
        t0 = time.perf_counter()
        self.stops.pretraining = True
        try:
            for i in range(1, n + 1):
                losses = self._run_updates(1)
                if self.stops.requested():
                    raise PretrainingStopped()
                if i % every == 0 or i == n:
                    dt = time.perf_counter() - t0
                    self._print(f"[pretrain] {i:>6d}/{n} updates ({100 * i / n:3.0f} %)  {rate(i / dt)} updates/s"
                                f"  loss {losses['total_loss']:.3f}")
        finally:
            self.stops.pretraining = False
        return losses

    def _log_eval(self) -> None:
        result = self.evaluate()
        self.last_eval = result
        row = {"env_step": self.env_step, "step": self.step, **result, "elapsed_s": round(self.elapsed, 2)}
        self.logger.log("eval", row)
        self._print(
            f"[eval] env_step {self.env_step:>8d}  return {result['return_mean']:8.1f} ± {result['return_std']:6.1f}"
            f"  ({result['episodes']} episodes)  elapsed {self.elapsed / 60:5.1f} min"
        )

    def _print(self, line: str) -> None:
        """A console line (through the progress bar when there is one), also written to the log files."""
        if self._bar is not None:
            self._bar.write(line)
        else:
            print(line, flush=True)
        log_to_files(line)

    # ------------------------------------------------------------------ interruption
    def _stop(self, save: bool = True) -> None:
        """Checkpoint (``save`` and not saved at this env step yet) and raise :class:`TrainingInterrupted`."""
        if save and self.env_step > 0 and self.checkpoint_env_step != self.env_step:
            self.save_checkpoint()
        raise TrainingInterrupted(self.stops.signum, self.checkpoint_env_step or 0)

    # ------------------------------------------------------------------ training
    def restore(self) -> bool:
        """Load the run dir's checkpoint when this run resumes (:meth:`resume_state`); idempotent.

        Called by :meth:`train`; call it before to check a resume (e.g. a tracker state that does not fit)
        before anything in the run dir is written. Returns whether the run resumed."""
        if self.resumed is None:
            state = self.resume_state()
            self.resumed = state is not None
            if state is not None:
                self._resume_state = None  # loaded below: do not keep a second copy of the buffer
                self.load_state(state)
                # the run dir would otherwise claim fewer steps than its model had
                require(self.env_step <= self.cfg.steps, "steps", self.cfg.steps,
                        f">= {self.env_step} (this run dir's checkpoint is at env_step {self.env_step} and a run "
                        f"cannot be shortened; use another run dir, or overwrite=true to start anew)")
        return self.resumed

    @property
    def seeding_end(self) -> int:
        """The env step at which seeding ends at the earliest: ``seed_steps`` rounded up to whole episodes (an env
        whose episodes end early, or hold no sub-trajectory, seeds longer; see :meth:`_run_episode`)."""
        episode = self.env.max_episode_steps
        return -(-self.seed_steps // episode) * episode

    def train(self) -> dict[str, float]:
        """Train to ``cfg.steps`` env steps (resuming from the run dir's checkpoint when allowed).

        Raises :class:`TrainingInterrupted` on SIGINT/SIGTERM (see the module docstring); the W&B run is
        then finished with the signal's exit code (failed), as after any other exception (exit code 1)."""
        exit_code: int | None = 1
        with self.stops.installed():
            resumed = self.restore()
            self.logger = Logger(self.run_dir, self.config_dict, self.cfg.logger.wandb, resume=resumed)
            try:
                if resumed:
                    # Rows logged after the checkpoint by a killed run are dropped: the resumed run re-logs them.
                    self.logger.truncate(self.env_step, self.updates)  # (pretraining's updates share an env step)
                if self.cfg.logger.progress and sys.stderr.isatty():
                    from tqdm import tqdm

                    self._bar = tqdm(total=self.cfg.steps, initial=self.env_step, unit="env step",
                                     dynamic_ncols=True)
                if resumed:
                    self._print(f"[resume] from {self.checkpoint_path} at env_step {self.env_step}")
                if self.updates == 0 and self.seeding_end >= self.cfg.steps:
                    self._print(f"[train] note: seeding (seed_steps={self.seed_steps}, whole episodes: "
                                f"{self.seeding_end} env steps) covers steps={self.cfg.steps}: this run takes random "
                                f"actions only and never updates the agent")
                self._loop()
                summary = self._finish_summary()
                if self.stops.requested():  # a stop that came while the finish hooks ran is not dropped
                    self._stop()  # (the final checkpoint is written: nothing to save)
                exit_code = None
                return summary
            except TrainingInterrupted as err:
                exit_code = err.exit_code
                raise
            finally:
                if self._bar is not None:
                    self._bar.close()
                self.logger.finish(exit_code=exit_code)

    def _finish_summary(self) -> dict[str, float]:
        summary = {"env_step": self.env_step, "updates": self.updates, "elapsed_s": self.elapsed}
        if self.last_eval is not None:
            summary.update({f"eval/{k}": v for k, v in self.last_eval.items()})
        for hook in self.finish_hooks:
            hook(self, summary)
        self.logger.summary(summary)
        return summary

    def _loop(self) -> None:
        """Episodes until ``cfg.steps``, with logging, evaluation, checkpoints and stops on signals."""
        cfg = self.cfg
        next_eval = (self.env_step // cfg.eval_freq + 1) * cfg.eval_freq
        next_ckpt = (self.env_step // cfg.checkpoint_freq + 1) * cfg.checkpoint_freq
        pretrained = self.updates > 0
        while self.env_step < cfg.steps:
            if self.stops.requested():
                self._stop()
            t0, env_step0 = time.perf_counter(), self.env_step
            try:
                ep_return, ep_steps, losses = self._run_episode(pretrained)
            except PretrainingStopped:
                self._stop(save=False)  # mid-episode: resume from the checkpoint written after seeding
            first_updates = not pretrained and self.updates > 0
            pretrained = pretrained or self.updates > 0
            dt = time.perf_counter() - t0
            self.elapsed += dt
            self.episode += 1
            self._log_episode(ep_return, ep_steps, self.env_step - env_step0, losses, dt)
            done = self.env_step >= cfg.steps
            if self.env_step >= next_eval or done:
                self._log_eval()
                next_eval = (self.env_step // cfg.eval_freq + 1) * cfg.eval_freq
            seeded = self.updates == 0 and self.env_step >= self.seed_steps  # end of seeding: checkpoint
            if self.env_step >= next_ckpt or done or first_updates or seeded:
                self.save_checkpoint()
                next_ckpt = (self.env_step // cfg.checkpoint_freq + 1) * cfg.checkpoint_freq

    def _log_episode(self, ep_return: float, ep_steps: int, env_steps: int, losses: dict, dt: float) -> None:
        row = {"step": self.step, "env_step": self.env_step, "episode": self.episode,
               "episode_return": round(ep_return, 4), **{k: float(v) for k, v in losses.items()},
               "steps_per_s": round(ep_steps / dt, 3), "elapsed_s": round(self.elapsed, 2)}
        self.logger.log("train", row)
        if self._bar is not None:
            self._bar.update(env_steps)
        if self.episode % self.cfg.logger.console_every == 0:
            loss_txt = f"  loss {losses['total_loss']:.3f}" if losses else "  (seeding)"
            self._print(
                f"[train] env_step {self.env_step:>8d}  episode {self.episode:>5d}  return {ep_return:8.1f}"
                f"{loss_txt}  {rate(ep_steps / dt)} agent-steps/s  {rate(env_steps / dt)} env-steps/s"
            )

    def _run_episode(self, pretrained: bool) -> tuple[float, int, dict[str, float]]:
        """Collect one episode and store it: random actions while seeding, else the agent's, updating it after
        every step (``updates_per_step``).

        Seeding runs whole episodes, from the start until an episode ends at or past ``seed_steps`` env steps and
        the buffer holds a sub-trajectory of horizon + 1 steps (an env whose episodes end early may need more).
        Then, before the next episode's first action, the agent is pretrained with one update per seed transition
        (TD-MPC2); the checkpoint written at the end of seeding is what a stop during pretraining resumes from."""
        cfg = self.cfg
        obs, _ = self.env.reset()
        self.agent.planner.reset()
        obs_list, actions, rewards, terms = [torch.as_tensor(obs)], [], [], []
        done, ep_return, losses = False, 0.0, {}
        if not pretrained and self.env_step >= self.seed_steps and len(self.buffer.valid_starts()):
            losses = self._pretrain()
            pretrained = True
        while not done:
            seeding = not pretrained
            if seeding:
                action = torch.rand(self.env.action_space.shape) * 2 - 1
            else:
                action = self.agent.act(obs_list[-1])
            obs, reward, terminated, truncated, info = self.env.step(action.numpy())
            self.env_step += int(info.get("env_steps", self.env.action_repeat))
            self.step += 1
            obs_list.append(torch.as_tensor(obs))
            actions.append(action)
            rewards.append(float(reward))
            terms.append(float(terminated))
            ep_return += float(reward)
            done = terminated or truncated
            self.stops.requested()  # announce a stop signal; the episode is finished first
            if not seeding:
                # the fractional part carries over episodes (and checkpoints): updates_per_step=0.005
                # gives one update per 200 agent steps however long the episodes are
                self.update_credit += cfg.updates_per_step
                n = math.floor(self.update_credit)
                self.update_credit -= n
                if n:
                    losses = self._run_updates(n)
        self.buffer.add_episode(
            torch.stack(obs_list), torch.stack(actions), torch.tensor(rewards), torch.tensor(terms)
        )
        return ep_return, len(actions), losses
