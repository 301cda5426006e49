"""Natively batched task-family environments.

A :class:`BatchedTaskEnv` holds ``num_envs`` environments of one family, each
with its own task, and steps them as arrays: one ``step`` call takes actions of
shape ``[num_envs, act_dim]`` and returns observations ``[num_envs, obs_dim]``,
rewards, ``terminated`` and ``truncated`` of shape ``[num_envs]``.

Contract (what the sampler relies on, and what the equivalence tests check):

* ``set_tasks(tasks)`` gives env ``k`` the task ``tasks[k]``;
* ``reset(seed=[s_0, ..., s_{K-1}])`` resets env ``k`` exactly as
  ``gymnasium.make(id).reset(seed=s_k)`` would (same start state);
* ``step`` then yields, for each env, the observation, reward, ``terminated``
  and ``truncated`` that the single registered env yields for the same actions
  (the time limit is the registered ``max_episode_steps``);
* there is **no autoreset**: each env plays one episode per ``reset``. Once an
  env has terminated or truncated, its later outputs are meaningless and the
  caller must mask them (the sampler does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding

from maml_rl.tasks import Task

__all__ = ["BatchedTaskEnv"]


class BatchedTaskEnv(gym.vector.VectorEnv):
    """Base class of natively batched families (see the module docstring)."""

    # An instance attribute in Gymnasium's VectorEnv, so not a ClassVar here.
    metadata: dict[str, Any] = {"autoreset_mode": None}  # noqa: RUF012
    task_cls: type[Task]

    def __init__(self, num_envs: int, max_episode_steps: int) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be ≥ 1, got {num_envs}")
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be ≥ 1, got {max_episode_steps}")
        self.num_envs = int(num_envs)
        self.max_episode_steps = int(max_episode_steps)
        self._elapsed = 0
        self.tasks: list[Task] = []
        #: Env ``k``'s random generator, the batched twin of ``gym.Env.np_random``.
        self.np_randoms: list[np.random.Generator | None] = [None] * self.num_envs

    def set_tasks(self, tasks: Sequence[Task | dict[str, Any]]) -> None:
        """Give env ``k`` the task ``tasks[k]`` (exactly ``num_envs`` tasks)."""
        if len(tasks) != self.num_envs:
            raise ValueError(f"set_tasks needs {self.num_envs} tasks, got {len(tasks)}")
        self.tasks = [self.task_cls.coerce(t) for t in tasks]
        self._apply_tasks(self.tasks)

    def _apply_tasks(self, tasks: list[Task]) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _seeds(self, seed: int | Sequence[int] | None) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, (int, np.integer)):
            # Gymnasium's convention for vector envs: env k gets seed + k.
            return [int(seed) + k for k in range(self.num_envs)]
        seeds: list[int | None] = [int(s) for s in seed]
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset needs {self.num_envs} seeds, got {len(seeds)}")
        return seeds

    def _reseed(self, seed: int | Sequence[int] | None) -> None:
        """Update the per-env generators as ``gym.Env.reset(seed=s_k)`` would.

        A seed re-creates env ``k``'s generator with
        ``gymnasium.utils.seeding.np_random(s_k)``; ``None`` keeps the current one
        (or draws a fresh, OS-seeded one the first time), exactly like the single
        env, so both then make the same draws.
        """
        for k, s in enumerate(self._seeds(seed)):
            if s is not None or self.np_randoms[k] is None:
                self.np_randoms[k] = seeding.np_random(s)[0]

    def _check_actions(self, actions: np.ndarray) -> np.ndarray:
        """Validate a batch of actions: float64 ``[K, *act_shape]``, or int64 ``[K]``
        (values in ``[0, n)``) for a ``Discrete`` action space."""
        space = self.single_action_space
        if isinstance(space, gym.spaces.Discrete):
            raw = np.asarray(actions)
            if raw.shape != (self.num_envs,):
                raise ValueError(
                    f"actions must have shape ({self.num_envs},) (one action index per env), "
                    f"got {raw.shape}"
                )
            discrete = raw.astype(np.int64)
            if (
                not np.array_equal(discrete, raw)
                or np.any(discrete < space.start)
                or np.any(discrete >= space.start + space.n)
            ):
                raise ValueError(
                    f"actions must be integers in [{space.start}, {space.start + space.n - 1}], "
                    f"got {raw!r}"
                )
            return discrete
        actions = np.asarray(actions, dtype=np.float64)
        expected = (self.num_envs, *(space.shape or ()))
        if actions.shape != expected:
            raise ValueError(f"actions must have shape {expected}, got {actions.shape}")
        return actions

    def _time_limit(self) -> np.ndarray:
        self._elapsed += 1
        return np.full(self.num_envs, self._elapsed >= self.max_episode_steps)
