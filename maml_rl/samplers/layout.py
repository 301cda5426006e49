"""How a sample call is split over workers, and where its episodes are stored.

A sample call is split into :class:`Shard` s (blocks of whole tasks, or episode
ranges of one task when there are more workers than tasks); each shard is played
into its block of the batch arrays, laid out by :class:`BatchLayout` (in fresh
arrays, or in one shared-memory block for worker processes).

A batch does not depend on the split. Randomness belongs to the episode (see
:mod:`maml_rl.samplers.engine`), and **the policy sees the same numbers in the same
memory layout**: a shard evaluates the policy on ``[S, E, obs_dim]`` observations
of ``S`` consecutive task *slots* (its own tasks, maybe a few neighbours whose
outputs it discards), with parameters that are views of the full stacked
``[N, ...]`` tensors (:func:`policy_slots`). Two properties of torch's CPU kernels
(with MKL) make both choices necessary. (1) A batched matmul may round differently
when a matrix starts at another offset modulo 64 bytes. Task ``i``'s block of any
``[S, E, d]`` activation starts ``(i - slot0) * E * d`` floats into a fresh
(64-byte aligned) tensor, against ``i * E * d`` in the unsplit batch; starting the
slots at a multiple of ``16 / gcd(E, 16)`` tasks makes the two congruent for every
width ``d``. (2) A batch of *one* matrix with one output column goes through
another kernel than a batch of several, so a shard always evaluates at least two
slots. With both, each row's result is bitwise independent of the split, which
``tests/test_sampler.py`` checks across backends and worker counts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from maml_rl.batch import EpisodeBatch
from maml_rl.tasks import Task

__all__ = ["ALIGN_BYTES", "BatchLayout", "Shard", "partition", "policy_slots"]

#: Alignment (bytes) whose offsets the policy's per-task blocks keep across splits.
ALIGN_BYTES = 64


def policy_slots(
    task_start: int, task_stop: int, num_tasks: int, episodes: int, itemsize: int
) -> tuple[int, int]:
    """The task slots ``[slot0, slot1)`` a shard of tasks ``[task_start, task_stop)``
    evaluates the policy on (see the module docstring).

    ``slot0`` is rounded down to a multiple of ``q = a / gcd(E, a)`` tasks, where
    ``a`` is the number of elements in :data:`ALIGN_BYTES`, so that each task's
    block starts at the same offset modulo 64 bytes as in the unsplit batch; and
    there are at least two slots when there are at least two tasks.
    """
    per_line = max(ALIGN_BYTES // itemsize, 1)
    q = per_line // math.gcd(episodes, per_line)
    slot0, slot1 = task_start // q * q, task_stop
    if slot1 - slot0 == 1 and num_tasks > 1:
        if slot1 < num_tasks:
            slot1 += 1
        else:
            slot0 = (slot0 - 1) // q * q
    return slot0, slot1


# -- how to split it -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Shard:
    """Episodes ``[episode_start, episode_stop)`` of tasks ``[task_start, task_stop)``.

    A shard holds whole tasks (``episode_start = 0, episode_stop = E``) or, when there
    are more workers than tasks, part of the episodes of one task.
    """

    task_start: int
    task_stop: int
    episode_start: int
    episode_stop: int

    @property
    def num_tasks(self) -> int:
        return self.task_stop - self.task_start

    @property
    def num_episodes(self) -> int:
        return self.episode_stop - self.episode_start

    @property
    def num_envs(self) -> int:
        return self.num_tasks * self.num_episodes


def partition(num_tasks: int, episodes: int, num_workers: int) -> list[Shard]:
    """Split ``num_tasks × episodes`` episodes into at most ``num_workers`` shards.

    Whole tasks when there are at least as many tasks as workers (contiguous blocks
    whose sizes differ by at most one); otherwise each task's episodes are split
    over ``num_workers // num_tasks`` or one more workers. At most
    ``num_tasks * episodes`` shards (one episode each) are made.
    """
    n, e = num_tasks, episodes
    w = min(num_workers, n * e)
    if w <= n:
        bounds = [n * k // w for k in range(w + 1)]
        return [Shard(bounds[k], bounds[k + 1], 0, e) for k in range(w)]
    shards = []
    for i in range(n):
        pieces = w // n + (1 if i < w % n else 0)
        cuts = [e * k // pieces for k in range(pieces + 1)]
        shards += [Shard(i, i + 1, cuts[k], cuts[k + 1]) for k in range(pieces)]
    return shards


# -- where it goes -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BatchLayout:
    """Shapes and dtypes of one batch's arrays, and their place in a flat buffer.

    Arrays are task-major like :class:`~maml_rl.batch.EpisodeBatch`: ``[N, T, E, ...]``
    (``final_observations``: ``[N, E, obs_dim]``).
    """

    num_tasks: int
    horizon: int
    episodes: int
    obs_dim: int
    act_dim: int | None  # None: discrete actions, stored as int64 indices
    success: bool = False  # whether the family reports info["success"]

    def fields(self) -> list[tuple[str, tuple[int, ...], np.dtype]]:
        n, t, e = self.num_tasks, self.horizon, self.episodes
        act_shape = (n, t, e) if self.act_dim is None else (n, t, e, self.act_dim)
        act_dtype = np.dtype(np.int64) if self.act_dim is None else np.dtype(np.float32)
        f32, b = np.dtype(np.float32), np.dtype(np.bool_)
        return [
            ("observations", (n, t, e, self.obs_dim), f32),
            ("actions", act_shape, act_dtype),
            ("rewards", (n, t, e), f32),
            ("log_probs", (n, t, e), f32),
            ("terminated", (n, t, e), b),
            ("truncated", (n, t, e), b),
            ("mask", (n, t, e), f32),
            ("final_observations", (n, e, self.obs_dim), f32),
            *([("success", (n, t, e), b)] if self.success else []),
        ]

    def _offsets(self) -> list[tuple[str, tuple[int, ...], np.dtype, int]]:
        out, offset = [], 0
        for name, shape, dtype in self.fields():
            out.append((name, shape, dtype, offset))
            size = int(np.prod(shape)) * dtype.itemsize
            offset += -(-size // 64) * 64  # keep every array 64-byte aligned
        return out

    @property
    def nbytes(self) -> int:
        _, shape, dtype, offset = self._offsets()[-1]
        return offset + int(np.prod(shape)) * dtype.itemsize

    def allocate(self) -> dict[str, np.ndarray]:
        """Fresh zeroed arrays."""
        return {name: np.zeros(shape, dtype) for name, shape, dtype in self.fields()}

    def views(self, buffer: Any) -> dict[str, np.ndarray]:
        """Arrays laid out in ``buffer`` (e.g. a shared-memory block of ``nbytes``)."""
        return {
            name: np.ndarray(shape, dtype, buffer=buffer, offset=offset)
            for name, shape, dtype, offset in self._offsets()
        }

    @staticmethod
    def block(arrays: Mapping[str, np.ndarray], shard: Shard) -> dict[str, np.ndarray]:
        """Views of a shard's part of full-batch arrays: ``[n, T, m, ...]`` / ``[n, m, ...]``."""
        tasks = slice(shard.task_start, shard.task_stop)
        eps = slice(shard.episode_start, shard.episode_stop)
        return {
            name: a[tasks, eps] if name == "final_observations" else a[tasks, :, eps]
            for name, a in arrays.items()
        }

    def shard_layout(self, shard: Shard) -> BatchLayout:
        """The layout of a shard's block alone (what a Ray worker sends back)."""
        return dataclasses.replace(self, num_tasks=shard.num_tasks, episodes=shard.num_episodes)

    def to_batch(self, arrays: Mapping[str, np.ndarray], tasks: list[Task]) -> EpisodeBatch:
        """Wrap arrays (owned by the caller from now on) as an :class:`EpisodeBatch`."""
        return EpisodeBatch(
            tasks=list(tasks), **{name: torch.from_numpy(a) for name, a in arrays.items()}
        )
