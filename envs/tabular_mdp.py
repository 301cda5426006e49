"""Random tabular MDPs: 10 states, 5 actions, random transitions and rewards.

The tabular MDP tasks of the meta-RL literature (Duan et al., 2016, "RL²";
pytorch-maml-rl): every task is a whole MDP, its transition kernel drawn from a
flat Dirichlet and its mean rewards from a Gaussian.
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

__all__ = ["BatchedTabularMDP", "TabularMDPEnv", "TabularMDPTask"]

NUM_STATES = 10
NUM_ACTIONS = 5
#: Tolerance on ``Σ_s' P(s' | s, a) = 1`` when a task is built.
PROBABILITY_ATOL = 1e-6


@dataclasses.dataclass(frozen=True)
class TabularMDPTask(Task):
    """One MDP: ``P(s' | s, a)`` and the mean rewards ``m[s, a]``, flattened row-major.

    Attributes:
        transitions: ``10·5·10 = 500`` probabilities, ``P[s, a, s']`` in C order;
            each ``P[s, a, :]`` must sum to 1.
        reward_means: ``10·5 = 50`` mean rewards ``m[s, a]`` in C order.
    """

    transitions: tuple[float, ...]
    reward_means: tuple[float, ...]

    bounds: ClassVar = {"transitions": (0.0, 1.0)}
    shapes: ClassVar = {
        "transitions": NUM_STATES * NUM_ACTIONS * NUM_STATES,
        "reward_means": NUM_STATES * NUM_ACTIONS,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        sums = np.reshape(self.transitions, (NUM_STATES, NUM_ACTIONS, NUM_STATES)).sum(axis=-1)
        worst = float(np.max(np.abs(sums - 1.0)))
        if worst > PROBABILITY_ATOL:
            raise ValueError(
                "TabularMDPTask.transitions must give, for every (state, action), next-state "
                f"probabilities summing to 1; a row sums to {1.0 + worst:.6g} or {1.0 - worst:.6g}"
            )

    @classmethod
    def from_arrays(cls, transitions: np.ndarray, reward_means: np.ndarray) -> TabularMDPTask:
        """Build a task from ``P`` ``[10, 5, 10]`` and ``m`` ``[10, 5]`` arrays."""
        return cls(
            transitions=tuple(np.asarray(transitions, dtype=np.float64).ravel().tolist()),
            reward_means=tuple(np.asarray(reward_means, dtype=np.float64).ravel().tolist()),
        )


def _task_arrays(tasks: Sequence[Task]) -> tuple[np.ndarray, np.ndarray]:
    """Next-state CDFs ``[K, S, A, S]`` and reward means ``[K, S, A]`` of ``K`` tasks."""
    transitions = np.array([t.transitions for t in tasks], dtype=np.float64)  # type: ignore[attr-defined]
    means = np.array([t.reward_means for t in tasks], dtype=np.float64)  # type: ignore[attr-defined]
    shape = (len(tasks), NUM_STATES, NUM_ACTIONS)
    return np.cumsum(transitions.reshape(*shape, NUM_STATES), axis=-1), means.reshape(shape)


def _transition(
    cdf: np.ndarray,
    means: np.ndarray,
    states: np.ndarray,
    actions: np.ndarray,
    normals: np.ndarray,
    uniforms: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """One step of ``K`` MDPs; shared by the single and batched env (same bits).

    Args:
        cdf: ``[K, S, A, S]`` next-state CDFs; means: ``[K, S, A]``.
        states, actions: ``[K]`` ints; normals, uniforms: ``[K]`` draws.

    Returns:
        rewards ``m[s, a] + normal`` ``[K]`` and next states ``[K]``: the first
        ``s'`` whose CDF exceeds ``uniform`` (inverse-CDF sampling).
    """
    rows = np.arange(len(states))
    rewards = means[rows, states, actions] + normals
    next_cdf = cdf[rows, states, actions]  # [K, S]
    # Rounding can leave the CDF's last entry a hair below 1: clamp to the last state.
    next_states = np.minimum((next_cdf <= uniforms[:, None]).sum(axis=1), NUM_STATES - 1)
    return rewards, next_states


def _one_hot(states: np.ndarray) -> np.ndarray:
    obs = np.zeros((len(states), NUM_STATES), dtype=np.float32)
    obs[np.arange(len(states)), states] = 1.0
    return obs


class TabularMDPEnv(TaskFamily, gym.Env[np.ndarray, np.int64]):
    """A random 10-state, 5-action MDP whose transitions and rewards are the task.

    Registered as ``MetaRL/TabularMDP-v0``. The agent sees its state but not the
    MDP; it must infer the rewarding state-action pairs and the dynamics from a
    few episodes.

    ## Observation space
    ``Box(0, 1, (10,), float32)``: the one-hot encoding of the current state.

    ## Action space
    ``Discrete(5)``.

    ## Transition and reward
    From state ``s`` with action ``a``: ``reward = m[s, a] + ε`` with
    ``ε ~ N(0, 1)``, then ``s' ~ P(· | s, a)``. Both are drawn from the env's
    ``np_random``, the noise first (``standard_normal()``), then a uniform
    (``random()``) turned into ``s'`` by inverse-CDF sampling. ``info`` holds
    ``reward_mean`` (``m[s, a]``, the expected reward) and ``state`` (``s'``).

    ## Start state
    State 0, deterministically (the tasks' transitions are random, so no state
    is special).

    ## Episode end
    Never terminates. Truncated after ``horizon = 10`` steps (the registered
    ``max_episode_steps``).

    ## Task distribution
    For every ``(s, a)`` independently: ``P(· | s, a) ~ Dirichlet(1, …, 1)``
    (uniform on the simplex over the 10 next states) and ``m[s, a] ~ N(1, 1)``,
    drawn with the generator given to :meth:`sample_tasks` (all transitions
    first, then all means). Task type :class:`TabularMDPTask`; the default task
    (before ``set_task``) has uniform transitions and every mean equal to 1.

    ## Version history
    * v0: initial version.
    """

    task_cls = TabularMDPTask
    horizon = 10
    task_distribution = "P(.|s,a) ~ Dirichlet(1)^10, m[s,a] ~ N(1, 1); 10 states, 5 actions"

    def __init__(self, task: TabularMDPTask | dict[str, Any] | None = None) -> None:
        self.observation_space = spaces.Box(0.0, 1.0, shape=(NUM_STATES,), dtype=np.float32)
        self.action_space = spaces.Discrete(NUM_ACTIONS)
        self._state = 0
        self.set_task(task if task is not None else self.default_task())

    @classmethod
    def default_task(cls) -> TabularMDPTask:
        """Uniform transitions, every mean reward 1 (the mean of ``N(1, 1)``)."""
        return TabularMDPTask.from_arrays(
            np.full((NUM_STATES, NUM_ACTIONS, NUM_STATES), 1.0 / NUM_STATES),
            np.ones((NUM_STATES, NUM_ACTIONS)),
        )

    def _apply_task(self, task: TabularMDPTask) -> None:
        self._cdf, self._means = _task_arrays([task])

    @classmethod
    def sample_tasks(cls, n: int, rng: np.random.Generator) -> list[Task]:
        cls._check_sample_args(n, rng)
        transitions = rng.dirichlet(np.ones(NUM_STATES), size=(n, NUM_STATES, NUM_ACTIONS))
        means = rng.normal(1.0, 1.0, size=(n, NUM_STATES, NUM_ACTIONS))
        return [TabularMDPTask.from_arrays(p, m) for p, m in zip(transitions, means, strict=True)]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._state = 0
        return _one_hot(np.array([self._state]))[0], {}

    def step(
        self, action: int | np.integer
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an integer in [0, {NUM_ACTIONS - 1}], got {action!r}")
        normal = self.np_random.standard_normal()
        uniform = self.np_random.random()
        state, act = np.array([self._state]), np.array([int(action)])
        rewards, next_states = _transition(
            self._cdf, self._means, state, act, np.array([normal]), np.array([uniform])
        )
        info = {
            "reward_mean": float(self._means[0, state[0], act[0]]),
            "state": int(next_states[0]),
        }
        self._state = int(next_states[0])
        return _one_hot(next_states)[0], float(rewards[0]), False, False, info

    @classmethod
    def make_batched(cls, num_envs: int, max_episode_steps: int | None = None) -> BatchedTabularMDP:
        """``num_envs`` MDPs as one natively batched env."""
        return BatchedTabularMDP(
            num_envs, cls.horizon if max_episode_steps is None else max_episode_steps
        )


class BatchedTabularMDP(BatchedTaskEnv):
    """``K`` tabular MDPs as arrays (contract: :mod:`maml_rl.vector`).

    Env ``k`` draws its noise and next state from its own generator, seeded as
    the single env's ``np_random``, so everything equals ``K`` single envs
    bitwise. Actions are integers, shape ``[K]``.
    """

    task_cls = TabularMDPTask

    def __init__(self, num_envs: int, max_episode_steps: int = TabularMDPEnv.horizon) -> None:
        super().__init__(num_envs, max_episode_steps)
        self.single_observation_space = spaces.Box(0.0, 1.0, shape=(NUM_STATES,), dtype=np.float32)
        self.single_action_space = spaces.Discrete(NUM_ACTIONS)
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, self.num_envs
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self._states = np.zeros(self.num_envs, dtype=np.int64)
        self.set_tasks([TabularMDPEnv.default_task()] * self.num_envs)

    def _apply_tasks(self, tasks: list[Task]) -> None:
        self._cdf, self._means = _task_arrays(tasks)

    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        self._reseed(seed)
        self._elapsed = 0
        self._states = np.zeros(self.num_envs, dtype=np.int64)
        return _one_hot(self._states), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = self._check_actions(actions)
        draws = np.empty((2, self.num_envs))
        # Per env and in the single env's order: the reward noise, then the uniform.
        for k, rng in enumerate(self._generators()):
            draws[0, k] = rng.standard_normal()
            draws[1, k] = rng.random()
        rows = np.arange(self.num_envs)
        reward_means = self._means[rows, self._states, actions]
        rewards, self._states = _transition(
            self._cdf, self._means, self._states, actions, draws[0], draws[1]
        )
        terminated = np.zeros(self.num_envs, dtype=bool)
        info = {"reward_mean": reward_means, "state": self._states.copy()}
        return _one_hot(self._states), rewards, terminated, self._time_limit(), info
