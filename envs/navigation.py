"""2D point navigation with a random goal (the MAML paper's 2D navigation task)."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from maml_rl.tasks import Task, TaskFamily
from maml_rl.vector import BatchedTaskEnv

__all__ = [
    "BatchedNavigation2D",
    "BatchedNavigation2DSparse",
    "GoalTask2D",
    "HalfCircleGoalTask",
    "Navigation2DEnv",
    "Navigation2DSparseEnv",
]

GOAL_LOW, GOAL_HIGH = -0.5, 0.5
MAX_STEP = 0.1  # largest displacement per coordinate and step
GOAL_TOLERANCE = 0.01  # the episode ends when |x - gx| and |y - gy| are both below this
SPARSE_RADIUS = 0.2  # Navigation2DSparse pays a reward only this close to the goal


@dataclasses.dataclass(frozen=True)
class GoalTask2D(Task):
    """A goal position in the plane."""

    goal: tuple[float, float]

    bounds: ClassVar = {"goal": (GOAL_LOW, GOAL_HIGH)}
    shapes: ClassVar = {"goal": 2}


@dataclasses.dataclass(frozen=True)
class HalfCircleGoalTask(Task):
    """A goal on the upper unit half-circle: ``(cos angle, sin angle)``, ``angle`` in
    ``[0, π]`` rad."""

    angle: float

    bounds: ClassVar = {"angle": (0.0, math.pi)}


def _half_circle_goals(tasks: Sequence[Task]) -> np.ndarray:
    # math.cos per task: the same bits for the single and the batched env.
    angles = [t.angle for t in tasks]  # type: ignore[attr-defined]
    return np.array([[math.cos(a), math.sin(a)] for a in angles], dtype=np.float64)


def _sparse_reward(dist: np.ndarray) -> np.ndarray:
    # PEARL's sparse point robot: 1 − distance inside the radius, 0 outside.
    return np.where(dist <= SPARSE_RADIUS, 1.0 - dist, 0.0)


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
    task_cls: ClassVar[type[Task]] = GoalTask2D
    horizon = 100
    task_distribution = "goal ~ U[-0.5, 0.5]^2"

    def __init__(
        self,
        task: Task | dict[str, Any] | None = None,
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
        self.set_task(task if task is not None else self.default_task())

    @classmethod
    def default_task(cls) -> Task:
        """The task used before :meth:`set_task` is called."""
        return GoalTask2D(goal=(0.0, 0.0))

    def _apply_task(self, task: Any) -> None:
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

    task_cls: type[Task] = GoalTask2D

    def __init__(self, num_envs: int, max_episode_steps: int = Navigation2DEnv.horizon) -> None:
        super().__init__(num_envs, max_episode_steps)
        self.single_observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.single_action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, self.num_envs
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self._pos = np.zeros((self.num_envs, 2))
        self.set_tasks([self._default_task()] * self.num_envs)

    def _default_task(self) -> Task:
        return Navigation2DEnv.default_task()

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


class Navigation2DSparseEnv(Navigation2DEnv):
    """A point robot must reach a goal on the unit half-circle; reward only near it.

    Registered as ``MetaRL/Navigation2DSparse-v0``: the sparse-reward point robot of
    PEARL (Rakelly et al., 2019) with this suite's Navigation2D dynamics. The agent
    observes only its position, and is paid only within 0.2 of the goal, so it must
    explore to find the goal at all before it can adapt to it.

    ## Observation space
    ``Box(-inf, inf, (2,), float32)``: the point's ``(x, y)``, as Navigation2D.

    ## Action space
    ``Box(-1, 1, (2,), float32)``, clipped to ``[-1, 1]`` and scaled by 0.1: as
    Navigation2D (at most 0.1 per coordinate and step).

    ## Reward
    ``d = ‖position − goal‖₂`` after the move; ``reward = 1 − d`` if ``d ≤ 0.2``, else
    ``0`` (PEARL's sparse reward: positive inside the goal radius, so in
    ``[0.8, 1]``). ``info`` holds ``reward_dense`` (``−d``, Navigation2D's dense
    reward), ``reward_sparse`` (the reward) and ``distance``.

    ## Start state
    The origin ``(0, 0)``, deterministic.

    ## Episode end
    Never terminates (staying at the goal keeps paying; Navigation2D's termination
    at the goal would cut the reward short). Truncated after ``horizon = 50`` steps.
    Why 50: a goal is at distance 1, so the goal region (0.8 away) takes at least 6
    steps to enter, and sweeping the whole half-circle (arc length π, ≤ 0.14 per step)
    another ~25–31; with 50 steps one exploratory episode can reach the circle and
    cover every goal on it, and an adapted policy still spends most of the episode in
    the goal region. PEARL's 20 leaves an episode no time to search; Navigation2D's
    100 doubles the cost of an iteration for no extra information.

    ## Task distribution
    ``angle ~ U[0, π]`` rad, the goal being ``(cos angle, sin angle)`` (the upper unit
    half-circle), drawn with the generator given to :meth:`sample_tasks`. Task type
    :class:`HalfCircleGoalTask`; the default task (before ``set_task``) is
    ``angle = π/2`` (goal ``(0, 1)``).

    ## Version history
    * v0: initial version.
    """

    task_cls = HalfCircleGoalTask
    horizon = 50
    task_distribution = "goal (cos a, sin a), a ~ U[0, π]; reward within 0.2"

    @classmethod
    def default_task(cls) -> Task:
        return HalfCircleGoalTask(angle=math.pi / 2)

    def _apply_task(self, task: Any) -> None:
        self._goal = _half_circle_goals([task])[0]

    @classmethod
    def sample_tasks(cls, n: int, rng: np.random.Generator) -> list[Task]:
        cls._check_sample_args(n, rng)
        return [HalfCircleGoalTask(angle=float(a)) for a in rng.uniform(0.0, math.pi, size=n)]

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (2,):
            raise ValueError(f"action must have shape (2,), got {action.shape}")
        self._pos = _move(self._pos, action)
        dist = _distance(self._pos, self._goal)
        reward = float(_sparse_reward(dist))
        info = {"reward_dense": -float(dist), "reward_sparse": reward, "distance": float(dist)}
        return self._pos.astype(np.float32), reward, False, False, info

    @classmethod
    def make_batched(
        cls, num_envs: int, max_episode_steps: int | None = None
    ) -> BatchedNavigation2DSparse:
        """The natively batched version (all points as one array)."""
        return BatchedNavigation2DSparse(
            num_envs, cls.horizon if max_episode_steps is None else max_episode_steps
        )


class BatchedNavigation2DSparse(BatchedNavigation2D):
    """``num_envs`` :class:`Navigation2DSparseEnv` points stepped as one array."""

    task_cls = HalfCircleGoalTask

    def __init__(
        self, num_envs: int, max_episode_steps: int = Navigation2DSparseEnv.horizon
    ) -> None:
        super().__init__(num_envs, max_episode_steps)

    def _default_task(self) -> Task:
        return Navigation2DSparseEnv.default_task()

    def _apply_tasks(self, tasks: list[Task]) -> None:
        self._goals = _half_circle_goals(tasks)

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = self._check_actions(actions)
        self._pos = _move(self._pos, actions)
        dist = _distance(self._pos, self._goals)
        rewards = _sparse_reward(dist)
        terminated = np.zeros(self.num_envs, dtype=bool)
        info = {"reward_dense": -dist, "reward_sparse": rewards, "distance": dist}
        return self._pos.astype(np.float32), rewards, terminated, self._time_limit(), info
