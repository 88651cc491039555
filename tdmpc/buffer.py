"""Replay buffer of whole episodes, sampled as sub-trajectories of ``horizon + 1`` observations.

Episodes are written contiguously into flat ring-buffer tensors: an episode of ``L`` agent steps takes
``L + 1`` slots, slot ``s`` holding ``obs[s]`` and, for ``s`` after the episode's first slot, the action
and reward that led to ``obs[s]`` (TD-MPC2's layout). A slot is a valid start when the ``horizon``
following slots belong to the same episode; sampling is uniform over valid starts and fully vectorised
(one gather for the whole batch). This is written by hand because torchrl's slice sampler would add a
heavy dependency for a few lines of indexing.
"""

from __future__ import annotations

import numpy as np
import torch


class ReplayBuffer:
    def __init__(self, capacity: int, obs_dim: int, action_dim: int, horizon: int, device: str | torch.device = "cpu"):
        from tdmpc.memory import require_fits

        self.capacity, self.horizon = int(capacity), int(horizon)
        self.device = torch.device(device)
        # obs, action, reward, terminated (float32) on the device; episode ids (int64) in host memory
        require_fits(self.capacity * (obs_dim + action_dim + 2) * 4, "buffer_size", self.capacity, "the replay buffer",
                     self.device)
        require_fits(self.capacity * 8, "buffer_size", self.capacity, "the replay buffer's episode ids")
        self.obs = torch.zeros(self.capacity, obs_dim, dtype=torch.float32, device=self.device)
        self.action = torch.zeros(self.capacity, action_dim, dtype=torch.float32, device=self.device)
        self.reward = torch.zeros(self.capacity, dtype=torch.float32, device=self.device)
        self.terminated = torch.zeros(self.capacity, dtype=torch.float32, device=self.device)
        # Id of the episode stored in each slot (-1: empty); starts are valid when slot s+horizon has the same id.
        self.episode_id = np.full(self.capacity, -1, dtype=np.int64)
        self.ptr = 0
        self.num_episodes = 0
        self.num_transitions = 0  # agent steps ever added
        self._valid: np.ndarray | None = None

    def __len__(self) -> int:
        return self.num_transitions

    def add_episode(self, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor, terminated: torch.Tensor) -> None:
        """Add one episode: ``obs (L+1, O)``, ``action (L, A)``, ``reward (L,)``, ``terminated (L,)``."""
        n = obs.shape[0]
        if n > self.capacity:
            raise ValueError(f"episode of {n} slots does not fit a buffer of capacity {self.capacity}")
        if action.shape[0] != n - 1 or reward.shape[0] != n - 1:
            raise ValueError("an episode needs one more observation than actions and rewards")
        if self.ptr + n > self.capacity:  # wrap: start the episode at slot 0 (tail slots are invalidated)
            self.episode_id[self.ptr:] = -1
            self.ptr = 0
        sl = slice(self.ptr, self.ptr + n)
        self.obs[sl] = obs.to(self.device, torch.float32)
        self.action[self.ptr] = 0.0
        self.action[self.ptr + 1: self.ptr + n] = action.to(self.device, torch.float32)
        self.reward[self.ptr] = 0.0
        self.reward[self.ptr + 1: self.ptr + n] = reward.to(self.device, torch.float32)
        self.terminated[self.ptr] = 0.0
        self.terminated[self.ptr + 1: self.ptr + n] = terminated.to(self.device, torch.float32)
        self.episode_id[sl] = self.num_episodes
        self.ptr += n
        self.num_episodes += 1
        self.num_transitions += n - 1
        self._valid = None

    def valid_starts(self) -> np.ndarray:
        if self._valid is None:
            ids = self.episode_id
            h = self.horizon
            ok = (ids[:-h] >= 0) & (ids[:-h] == ids[h:])
            self._valid = np.flatnonzero(ok)
        return self._valid

    def sample(self, batch_size: int, generator: np.random.Generator) -> tuple[torch.Tensor, ...]:
        """``obs (H+1, B, O)``, ``action (H, B, A)``, ``reward (H, B, 1)``, ``terminated (H, B, 1)``."""
        starts = self.valid_starts()
        if len(starts) == 0:
            raise RuntimeError("the replay buffer holds no sub-trajectory of horizon + 1 steps yet")
        s = starts[generator.integers(0, len(starts), size=batch_size)]
        idx = torch.as_tensor(s[None, :] + np.arange(self.horizon + 1)[:, None], device=self.device)
        obs = self.obs[idx]
        action = self.action[idx[1:]]
        reward = self.reward[idx[1:]].unsqueeze(-1)
        terminated = self.terminated[idx[1:]].unsqueeze(-1)
        return obs, action, reward, terminated

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        """Everything needed to restore the buffer exactly (only the filled part of the tensors: copies, since
        ``torch.save`` of a view writes its whole storage, the whole capacity)."""
        filled = np.flatnonzero(self.episode_id >= 0)
        end = int(filled.max()) + 1 if len(filled) else 0
        return {
            "capacity": self.capacity,
            "horizon": self.horizon,
            "obs": self.obs[:end].cpu().clone(),
            "action": self.action[:end].cpu().clone(),
            "reward": self.reward[:end].cpu().clone(),
            "terminated": self.terminated[:end].cpu().clone(),
            "episode_id": torch.from_numpy(self.episode_id[:end].copy()),
            "ptr": self.ptr,
            "num_episodes": self.num_episodes,
            "num_transitions": self.num_transitions,
        }

    def load_state_dict(self, state: dict) -> None:
        if int(state["capacity"]) != self.capacity or int(state["horizon"]) != self.horizon:
            raise ValueError(
                f"buffer checkpoint has capacity={state['capacity']}, horizon={state['horizon']}; "
                f"this buffer has capacity={self.capacity}, horizon={self.horizon}"
            )
        end = state["obs"].shape[0]
        self.obs[:end] = state["obs"].to(self.device)
        self.action[:end] = state["action"].to(self.device)
        self.reward[:end] = state["reward"].to(self.device)
        self.terminated[:end] = state["terminated"].to(self.device)
        self.episode_id[:] = -1
        self.episode_id[:end] = state["episode_id"].numpy()
        self.ptr = int(state["ptr"])
        self.num_episodes = int(state["num_episodes"])
        self.num_transitions = int(state["num_transitions"])
        self._valid = None
