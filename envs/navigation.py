"""2D point navigation with a random goal (the MAML paper's 2D navigation task)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from maml_rl.envs.batched import BatchedTaskEnv
from maml_rl.tasks import Task, TaskFamily

__all__ = ["BatchedNavigation2D", "GoalTask2D", "Navigation2DEnv"]

GOAL_LOW, GOAL_HIGH = -0.5, 0.5
MAX_STEP = 0.1


@dataclasses.dataclass(frozen=True)
class GoalTask2D(Task):
    """A goal position in the plane."""

    goal: tuple[float, float]

    bounds: ClassVar = {"goal": (GOAL_LOW, GOAL_HIGH)}
    shapes: ClassVar = {"goal": 2}


def _move(pos: np.ndarray, action: np.ndarray) -> np.ndarray:
    return pos + np.clip(action, -MAX_STEP, MAX_STEP)


def _distance(pos: np.ndarray, goal: np.ndarray) -> np.ndarray:
    # Written out (not np.linalg.norm) so the single and batched envs share bits.
    d = pos - goal
    return np.sqrt(d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1])


class Navigation2DEnv(TaskFamily, gym.Env[np.ndarray, np.ndarray]):
    """A point robot in the plane must reach a goal it cannot see.

    Registered as ``MetaRL/Navigation2D-v0``. The task is the goal; the agent only
    observes its own position, so it must infer the goal from rewards — the
    MAML paper's 2D navigation benchmark (Finn et al., 2017, §5.3).

    ## Observation space
    ``Box(-inf, inf, (2,), float32)``:

    | index | observation | unit |
    |---|---|---|
    | 0 | x position of the point | position units |
    | 1 | y position of the point | position units |

    ## Action space
    ``Box(-0.1, 0.1, (2,), float32)``: the displacement ``(dx, dy)``. Actions are
    clipped to ``[-0.1, 0.1]`` per coordinate before use, so a policy may output
    any real vector.

    ## Transition
    ``position ← position + clip(action, -0.1, 0.1)``.

    ## Reward
    ``reward = −‖position − goal‖₂``, measured *after* the move (the original MAML
    code's choice; the paper's text says negative *squared* distance). ``info``
    holds ``reward_dist`` (the reward) and ``distance``.

    ## Start state
    The point starts at the origin ``(0, 0)``; the start is deterministic.

    ## Episode end
    No termination (``terminated`` is always ``False``; some earlier versions
    ended the episode within 0.01 of the goal — this one does not, so returns are
    comparable over a fixed horizon). Truncation after ``horizon = 100`` steps
    (the registered ``max_episode_steps``).

    ## Task distribution
    ``goal ~ U[-0.5, 0.5]²`` (each coordinate uniform and independent), drawn
    with the generator given to :meth:`sample_tasks`. Task type
    :class:`GoalTask2D`; the default task (before ``set_task``) is the goal ``(0, 0)``.

    ## Version history
    * v0: initial version.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012
    task_cls = GoalTask2D
    horizon = 100
    task_distribution = "goal ~ U[-0.5, 0.5]^2"

    def __init__(self, task: GoalTask2D | dict[str, Any] | None = None) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-MAX_STEP, MAX_STEP, shape=(2,), dtype=np.float32)
        self._pos = np.zeros(2)
        self.set_task(task if task is not None else GoalTask2D(goal=(0.0, 0.0)))

    def _apply_task(self, task: GoalTask2D) -> None:
        self._goal = np.asarray(task.goal, dtype=np.float64)

    @classmethod
    def sample_tasks(cls, n: int, rng: np.random.Generator) -> list[Task]:
        cls._check_sample_args(n, rng)
        goals = rng.uniform(GOAL_LOW, GOAL_HIGH, size=(n, 2))
        return [GoalTask2D(goal=(float(g[0]), float(g[1]))) for g in goals]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._pos = np.zeros(2)
        return self._pos.astype(np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (2,):
            raise ValueError(f"action must have shape (2,), got {action.shape}")
        self._pos = _move(self._pos, action)
        dist = float(_distance(self._pos, self._goal))
        reward = -dist
        info = {"reward_dist": reward, "distance": dist}
        return self._pos.astype(np.float32), reward, False, False, info

    @classmethod
    def make_batched(
        cls, num_envs: int, max_episode_steps: int | None = None
    ) -> BatchedNavigation2D:
        """The natively batched version (all points as one array)."""
        # `is None`, not `or`: a time limit of 0 must be rejected, not replaced.
        return BatchedNavigation2D(
            num_envs, cls.horizon if max_episode_steps is None else max_episode_steps
        )


class BatchedNavigation2D(BatchedTaskEnv):
    """``num_envs`` Navigation2D points stepped as one array.

    Gives exactly the observations, rewards and truncations of ``num_envs``
    :class:`Navigation2DEnv` instances (see :mod:`maml_rl.envs.batched`).
    """

    task_cls = GoalTask2D

    def __init__(self, num_envs: int, max_episode_steps: int = Navigation2DEnv.horizon) -> None:
        super().__init__(num_envs, max_episode_steps)
        self.single_observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.single_action_space = spaces.Box(-MAX_STEP, MAX_STEP, shape=(2,), dtype=np.float32)
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, self.num_envs
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self._pos = np.zeros((self.num_envs, 2))
        self.set_tasks([GoalTask2D(goal=(0.0, 0.0))] * self.num_envs)

    def _apply_tasks(self, tasks: list[Task]) -> None:
        self._goals = np.array([t.goal for t in tasks], dtype=np.float64)  # type: ignore[attr-defined]

    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        self._seeds(seed)  # validates the count; the start state is deterministic
        self._elapsed = 0
        self._pos = np.zeros((self.num_envs, 2))
        return self._pos.astype(np.float32), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = self._check_actions(actions)
        self._pos = _move(self._pos, actions)
        dist = _distance(self._pos, self._goals)
        rewards = -dist
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = self._time_limit()
        return self._pos.astype(np.float32), rewards, terminated, truncated, {"distance": dist}
