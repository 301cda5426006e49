"""Batched task-family environments: the contract, and the generic implementation.

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

**The generic batched env.** The sampler steps every environment of a sample call in
lockstep through one :class:`BatchedTaskEnv`. A family that ships a natively batched
implementation (``family.make_batched(K)``) is used as is; for any other
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
from gymnasium.utils import seeding

from maml_rl.tasks import Task, family_class, family_spec, unwrap_family

__all__ = ["BatchedTaskEnv", "TaskVectorEnv", "make_task_env"]


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

    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every env; ``seed=[s_0, …, s_{K-1}]`` seeds env ``k`` with ``s_k``."""
        raise NotImplementedError  # pragma: no cover - overridden

    def _generators(self) -> list[np.random.Generator]:
        """The per-env generators (``ResetNeeded`` before the first ``reset``)."""
        rngs = [rng for rng in self.np_randoms if rng is not None]
        if len(rngs) != self.num_envs:
            raise gym.error.ResetNeeded("call reset() before step()")
        return rngs

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
        env_id = family_spec(env_id).id  # a clear error for an unknown id; module imported
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
            ``[K]``, truncated ``[K]`` and an info dict with ``success`` ``[K]`` (the
            envs' ``info["success"]``, False where they report none).
        """
        if self._observations is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        actions = self._check_actions(actions)
        rewards = np.zeros(self.num_envs)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        success = np.zeros(self.num_envs, dtype=bool)
        for k in np.flatnonzero(~self._done):
            obs, reward, term, trunc, info = self.envs[k].step(actions[k])
            success[k] = bool(info.get("success", False))
            self._observations[k] = obs
            rewards[k] = reward
            terminated[k] = term
            truncated[k] = trunc
        self._done |= terminated | truncated
        self._elapsed += 1
        return self._observations.copy(), rewards, terminated, truncated, {"success": success}

    def close(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()


def make_task_env(
    env_id: str,
    num_envs: int,
    max_episode_steps: int | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    num_threads: int | None = None,
) -> BatchedTaskEnv:
    """``num_envs`` envs of a family as one batched env, natively batched where possible.

    The family's own ``make_batched`` is used when it exists and accepts
    ``env_kwargs``; otherwise :class:`TaskVectorEnv` wraps the registered env.

    Args:
        env_id: a registered task-family id.
        num_envs: number of environments ``K``.
        max_episode_steps: time limit; defaults to the registered one.
        env_kwargs: keyword arguments of the env's constructor.
        num_threads: threads a native implementation may step its envs on
            (``None``: its default); passed on where ``make_batched`` takes
            ``num_threads`` (the MuJoCo families do).
    """
    cls = family_class(env_id)
    kwargs = dict(env_kwargs or {})
    make_batched = getattr(cls, "make_batched", None)
    if callable(make_batched):
        if "num_threads" in inspect.signature(make_batched).parameters:
            kwargs["num_threads"] = num_threads
        try:
            inspect.signature(make_batched).bind(
                num_envs, max_episode_steps=max_episode_steps, **kwargs
            )
        except TypeError:
            pass  # the native version cannot take these kwargs: use the generic one
        else:
            return make_batched(num_envs, max_episode_steps=max_episode_steps, **kwargs)
        kwargs.pop("num_threads", None)
    return TaskVectorEnv(env_id, num_envs, max_episode_steps, kwargs)
