"""The generic batched env: ``K`` ordinary Gymnasium envs behind the batched contract.

The sampler steps every environment of a sample call in lockstep through one
:class:`~maml_rl.envs.batched.BatchedTaskEnv`. A family that ships a natively
batched implementation (``family.make_batched(K)``) is used as is; for any other
family, :class:`TaskVectorEnv` wraps ``K`` copies of the registered env
(``gymnasium.make(env_id)``, each given its task with ``set_task``) so that a user's
new family works with the sampler without writing any batched code. It is slower
(a Python loop over envs), never different: env ``k`` *is* the registered env.

:func:`make_task_env` picks between the two.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from maml_rl.envs.batched import BatchedTaskEnv
from maml_rl.tasks import Task, family_class, unwrap_family

__all__ = ["TaskVectorEnv", "make_task_env"]


class TaskVectorEnv(BatchedTaskEnv):
    """``num_envs`` registered envs of one family behind the :class:`BatchedTaskEnv` contract.

    Env ``k`` is ``gymnasium.make(env_id, max_episode_steps=max_episode_steps,
    **env_kwargs)``, so its observations, rewards, ``terminated`` and ``truncated``
    (from the ``TimeLimit`` wrapper) are exactly those of the registered env. As the
    contract demands there is no autoreset: an env that has terminated or truncated
    is no longer stepped, and until the next :meth:`reset` it reports its last
    observation, reward 0 and ``terminated = truncated = False``.

    Args:
        env_id: a registered task-family id (``"MetaRL/Navigation2D-v0"``).
        num_envs: number of environments ``K``.
        max_episode_steps: time limit; defaults to the registered one.
        env_kwargs: keyword arguments for ``gymnasium.make`` (the env's constructor).
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        max_episode_steps: int | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        family_class(env_id)  # a clear error for an unknown id
        if max_episode_steps is None:
            max_episode_steps = gym.spec(env_id).max_episode_steps
            if max_episode_steps is None:
                raise ValueError(f"{env_id} has no registered time limit; pass max_episode_steps")
        super().__init__(num_envs, max_episode_steps)
        kwargs = dict(env_kwargs or {})
        # The checker wrapper only inspects the first calls, and this env is built
        # once per worker and stepped millions of times: leave it out.
        self.envs = [
            gym.make(
                env_id,
                max_episode_steps=self.max_episode_steps,
                disable_env_checker=True,
                **kwargs,
            )
            for _ in range(self.num_envs)
        ]
        self._families = [unwrap_family(env) for env in self.envs]
        self.task_cls = type(self._families[0]).task_cls
        first = self.envs[0]
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, self.num_envs
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self._done = np.zeros(self.num_envs, dtype=bool)
        self._observations: np.ndarray | None = None
        self.tasks = [family.task for family in self._families]

    def _apply_tasks(self, tasks: list[Task]) -> None:
        for family, task in zip(self._families, tasks, strict=True):
            family.set_task(task)

    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every env; env ``k`` with ``seed[k]``.

        Returns:
            Observations ``[K, *obs_shape]`` (the env's dtype) and an empty info dict.
        """
        seeds = self._seeds(seed)
        first = [
            env.reset(seed=s, options=options)[0] for env, s in zip(self.envs, seeds, strict=True)
        ]
        self._observations = np.stack(first)
        self._done[:] = False
        self._elapsed = 0
        return self._observations.copy(), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every env that is still running with ``actions[k]``.

        Args:
            actions: ``[K, *act_shape]`` (``Box``) or ``[K]`` integers (``Discrete``).

        Returns:
            observations ``[K, *obs_shape]``, rewards ``[K]`` float64, terminated
            ``[K]``, truncated ``[K]`` and an empty info dict.
        """
        if self._observations is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        actions = self._check_actions(actions)
        rewards = np.zeros(self.num_envs)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        for k in np.flatnonzero(~self._done):
            obs, reward, term, trunc, _ = self.envs[k].step(actions[k])
            self._observations[k] = obs
            rewards[k] = reward
            terminated[k] = term
            truncated[k] = trunc
        self._done |= terminated | truncated
        self._elapsed += 1
        return self._observations.copy(), rewards, terminated, truncated, {}

    def close(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()


def make_task_env(
    env_id: str,
    num_envs: int,
    max_episode_steps: int | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
) -> BatchedTaskEnv:
    """``num_envs`` envs of a family as one batched env, natively batched where possible.

    The family's own ``make_batched`` is used when it exists and accepts
    ``env_kwargs``; otherwise :class:`TaskVectorEnv` wraps the registered env.

    Args:
        env_id: a registered task-family id.
        num_envs: number of environments ``K``.
        max_episode_steps: time limit; defaults to the registered one.
        env_kwargs: keyword arguments of the env's constructor.
    """
    cls = family_class(env_id)
    kwargs = dict(env_kwargs or {})
    make_batched = getattr(cls, "make_batched", None)
    if callable(make_batched):
        try:
            inspect.signature(make_batched).bind(
                num_envs, max_episode_steps=max_episode_steps, **kwargs
            )
        except TypeError:
            pass  # the native version cannot take these kwargs: use the generic one
        else:
            return make_batched(num_envs, max_episode_steps=max_episode_steps, **kwargs)
    return TaskVectorEnv(env_id, num_envs, max_episode_steps, kwargs)
