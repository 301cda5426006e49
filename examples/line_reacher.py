"""A complete task family in a module of your own: a point on a line, reaching a goal.

Train it from the command line without touching maml-rl (run from this folder, or put
it on ``PYTHONPATH``)::

    maml-rl envs --import line_reacher
    maml-rl train env.id=line_reacher:MyLab/LineReacher-v0 --num-batches 20
    maml-rl train env.id=line_reacher:MyLab/LineReacher-v0 --sampler process --workers 2

The id's ``line_reacher:`` prefix makes maml-rl import this module (in the trainer
and in every worker process) before it looks the family up; the run's ``config.yaml``
keeps it, so ``maml-rl train --resume RUN`` and ``maml-rl evaluate RUN`` work in a
new shell.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from maml_rl.tasks import Task, TaskFamily, register_family


@dataclasses.dataclass(frozen=True)
class LineGoal(Task):
    """A goal position on the line, in ``[-1, 1]``."""

    goal: float

    bounds: ClassVar = {"goal": (-1.0, 1.0)}


class LineReacherEnv(TaskFamily, gym.Env[np.ndarray, np.ndarray]):
    """A point on a line must reach a goal it cannot see.

    ## Observation space
    ``Box(-inf, inf, (1,), float32)``: the point's position.

    ## Action space
    ``Box(-1, 1, (1,), float32)``: the move, clipped to ``[-1, 1]`` and scaled by 0.1.

    ## Reward
    ``−|x − goal|`` after the move.

    ## Start state
    ``x = 0``.

    ## Episode end
    Never terminates; truncated after ``horizon = 20`` steps.

    ## Task distribution
    ``goal ~ U[-1, 1]``, drawn with the generator given to :meth:`sample_tasks`.

    ## Version history
    * v0: initial version.
    """

    task_cls = LineGoal
    horizon = 20
    task_distribution = "goal ~ U[-1, 1]"

    def __init__(self, task: LineGoal | dict[str, Any] | None = None) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._x = 0.0
        self.set_task(task if task is not None else LineGoal(goal=0.5))

    @classmethod
    def sample_tasks(cls, n: int, rng: np.random.Generator) -> list[Task]:
        cls._check_sample_args(n, rng)
        return [LineGoal(goal=float(g)) for g in rng.uniform(-1.0, 1.0, size=n)]

    def _apply_task(self, task: LineGoal) -> None:
        self._goal = task.goal

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._x = 0.0
        return np.array([self._x], np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._x += 0.1 * float(np.clip(np.asarray(action, np.float64)[0], -1.0, 1.0))
        distance = abs(self._x - self._goal)
        return np.array([self._x], np.float32), -distance, False, False, {"distance": distance}


register_family("MyLab/LineReacher-v0", LineReacherEnv)
