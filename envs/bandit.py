"""Bernoulli multi-armed bandits with random arm probabilities (5, 10 and 50 arms).

The bandit tasks of the meta-RL literature (Duan et al., 2016, "RL²"; pytorch-maml-rl):
a task is a vector of success probabilities, one per arm, and an episode is one
pull. A policy adapted on a few episodes of a task should pull its best arm.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from maml_rl.tasks import Task, TaskFamily
from maml_rl.vector import BatchedTaskEnv

__all__ = [
    "Bandit5Env",
    "Bandit5Task",
    "Bandit10Env",
    "Bandit10Task",
    "Bandit50Env",
    "Bandit50Task",
    "BanditTask",
    "BatchedBernoulliBandit",
    "BernoulliBanditEnv",
]


@dataclasses.dataclass(frozen=True)
class BanditTask(Task):
    """Success probabilities ``probs`` of the arms, each in ``[0, 1]``.

    Base class: use the subclass for your arm count (:class:`Bandit5Task`,
    :class:`Bandit10Task`, :class:`Bandit50Task`), which fixes the length, so that
    a task of one bandit family is rejected by another.
    """

    probs: tuple[float, ...]

    bounds: ClassVar = {"probs": (0.0, 1.0)}


@dataclasses.dataclass(frozen=True)
class Bandit5Task(BanditTask):
    """A task of ``MetaRL/Bandit-5arm-v0``: five success probabilities."""

    shapes: ClassVar = {"probs": 5}


@dataclasses.dataclass(frozen=True)
class Bandit10Task(BanditTask):
    """A task of ``MetaRL/Bandit-10arm-v0``: ten success probabilities."""

    shapes: ClassVar = {"probs": 10}


@dataclasses.dataclass(frozen=True)
class Bandit50Task(BanditTask):
    """A task of ``MetaRL/Bandit-50arm-v0``: fifty success probabilities."""

    shapes: ClassVar = {"probs": 50}


def _pull(probs: np.ndarray, arms: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Rewards ``[K]``: 1.0 where ``uniforms[k] < probs[k, arms[k]]``, else 0.0.

    Shared by the single and the batched env, so both give the same bits.
    """
    return (uniforms < probs[np.arange(len(arms)), arms]).astype(np.float64)


class BernoulliBanditEnv(TaskFamily, gym.Env[np.ndarray, np.int64]):
    """A ``k``-armed Bernoulli bandit whose arm probabilities are the task.

    Base class of the registered families :class:`Bandit5Env`
    (``MetaRL/Bandit-5arm-v0``), :class:`Bandit10Env` (``MetaRL/Bandit-10arm-v0``)
    and :class:`Bandit50Env` (``MetaRL/Bandit-50arm-v0``), which set ``num_arms``.

    ## Observation space
    ``Box(0, 1, (1,), float32)``: the constant ``[0.0]`` (a bandit has no state;
    the policy's output depends on its parameters only).

    ## Action space
    ``Discrete(k)``: the arm to pull.

    ## Reward
    ``reward ~ Bernoulli(probs[a])``: 1.0 with probability ``probs[a]``, else 0.0,
    drawn as ``np_random.random() < probs[a]``. ``info`` holds ``prob`` (the
    pulled arm's success probability, i.e. the expected reward).

    ## Start state
    The constant observation; nothing is random at reset.

    ## Episode end
    One pull per episode: the step *terminates* (there is no later state, so
    returns must not bootstrap past it). The registered time limit is also
    ``horizon = 1``, so ``truncated`` is ``True`` on that step as well.

    ## Task distribution
    ``probs ~ U[0, 1]^k`` (independent arms), drawn with the generator given to
    :meth:`sample_tasks`. Task type: the family's :class:`BanditTask` subclass;
    the default task (before ``set_task``) has every probability 0.5.

    ## Version history
    * v0: initial version.
    """

    #: Number of arms ``k`` (set by each registered subclass).
    num_arms: ClassVar[int]
    task_cls: ClassVar[type[BanditTask]]
    horizon = 1

    def __init__(self, task: BanditTask | dict[str, Any] | None = None) -> None:
        self.observation_space = spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Discrete(self.num_arms)
        self.set_task(task if task is not None else self.default_task())

    @classmethod
    def default_task(cls) -> BanditTask:
        """The task used before :meth:`set_task`: every arm succeeds with p = 0.5."""
        return cls.task_cls(probs=(0.5,) * cls.num_arms)

    def _apply_task(self, task: BanditTask) -> None:
        self._probs = np.array([task.probs], dtype=np.float64)  # [1, k]

    @classmethod
    def sample_tasks(cls, n: int, rng: np.random.Generator) -> list[Task]:
        cls._check_sample_args(n, rng)
        probs = rng.uniform(0.0, 1.0, size=(n, cls.num_arms))
        return [cls.task_cls(probs=tuple(float(p) for p in row)) for row in probs]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {}

    def step(
        self, action: int | np.integer
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(
                f"action must be an arm index in [0, {self.num_arms - 1}], got {action!r}"
            )
        arm = np.array([int(action)])
        reward = _pull(self._probs, arm, np.array([self.np_random.random()]))
        info = {"prob": float(self._probs[0, arm[0]])}
        return np.zeros(1, dtype=np.float32), float(reward[0]), True, False, info

    @classmethod
    def make_batched(
        cls, num_envs: int, max_episode_steps: int | None = None
    ) -> BatchedBernoulliBandit:
        """``num_envs`` bandits of this family as one natively batched env."""
        return BatchedBernoulliBandit(
            cls, num_envs, cls.horizon if max_episode_steps is None else max_episode_steps
        )


class Bandit5Env(BernoulliBanditEnv):
    __doc__ = f"""A 5-armed Bernoulli bandit (``MetaRL/Bandit-5arm-v0``).

    {BernoulliBanditEnv.__doc__}"""
    num_arms = 5
    task_cls = Bandit5Task
    task_distribution = "probs ~ U[0, 1]^5 (one Bernoulli arm each)"


class Bandit10Env(BernoulliBanditEnv):
    __doc__ = f"""A 10-armed Bernoulli bandit (``MetaRL/Bandit-10arm-v0``).

    {BernoulliBanditEnv.__doc__}"""
    num_arms = 10
    task_cls = Bandit10Task
    task_distribution = "probs ~ U[0, 1]^10 (one Bernoulli arm each)"


class Bandit50Env(BernoulliBanditEnv):
    __doc__ = f"""A 50-armed Bernoulli bandit (``MetaRL/Bandit-50arm-v0``).

    {BernoulliBanditEnv.__doc__}"""
    num_arms = 50
    task_cls = Bandit50Task
    task_distribution = "probs ~ U[0, 1]^50 (one Bernoulli arm each)"


class BatchedBernoulliBandit(BatchedTaskEnv):
    """``K`` bandits of one family as arrays (contract: :mod:`maml_rl.vector`).

    Env ``k`` draws its reward from its own generator, seeded as the single env's
    ``np_random`` (``reset(seed=[s_k])``), so rewards equal those of ``K`` single
    envs bitwise. Actions are arm indices, shape ``[K]``.

    Args:
        family: the single-env class (a :class:`BernoulliBanditEnv` subclass).
        num_envs: number of bandits ``K``.
        max_episode_steps: time limit (1 for the registered families).
    """

    def __init__(
        self, family: type[BernoulliBanditEnv], num_envs: int, max_episode_steps: int
    ) -> None:
        super().__init__(num_envs, max_episode_steps)
        self.family = family
        self.task_cls = family.task_cls
        self.single_observation_space = spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self.single_action_space = spaces.Discrete(family.num_arms)
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, self.num_envs
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self._observations = np.zeros((self.num_envs, 1), dtype=np.float32)
        self.set_tasks([family.default_task()] * self.num_envs)

    def _apply_tasks(self, tasks: list[Task]) -> None:
        self._probs = np.array([t.probs for t in tasks], dtype=np.float64)  # type: ignore[attr-defined]

    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        self._reseed(seed)
        self._elapsed = 0
        return self._observations.copy(), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        arms = self._check_actions(actions)
        # One draw per env from its own generator: the single env's draw, in order.
        uniforms = np.array([rng.random() for rng in self._generators()])
        rewards = _pull(self._probs, arms, uniforms)
        terminated = np.ones(self.num_envs, dtype=bool)
        info = {"prob": self._probs[np.arange(self.num_envs), arms]}
        return self._observations.copy(), rewards, terminated, self._time_limit(), info
