"""Ant task families: target velocity, direction, goal position (MAML paper, §5.3)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv

from maml_rl.envs.locomotion import (
    RESET_NOISE_SCALE,
    DirectionFamily,
    MujocoTaskFamily,
    Transition,
    VelocityFamily,
    VelocityTask,
    sum_squares,
)
from maml_rl.tasks import Task

__all__ = ["AntDirEnv", "AntGoalEnv", "AntGoalTask", "AntVelEnv", "AntVelTask"]

# Reward weights of the original MAML code (rllab's ant task envs).
CTRL_COST_WEIGHT = 0.005
CONTACT_COST_WEIGHT = 5e-4
#: Gymnasium's Ant-v5 default, ProMP's and learn2learn's; the original MAML code paid 0.05,
#: with which a policy here learns to end its episodes early (docs/results.md, AntVel).
SURVIVE_REWARD = 1.0
#: The task terms' constant per-step offsets of the original code ("make it happy, not
#: suicidal"): AntVel's 1.0, AntGoal's 4.0.
VELOCITY_REWARD_OFFSET = 1.0
GOAL_REWARD_OFFSET = 4.0
CONTACT_FORCE_RANGE = (-1.0, 1.0)
HEALTHY_Z_RANGE = (0.2, 1.0)
#: v5's ``main_body``: the torso, whose frame position gives the velocity.
TORSO = 1

VELOCITY_LOW, VELOCITY_HIGH = 0.0, 3.0
GOAL_LOW, GOAL_HIGH = -3.0, 3.0


@dataclasses.dataclass(frozen=True)
class AntVelTask(VelocityTask):
    """An AntVel task: the target forward velocity in m/s, in ``[0, 3]``."""

    bounds: ClassVar = {"velocity": (VELOCITY_LOW, VELOCITY_HIGH)}


@dataclasses.dataclass(frozen=True)
class AntGoalTask(Task):
    """An AntGoal task: the goal position ``(x, y)`` in m, each in ``[-3, 3]``."""

    goal: tuple[float, float]

    bounds: ClassVar = {"goal": (GOAL_LOW, GOAL_HIGH)}
    shapes: ClassVar = {"goal": 2}


_COMMON_SPEC = """
    ## Observation space
    Gymnasium v5's default, ``Box(-inf, inf, (105,), float64)``: ``qpos[2:]``,
    ``qvel`` and the clipped external contact wrenches of bodies 1–13 (the
    torso's x, y position is excluded).

    | index | observation | unit |
    |---|---|---|
    | 0 | z of the torso | m |
    | 1–4 | torso orientation quaternion (w, x, y, z) | — |
    | 5–12 | hip_1, ankle_1, hip_2, ankle_2, hip_3, ankle_3, hip_4, ankle_4 angles | rad |
    | 13–15 | torso linear velocity (x, y, z) | m/s |
    | 16–18 | torso angular velocity | rad/s |
    | 19–26 | angular velocities of the eight joints above | rad/s |
    | 27–104 | clipped contact wrenches of bodies 1–13 (see below) | N·m, N |

    The contact part is ``clip(cfrc_ext[1:], -1, 1)`` flattened: for the torso,
    then per leg the upper leg, aux link and foot, six values each (torque xyz,
    then force xyz, about the body's centre of mass).

    ## Action space
    ``Box(-1, 1, (8,), float32)``: torques on hip_4, ankle_4, hip_1, ankle_1,
    hip_2, ankle_2, hip_3, ankle_3 (gear 150 N·m per unit). MuJoCo clamps the
    controls to ``[-1, 1]`` for the dynamics; the control cost uses the action
    as given (no rescaling: some libraries scale actions by 10 first).

    ## Reward terms shared by the Ant families
    * ``ctrl = 0.005·‖a‖²`` (``info["reward_ctrl"] = −ctrl``);
    * ``contact = 0.0005·‖clip(cfrc_ext, −1, 1)‖²`` over all bodies
      (``info["reward_contact"] = −contact``);
    * ``survive = 1.0`` while healthy, 0 on the step that ends the episode
      (``info["reward_survive"]``): Gymnasium's Ant-v5 default and ProMP's and
      learn2learn's bonus. The original MAML code paid 0.05; with it staying alive
      is worth less than the task term costs on most tasks, and since Ant-v5's healthy
      range ends an episode as soon as the torso bounces above 1 m, a policy learns
      to end its episodes early instead of to walk (measured on AntVel: episodes
      shortened from 55 to 37 steps over 254 meta-iterations and adaptation gained
      nothing). Returns are therefore not comparable with the MAML paper's plots.

    ``v_x, v_y`` are v5's ``x_velocity, y_velocity``: the displacement of the
    torso frame (``xpos`` of body 1) over the step divided by ``dt = 0.05`` s.

    ## Start state
    Gymnasium v5's: ``qpos = qpos0 + U[-0.1, 0.1]^15`` (``qpos0``: torso at
    ``(0, 0, 0.75)``, upright, joints at 0) and ``qvel = 0.1·N(0, 1)^14``, drawn
    from the env's ``np_random`` (uniform first, then normal).

    ## Episode end
    Terminates when the state is unhealthy (v5's check): any of ``qpos``,
    ``qvel`` not finite, or the torso's z outside ``[0.2, 1.0]`` m. Truncated
    after ``horizon = 200`` steps (the MAML paper; several libraries use 100).
"""


class _AntFamily(MujocoTaskFamily, AntEnv):
    """Common part of the Ant families (not registered)."""

    horizon = 200
    uses_contact_forces = True
    position_from_xpos = True
    #: ``info`` key of the task-specific reward term.
    _task_term: ClassVar[str]

    v5_kwargs: ClassVar[Mapping[str, Any]] = {
        "ctrl_cost_weight": CTRL_COST_WEIGHT,
        "contact_cost_weight": CONTACT_COST_WEIGHT,
        "healthy_reward": SURVIVE_REWARD,
        "main_body": TORSO,
        "healthy_z_range": HEALTHY_Z_RANGE,
        "contact_force_range": CONTACT_FORCE_RANGE,
        "reset_noise_scale": RESET_NOISE_SCALE,
        "camera_name": "track",
    }

    @classmethod
    def _position(
        cls, qpos: np.ndarray, xpos: np.ndarray | None, fields: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        assert xpos is not None  # position_from_xpos is set
        return xpos[:, TORSO, :2]

    @classmethod
    def _observe(
        cls,
        qpos: np.ndarray,
        qvel: np.ndarray,
        cfrc_ext: np.ndarray | None,
        fields: Mapping[str, np.ndarray],
    ) -> np.ndarray:
        assert cfrc_ext is not None  # uses_contact_forces is set
        contact = np.clip(cfrc_ext[:, 1:], *CONTACT_FORCE_RANGE).reshape(len(qpos), -1)
        return np.concatenate([qpos[:, 2:], qvel, contact], axis=1)

    @classmethod
    def _task_reward(cls, params: np.ndarray, tr: Transition, velocity: np.ndarray) -> np.ndarray:
        """The task-specific reward term ``[K]`` (``velocity``: ``[K, 2]`` m/s)."""
        raise NotImplementedError

    @classmethod
    def _evaluate(
        cls, params: np.ndarray, tr: Transition
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        assert tr.cfrc_ext is not None  # uses_contact_forces is set
        k = len(tr.qpos)
        velocity = (tr.pos_after - tr.pos_before) / tr.dt
        ctrl_cost = CTRL_COST_WEIGHT * sum_squares(tr.action)
        contact = np.clip(tr.cfrc_ext, *CONTACT_FORCE_RANGE).reshape(k, -1)
        contact_cost = CONTACT_COST_WEIGHT * sum_squares(contact)
        z = tr.qpos[:, 2]
        healthy = (
            np.isfinite(tr.qpos).all(axis=1)
            & np.isfinite(tr.qvel).all(axis=1)
            & (z >= HEALTHY_Z_RANGE[0])
            & (z <= HEALTHY_Z_RANGE[1])
        )
        survive = np.where(healthy, SURVIVE_REWARD, 0.0)
        task_reward = cls._task_reward(params, tr, velocity)
        reward = task_reward - ctrl_cost - contact_cost + survive
        info = {
            "x_position": tr.qpos[:, 0].copy(),
            "y_position": tr.qpos[:, 1].copy(),
            "x_velocity": velocity[:, 0],
            "y_velocity": velocity[:, 1],
            cls._task_term: task_reward,
            "reward_ctrl": -ctrl_cost,
            "reward_contact": -contact_cost,
            "reward_survive": survive,
        }
        return reward, ~healthy, info


class AntVelEnv(VelocityFamily, _AntFamily):
    __doc__ = (
        """Ant that must walk forward at a target velocity it cannot observe.

    Registered as ``MetaRL/AntVel-v0``: Gymnasium's ``Ant-v5`` (same model,
    observation, start state, physics and termination) with the MAML paper's
    goal-velocity reward (Finn et al., 2017, §5.3).

    ## Reward
    ``reward = 1.0 − |v_x − v_goal| − ctrl − contact + survive`` (terms below);
    ``info["reward_velocity"] = 1.0 − |v_x − v_goal|``. The offset 1.0 is the original
    MAML code's: without it every step costs and, since an unhealthy state ends the
    episode, the policy learns to end its episodes early instead of to walk (seen
    here: 56 → 45 steps over 23 meta-iterations while the return "improved").
    """
        + _COMMON_SPEC
        + """
    ## Task distribution
    One parameter, the target velocity ``velocity ~ U[0, 3]`` m/s, drawn with the
    generator given to :meth:`sample_tasks`. Task type :class:`AntVelTask`
    (valid range ``[0, 3]``); the default task (before ``set_task``) is
    ``velocity = 1``.

    ## Arguments
    ``task`` (initial task), ``render_mode``, ``width``, ``height`` (rendering, from the
    model's ``track`` camera, which follows the body from the side).
    Reward weights are fixed: the family's version pins them.

    ## Version history
    * v0: initial version (Gymnasium Ant-v5, mujoco ≥ 3). The offset 1.0 and the
      survive bonus 1.0 (was 0.05) date from 2026-12-06, before any Ant result was
      published.
    """
    )

    task_cls = AntVelTask
    task_distribution = "velocity ~ U[0, 3] m/s"
    _task_term = "reward_velocity"

    @classmethod
    def _task_reward(cls, params: np.ndarray, tr: Transition, velocity: np.ndarray) -> np.ndarray:
        return VELOCITY_REWARD_OFFSET - np.abs(velocity[:, 0] - params[:, 0])


class AntDirEnv(DirectionFamily, _AntFamily):
    __doc__ = (
        """Ant that must walk forward or backward along x, without being told which.

    Registered as ``MetaRL/AntDir-v0``: Gymnasium's ``Ant-v5`` with the MAML
    paper's forward/backward reward (Finn et al., 2017, §5.3).

    ## Reward
    ``reward = d·v_x − ctrl − contact + survive`` (terms below), ``d`` the task's
    direction; ``info["reward_forward"] = d·v_x``.
    """
        + _COMMON_SPEC
        + """
    ## Task distribution
    One parameter, the direction ``direction ∈ {−1, +1}``, each with probability
    0.5, drawn with the generator given to :meth:`sample_tasks`. Task type
    :class:`~maml_rl.envs.locomotion.DirectionTask`; the default task (before
    ``set_task``) is ``direction = +1``. This is the original MAML code's
    choice; ProMP and learn2learn draw a random 2-D unit direction instead.

    ## Arguments
    ``task`` (initial task), ``render_mode``, ``width``, ``height`` (rendering, from the
    model's ``track`` camera, which follows the body from the side).

    ## Version history
    * v0: initial version (Gymnasium Ant-v5, mujoco ≥ 3). The survive bonus is 1.0
      (was 0.05) since 2026-12-06, before any Ant result was published.
    """
    )

    _task_term = "reward_forward"

    @classmethod
    def _task_reward(cls, params: np.ndarray, tr: Transition, velocity: np.ndarray) -> np.ndarray:
        return params[:, 0] * velocity[:, 0]


class AntGoalEnv(_AntFamily):
    __doc__ = (
        """Ant that must walk to a goal position it cannot observe.

    Registered as ``MetaRL/AntGoal-v0``: Gymnasium's ``Ant-v5`` with the goal
    reward of the original MAML code's ant goal task.

    ## Reward
    ``reward = −‖xy − goal‖₁ + 4.0 − ctrl − contact + survive`` (terms below),
    where ``xy = qpos[0:2]`` is the torso's position after the step (v5's
    ``info["x_position"], info["y_position"]``); ``info["reward_goal"] =
    −‖xy − goal‖₁ + 4.0`` (the offset 4.0 is the original code's).
    """
        + _COMMON_SPEC
        + """
    ## Task distribution
    One parameter, the goal ``goal ~ U[-3, 3]²`` m (each coordinate uniform and
    independent), drawn with the generator given to :meth:`sample_tasks`. Task
    type :class:`AntGoalTask` (valid range ``[-3, 3]`` per coordinate); the
    default task (before ``set_task``) is ``goal = (0, 0)``.

    ## Arguments
    ``task`` (initial task), ``render_mode``, ``width``, ``height`` (rendering, from the
    model's ``track`` camera, which follows the body from the side).

    ## Version history
    * v0: initial version (Gymnasium Ant-v5, mujoco ≥ 3). The survive bonus is 1.0
      (was 0.05) since 2026-12-06, before any Ant result was published.
    """
    )

    task_cls = AntGoalTask
    task_distribution = "goal ~ U[-3, 3]^2 m"
    _task_term = "reward_goal"

    @classmethod
    def default_task(cls) -> Task:
        return AntGoalTask(goal=(0.0, 0.0))

    @classmethod
    def sample_tasks(cls, n: int, rng: np.random.Generator) -> list[Task]:
        cls._check_sample_args(n, rng)
        goals = rng.uniform(GOAL_LOW, GOAL_HIGH, size=(n, 2))
        return [AntGoalTask(goal=(float(g[0]), float(g[1]))) for g in goals]

    @classmethod
    def _task_params(cls, tasks: Sequence[Task]) -> np.ndarray:
        return np.array([t.goal for t in tasks], dtype=np.float64)  # type: ignore[attr-defined]

    @classmethod
    def _task_reward(cls, params: np.ndarray, tr: Transition, velocity: np.ndarray) -> np.ndarray:
        distance = np.abs(tr.qpos[:, 0] - params[:, 0]) + np.abs(tr.qpos[:, 1] - params[:, 1])
        return GOAL_REWARD_OFFSET - distance
