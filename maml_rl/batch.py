"""Episode batches: padded, masked, grouped by task.

One sample call runs ``E`` episodes for each of ``N`` tasks. Everything it
collects is stored task-major as ``[N, T, E, ...]`` tensors, where ``T`` is the
horizon (the longest possible episode). Per task, ``batch.rewards[i]`` is then a
``[T, E]`` array — the ``[T, B]`` layout of :mod:`maml_rl.returns` — and a
stacked-parameter policy evaluates all tasks at once on
``observations.reshape(N, T * E, obs_dim)``.

Episodes that end early (Ant terminates when unhealthy) are *masked*, not
dropped: ``mask[i, t, e]`` is 1 while episode ``(i, e)`` is running and 0 after
it ended; padded entries of every field are zero.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from maml_rl.tasks import Task

__all__ = ["EpisodeBatch"]


@dataclasses.dataclass
class EpisodeBatch:
    """Trajectories of ``E`` episodes for each of ``N`` tasks, padded to ``T`` steps.

    Attributes:
        observations: ``[N, T, E, obs_dim]`` float32 — the observation *before* step t.
        actions: ``[N, T, E, act_dim]`` float32 (continuous) or ``[N, T, E]`` int64
            (discrete).
        rewards: ``[N, T, E]`` float32.
        log_probs: ``[N, T, E]`` float32 — log-probability of the action under the
            policy that sampled it, summed over action dimensions.
        terminated: ``[N, T, E]`` bool — True at the step whose transition reached a
            terminal state (no bootstrap past it).
        truncated: ``[N, T, E]`` bool — True at the last step of an episode cut by
            the time limit (a non-terminal state: bootstrap from ``final_observations``).
        mask: ``[N, T, E]`` float32 — 1 for steps that happened, 0 for padding.
        final_observations: ``[N, E, obs_dim]`` float32 — the observation after the
            last step of each episode (used to bootstrap at truncation).
        tasks: the ``N`` tasks, in order.
        success: ``[N, T, E]`` bool — ``info["success"]`` at each step, for families
            that report it (``TaskFamily.reports_success``); ``None`` otherwise.
    """

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    log_probs: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    mask: torch.Tensor
    final_observations: torch.Tensor
    tasks: list[Task]
    success: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n, t, e = self.rewards.shape
        if len(self.tasks) != n:
            raise ValueError(f"EpisodeBatch has {n} task rows but {len(self.tasks)} tasks")
        for name in ("log_probs", "terminated", "truncated", "mask", "success"):
            if getattr(self, name) is None:
                continue
            shape = tuple(getattr(self, name).shape)
            if shape != (n, t, e):
                raise ValueError(f"EpisodeBatch.{name} must have shape {(n, t, e)}, got {shape}")
        if tuple(self.observations.shape[:3]) != (n, t, e):
            raise ValueError(
                f"EpisodeBatch.observations must start with {(n, t, e)}, "
                f"got {tuple(self.observations.shape)}"
            )
        if tuple(self.actions.shape[:3]) != (n, t, e):
            raise ValueError(
                f"EpisodeBatch.actions must start with {(n, t, e)}, got {tuple(self.actions.shape)}"
            )
        if tuple(self.final_observations.shape[:2]) != (n, e):
            raise ValueError(
                f"EpisodeBatch.final_observations must start with {(n, e)}, "
                f"got {tuple(self.final_observations.shape)}"
            )

    # -- sizes -----------------------------------------------------------------
    @property
    def num_tasks(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.rewards.shape[1])

    @property
    def episodes_per_task(self) -> int:
        return int(self.rewards.shape[2])

    @property
    def lengths(self) -> torch.Tensor:
        """``[N, E]`` int64: number of steps each episode lasted."""
        return self.mask.sum(dim=1).long()

    @property
    def episode_returns(self) -> torch.Tensor:
        """``[N, E]``: undiscounted return of each episode."""
        return (self.rewards * self.mask).sum(dim=1)

    @property
    def episode_success(self) -> torch.Tensor | None:
        """``[N, E]`` float: 1 for an episode that succeeded at any of its steps (``None``
        when the family does not report success)."""
        if self.success is None:
            return None
        return ((self.success & (self.mask > 0)).any(dim=1)).float()

    @property
    def env_steps(self) -> int:
        """Total number of environment steps in the batch."""
        return int(self.mask.sum().item())

    # -- helpers ---------------------------------------------------------------
    def to(self, device: torch.device | str) -> EpisodeBatch:
        """A copy with every tensor moved to ``device``."""
        return dataclasses.replace(
            self,
            **{
                f.name: getattr(self, f.name).to(device)
                for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), torch.Tensor)
            },
        )

    def task_slice(self, index: int | slice | Sequence[int]) -> EpisodeBatch:
        """The sub-batch of some tasks (keeps the task dimension)."""
        if isinstance(index, int):
            index = [index]
        idx: Any = index if isinstance(index, slice) else torch.as_tensor(list(index))
        tasks = self.tasks[index] if isinstance(index, slice) else [self.tasks[i] for i in index]
        return dataclasses.replace(
            self,
            tasks=list(tasks),
            **{
                f.name: getattr(self, f.name)[idx]
                for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), torch.Tensor)
            },
        )

    @staticmethod
    def concat_tasks(batches: Sequence[EpisodeBatch]) -> EpisodeBatch:
        """Concatenate batches along the task dimension (same ``T`` and ``E``)."""
        if not batches:
            raise ValueError("concat_tasks needs at least one batch")
        first = batches[0]
        fields = {
            f.name: torch.cat([getattr(b, f.name) for b in batches], dim=0)
            for f in dataclasses.fields(first)
            if isinstance(getattr(first, f.name), torch.Tensor)
        }
        tasks = [t for b in batches for t in b.tasks]
        return EpisodeBatch(tasks=tasks, **fields)

    def equal(self, other: EpisodeBatch) -> bool:
        """Bit-for-bit equality of every tensor and the tasks."""
        return self.tasks == other.tasks and all(
            torch.equal(getattr(self, f.name), getattr(other, f.name))
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        )
