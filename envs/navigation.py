"""2D point navigation with a random goal (the MAML paper's 2D navigation task)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from maml_rl.tasks import Task, TaskFamily
from maml_rl.vector import BatchedTaskEnv

__all__ = ["BatchedNavigation2D", "GoalTask2D", "Navigation2DEnv"]

GOAL_LOW, GOAL_HIGH = -0.5, 0.5
MAX_STEP = 0.1  # largest displacement per coordinate and step
GOAL_TOLERANCE = 0.01  # the episode ends when |x - gx| and |y - gy| are both below this


@dataclasses.dataclass(frozen=True)
class GoalTask2D(Task):
    """A goal position in the plane."""

    goal: tuple[float, float]

    bounds: ClassVar = {"goal": (GOAL_LOW, GOAL_HIGH)}
    shapes: ClassVar = {"goal": 2}


def _move(pos: np.ndarray, action: np.ndarray) -> np.ndarray:
    return pos + MAX_STEP * np.clip(action, -1.0, 1.0)


def _at_goal(pos: np.ndarray, goal: np.ndarray) -> np.ndarray:
    d = np.abs(pos - goal)
    return (d[..., 0] < GOAL_TOLERANCE) & (d[..., 1] < GOAL_TOLERANCE)


def _distance(pos: np.ndarray, goal: np.ndarray) -> np.ndarray:
    # Written out (not np.linalg.norm) so the single and batched envs share bits.
    d = pos - goal
    return np.sqrt(d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1])


# -- rendering (NumPy only) ------------------------------------------------------------------

VIEW = 1.0  # the image shows [-VIEW, VIEW]²
_BACKGROUND = (255, 255, 255)
_GOAL_SQUARE = (236, 240, 246)  # where goals are drawn from
_AXES = (210, 210, 210)
_GOAL = (40, 160, 60)
_PATH = (60, 110, 220)
_POINT = (215, 50, 40)


def _to_pixels(xy: np.ndarray, width: int, height: int) -> np.ndarray:
    """World ``[..., 2]`` → pixel ``(column, row)`` floats (y up, origin in the middle)."""
    col = (xy[..., 0] + VIEW) / (2 * VIEW) * (width - 1)
    row = (VIEW - xy[..., 1]) / (2 * VIEW) * (height - 1)
    return np.stack([col, row], axis=-1)


def _disc(img: np.ndarray, center: np.ndarray, radius: float, color: tuple[int, ...]) -> None:
    h, w, _ = img.shape
    c, r = center
    r0, r1 = max(int(r - radius), 0), min(int(r + radius) + 2, h)
    c0, c1 = max(int(c - radius), 0), min(int(c + radius) + 2, w)
    if r0 >= r1 or c0 >= c1:
        return
    rows, cols = np.ogrid[r0:r1, c0:c1]
    inside = (rows - r) ** 2 + (cols - c) ** 2 <= radius**2
    img[r0:r1, c0:c1][inside] = color


def _polyline(img: np.ndarray, points: np.ndarray, color: tuple[int, ...]) -> None:
    """Segments between consecutive pixel points, 2 px wide (points sampled ≤ 0.5 px apart)."""
    h, w, _ = img.shape
    for a, b in itertools.pairwise(points):
        n = int(np.ceil(2 * np.abs(b - a).max())) + 1
        t = np.linspace(0.0, 1.0, n)[:, None]
        p = np.rint(a + t * (b - a)).astype(int)
        for dc, dr in ((0, 0), (1, 0), (0, 1), (1, 1)):
            c, r = p[:, 0] + dc, p[:, 1] + dr
            ok = (c >= 0) & (c < w) & (r >= 0) & (r < h)
            img[r[ok], c[ok]] = color


def draw_scene(goal: np.ndarray, path: np.ndarray, width: int, height: int) -> np.ndarray:
    """A ``[height, width, 3]`` uint8 picture of the goal, the path ``[n, 2]`` (its last
    point is the point's position) and the square goals are drawn from."""
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[...] = _BACKGROUND
    corners = np.array([[GOAL_LOW, GOAL_HIGH], [GOAL_HIGH, GOAL_LOW]])
    (c0, r0), (c1, r1) = np.rint(_to_pixels(corners, width, height)).astype(int)
    img[r0 : r1 + 1, c0 : c1 + 1] = _GOAL_SQUARE
    cx, cy = np.rint(_to_pixels(np.zeros(2), width, height)).astype(int)
    img[cy, :] = _AXES
    img[:, cx] = _AXES
    scale = min(width, height) / 256
    _disc(img, _to_pixels(np.asarray(goal), width, height), 6 * scale, _GOAL)
    pixels = _to_pixels(np.asarray(path, dtype=np.float64), width, height)
    _polyline(img, pixels, _PATH)
    _disc(img, pixels[-1], 4.5 * scale, _POINT)
    return img


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
    ``Box(-1, 1, (2,), float32)``: the displacement ``(dx, dy)`` in units of 0.1.
    Actions are clipped to ``[-1, 1]`` per coordinate before use, so a policy may
    output any real vector. (The original MAML code declares the env's actions in
    ``[-0.1, 0.1]`` and wraps it in rllab's ``normalize``, which maps ``[-1, 1]``
    onto that box and clips: the same dynamics as here.)

    ## Transition
    ``position ← position + 0.1 · clip(action, -1, 1)``: at most 0.1 per
    coordinate and step.

    ## Reward
    ``reward = −‖position − goal‖₂``, measured *after* the move (the original MAML
    code's choice; the paper's text says negative *squared* distance). ``info``
    holds ``reward_dist`` (the reward) and ``distance``.

    ## Start state
    The point starts at the origin ``(0, 0)``; the start is deterministic.

    ## Episode end
    Termination when the point is within 0.01 of the goal in both coordinates
    (``|x − gx| < 0.01`` and ``|y − gy| < 0.01``, after the move), as in the
    original MAML code and pytorch-maml-rl; the reward of that last step is still
    paid. Truncation after ``horizon = 100`` steps (the registered
    ``max_episode_steps``). A policy that walks straight to the goal and stops
    there scores about −1 to −2; one that stays at the origin about −38.

    ## Rendering
    ``render_mode="rgb_array"``: ``render()`` returns a ``[height, width, 3]`` uint8
    image (default 256 × 256) of the square ``[-1, 1]²``, drawn with NumPy alone: the
    task distribution's goal square shaded, the goal (green disc), the path of the
    episode so far (blue) and the point (red). Positions outside the square are not
    drawn. ``metadata["render_fps"]`` is 10.

    ## Task distribution
    ``goal ~ U[-0.5, 0.5]²`` (each coordinate uniform and independent), drawn
    with the generator given to :meth:`sample_tasks`. Task type
    :class:`GoalTask2D`; the default task (before ``set_task``) is the goal ``(0, 0)``.

    ## Version history
    * v0: initial version. Before the first release the action scale (``[-1, 1]``
      mapped onto steps of at most 0.1) and the termination at the goal were changed
      to the original MAML code's; with raw actions in ``[-0.1, 0.1]`` a unit-σ
      Gaussian policy was clipped almost always and had to collapse its σ to steer.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10}  # noqa: RUF012
    task_cls = GoalTask2D
    horizon = 100
    task_distribution = "goal ~ U[-0.5, 0.5]^2"

    def __init__(
        self,
        task: GoalTask2D | dict[str, Any] | None = None,
        render_mode: str | None = None,
        width: int = 256,
        height: int = 256,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"Navigation2D renders only render_mode='rgb_array' (or None), got {render_mode!r}"
            )
        if min(width, height) < 16:
            raise ValueError(f"width and height must be ≥ 16 pixels, got {width} × {height}")
        self.render_mode = render_mode
        self.width, self.height = int(width), int(height)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._pos = np.zeros(2)
        self._path = [self._pos.copy()]
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
        self._path = [self._pos.copy()]
        return self._pos.astype(np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (2,):
            raise ValueError(f"action must have shape (2,), got {action.shape}")
        self._pos = _move(self._pos, action)
        if self.render_mode is not None:
            self._path.append(self._pos.copy())
        dist = float(_distance(self._pos, self._goal))
        reward = -dist
        terminated = bool(_at_goal(self._pos, self._goal))
        info = {"reward_dist": reward, "distance": dist}
        return self._pos.astype(np.float32), reward, terminated, False, info

    def render(self) -> np.ndarray | None:
        """The scene as a ``[height, width, 3]`` uint8 image (``render_mode="rgb_array"``)."""
        if self.render_mode is None:
            gym.logger.warn("render() needs render_mode='rgb_array' at construction")
            return None
        return draw_scene(self._goal, np.asarray(self._path), self.width, self.height)

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
    :class:`Navigation2DEnv` instances (see :mod:`maml_rl.vector`).
    """

    task_cls = GoalTask2D

    def __init__(self, num_envs: int, max_episode_steps: int = Navigation2DEnv.horizon) -> None:
        super().__init__(num_envs, max_episode_steps)
        self.single_observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.single_action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
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
        terminated = _at_goal(self._pos, self._goals)
        truncated = self._time_limit()
        return self._pos.astype(np.float32), rewards, terminated, truncated, {"distance": dist}
