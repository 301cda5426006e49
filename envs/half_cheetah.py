"""HalfCheetah task families: a target velocity or a direction (MAML paper, §5.3)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from maml_rl.envs.locomotion import (
    RESET_NOISE_SCALE,
    DirectionFamily,
    MujocoTaskFamily,
    Transition,
    VelocityFamily,
    VelocityTask,
    sum_squares,
)

__all__ = [
    "HalfCheetahDirEnv",
    "HalfCheetahVelEnv",
    "HalfCheetahVelSparseEnv",
    "HalfCheetahVelTask",
]

#: Weight of the control cost ‖a‖² (the original MAML code's value).
CTRL_COST_WEIGHT = 0.05
VELOCITY_LOW, VELOCITY_HIGH = 0.0, 2.0
#: HalfCheetahVelSparse pays a reward only while ``|v_x − v_goal|`` is below this.
SPARSE_VELOCITY_BAND = 0.5


@dataclasses.dataclass(frozen=True)
class HalfCheetahVelTask(VelocityTask):
    """A HalfCheetahVel task: the target forward velocity in m/s, in ``[0, 2]``."""

    bounds: ClassVar = {"velocity": (VELOCITY_LOW, VELOCITY_HIGH)}


_COMMON_SPEC = """
    ## Observation space
    Gymnasium v5's default, ``Box(-inf, inf, (17,), float64)``: ``qpos[1:]`` then
    ``qvel`` (the torso's x position is excluded, so the policy cannot read
    its progress).

    | index | observation | unit |
    |---|---|---|
    | 0 | z of the torso (``rootz``) | m |
    | 1 | angle of the torso (``rooty``) | rad |
    | 2–4 | back thigh, shin, foot angles | rad |
    | 5–7 | front thigh, shin, foot angles | rad |
    | 8 | x velocity of the torso (``rootx``) | m/s |
    | 9 | z velocity of the torso | m/s |
    | 10 | angular velocity of the torso | rad/s |
    | 11–16 | angular velocities of the six joints above | rad/s |

    ## Action space
    ``Box(-1, 1, (6,), float32)``: torques on back thigh, shin, foot, front
    thigh, shin, foot (gears 120, 90, 60, 120, 60, 30 N·m per unit). MuJoCo
    clamps the controls to ``[-1, 1]`` for the dynamics; the control cost uses
    the action as given.

    ## Start state
    Gymnasium v5's: ``qpos = 0 + U[-0.1, 0.1]^9`` and ``qvel = 0 + 0.1·N(0, 1)^9``,
    drawn from the env's ``np_random`` (uniform first, then normal).

    ## Episode end
    Never terminates (``terminated`` is always ``False``). Truncated after
    ``horizon = 200`` steps (10 s at ``dt = 0.05`` s; ``frame_skip = 5`` MuJoCo
    steps of 0.01 s), the MAML paper's horizon; several libraries use 100 —
    returns are only comparable at the same horizon.
"""


class _HalfCheetahFamily(MujocoTaskFamily, HalfCheetahEnv):
    """Common part of the HalfCheetah families (not registered)."""

    horizon = 200

    v5_kwargs: ClassVar[Mapping[str, Any]] = {
        "ctrl_cost_weight": CTRL_COST_WEIGHT,
        "reset_noise_scale": RESET_NOISE_SCALE,
        "camera_name": "track",
    }

    @classmethod
    def _position(
        cls, qpos: np.ndarray, xpos: np.ndarray | None, fields: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        # v5 measures the forward velocity on the rootx slide joint.
        return qpos[:, :1]

    @classmethod
    def _observe(
        cls,
        qpos: np.ndarray,
        qvel: np.ndarray,
        cfrc_ext: np.ndarray | None,
        fields: Mapping[str, np.ndarray],
    ) -> np.ndarray:
        return np.concatenate([qpos[:, 1:], qvel], axis=1)

    @staticmethod
    def _velocity_and_ctrl(tr: Transition) -> tuple[np.ndarray, np.ndarray]:
        x_velocity = (tr.pos_after[:, 0] - tr.pos_before[:, 0]) / tr.dt
        return x_velocity, CTRL_COST_WEIGHT * sum_squares(tr.action)


class HalfCheetahVelEnv(VelocityFamily, _HalfCheetahFamily):
    __doc__ = (
        """HalfCheetah that must run at a target forward velocity it cannot observe.

    Registered as ``MetaRL/HalfCheetahVel-v0``: Gymnasium's ``HalfCheetah-v5``
    (same model, observation, start state and physics) with the MAML paper's
    goal-velocity reward (Finn et al., 2017, §5.3).
    """
        + _COMMON_SPEC
        + """
    ## Reward
    ``reward = −|v_x − v_goal| − 0.05·‖a‖²`` where
    ``v_x = (x_after − x_before) / dt`` is the torso's (``rootx``) forward
    velocity over the step (as v5's ``x_velocity``) and ``a`` the action.
    ``info`` holds ``reward_velocity`` (``−|v_x − v_goal|``), ``reward_ctrl``
    (``−0.05·‖a‖²``), ``x_position`` and ``x_velocity``.

    ## Task distribution
    One parameter, the target velocity ``velocity ~ U[0, 2]`` m/s, drawn with
    the generator given to :meth:`sample_tasks`. Task type
    :class:`HalfCheetahVelTask` (valid range ``[0, 2]``); the default task
    (before ``set_task``) is ``velocity = 1``. The range follows the original
    MAML code and the paper; ProMP uses ``U[0, 3]``.

    ## Arguments
    ``task`` (initial task), ``render_mode``, ``width``, ``height`` (rendering, from the
    model's ``track`` camera, which follows the body from the side).
    Reward weights are fixed: the family's version pins them.

    ## Version history
    * v0: initial version (Gymnasium HalfCheetah-v5, mujoco ≥ 3).
    """
    )

    task_cls = HalfCheetahVelTask
    task_distribution = "velocity ~ U[0, 2] m/s"

    @classmethod
    def _evaluate(
        cls, params: np.ndarray, tr: Transition
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        x_velocity, ctrl_cost = cls._velocity_and_ctrl(tr)
        velocity_reward = -np.abs(x_velocity - params[:, 0])
        reward = velocity_reward - ctrl_cost
        info = {
            "x_position": tr.qpos[:, 0].copy(),
            "x_velocity": x_velocity,
            "reward_velocity": velocity_reward,
            "reward_ctrl": -ctrl_cost,
        }
        return reward, np.zeros(len(reward), dtype=bool), info


class HalfCheetahDirEnv(DirectionFamily, _HalfCheetahFamily):
    __doc__ = (
        """HalfCheetah that must run forward or backward, without being told which.

    Registered as ``MetaRL/HalfCheetahDir-v0``: Gymnasium's ``HalfCheetah-v5``
    with the MAML paper's forward/backward reward (Finn et al., 2017, §5.3;
    published returns in App. C.2, Table 5).
    """
        + _COMMON_SPEC
        + """
    ## Reward
    ``reward = d·v_x − 0.05·‖a‖²`` with ``d ∈ {−1, +1}`` the task's direction,
    ``v_x = (x_after − x_before) / dt`` the torso's (``rootx``) forward velocity
    over the step and ``a`` the action. ``info`` holds ``reward_forward``
    (``d·v_x``), ``reward_ctrl`` (``−0.05·‖a‖²``), ``x_position`` and ``x_velocity``.

    ## Task distribution
    One parameter, the direction ``direction ∈ {−1, +1}``, each with probability
    0.5, drawn with the generator given to :meth:`sample_tasks`. Task type
    :class:`~maml_rl.envs.locomotion.DirectionTask`; the default task (before
    ``set_task``) is ``direction = +1``.

    ## Arguments
    ``task`` (initial task), ``render_mode``, ``width``, ``height`` (rendering, from the
    model's ``track`` camera, which follows the body from the side).

    ## Version history
    * v0: initial version (Gymnasium HalfCheetah-v5, mujoco ≥ 3).
    """
    )

    @classmethod
    def _evaluate(
        cls, params: np.ndarray, tr: Transition
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        x_velocity, ctrl_cost = cls._velocity_and_ctrl(tr)
        forward_reward = params[:, 0] * x_velocity
        reward = forward_reward - ctrl_cost
        info = {
            "x_position": tr.qpos[:, 0].copy(),
            "x_velocity": x_velocity,
            "reward_forward": forward_reward,
            "reward_ctrl": -ctrl_cost,
        }
        return reward, np.zeros(len(reward), dtype=bool), info


class HalfCheetahVelSparseEnv(VelocityFamily, _HalfCheetahFamily):
    __doc__ = (
        """HalfCheetah that must run at a target velocity, paid only near it.

    Registered as ``MetaRL/HalfCheetahVelSparse-v0``: ``MetaRL/HalfCheetahVel-v0``
    (same model, observation, start state, physics and task distribution) whose
    reward is zero unless the forward velocity is within 0.5 m/s of the target — the
    sparse cheetah-velocity task of the meta-RL exploration literature.
    """
        + _COMMON_SPEC
        + """
    ## Reward
    ``gap = |v_x − v_goal|`` with ``v_x = (x_after − x_before) / dt`` the torso's
    (``rootx``) forward velocity over the step; ``reward = 1 − gap`` if
    ``gap < 0.5``, else ``0`` (positive inside the band, so in ``(0.5, 1]``; the same
    shaping as ``MetaRL/Navigation2DSparse-v0``'s goal radius). There is no control
    cost in the reward (it would pay a signal everywhere). ``info`` holds
    ``reward_dense`` (HalfCheetahVel's reward ``−gap − 0.05·‖a‖²``),
    ``reward_sparse`` (the reward), ``reward_velocity`` (``−gap``), ``reward_ctrl``
    (``−0.05·‖a‖²``), ``x_position`` and ``x_velocity``.

    ## Task distribution
    As HalfCheetahVel: the target velocity ``velocity ~ U[0, 2]`` m/s, drawn with the
    generator given to :meth:`sample_tasks`. Task type :class:`HalfCheetahVelTask`;
    the default task is ``velocity = 1``. A cheetah at rest is inside the band of the
    targets below 0.5 m/s only.

    ## Arguments
    ``task`` (initial task), ``render_mode``, ``width``, ``height`` (rendering).

    ## Version history
    * v0: initial version (Gymnasium HalfCheetah-v5, mujoco ≥ 3).
    """
    )

    task_cls = HalfCheetahVelTask
    task_distribution = "velocity ~ U[0, 2] m/s; reward within 0.5 m/s"

    @classmethod
    def _evaluate(
        cls, params: np.ndarray, tr: Transition
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        x_velocity, ctrl_cost = cls._velocity_and_ctrl(tr)
        gap = np.abs(x_velocity - params[:, 0])
        reward = np.where(gap < SPARSE_VELOCITY_BAND, 1.0 - gap, 0.0)
        info = {
            "x_position": tr.qpos[:, 0].copy(),
            "x_velocity": x_velocity,
            "reward_dense": -gap - ctrl_cost,
            "reward_sparse": reward,
            "reward_velocity": -gap,
            "reward_ctrl": -ctrl_cost,
        }
        return reward, np.zeros(len(reward), dtype=bool), info
