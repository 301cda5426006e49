"""Humanoid task families: walk in a direction of the plane, or forward/backward."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import gymnasium.envs.mujoco
import mujoco
import numpy as np
from gymnasium.envs.mujoco.humanoid_v5 import HumanoidEnv

from maml_rl.envs.locomotion import (
    DirectionFamily,
    MujocoTaskFamily,
    Transition,
    sum_squares,
)
from maml_rl.tasks import Task

__all__ = ["HumanoidDirEnv", "HumanoidFwdBackEnv", "PlanarDirectionTask"]

# Gymnasium Humanoid-v5's default weights and ranges.
FORWARD_REWARD_WEIGHT = 1.25
CTRL_COST_WEIGHT = 0.1
CONTACT_COST_WEIGHT = 5e-7
CONTACT_COST_MAX = 10.0
HEALTHY_REWARD = 5.0
HEALTHY_Z_RANGE = (1.0, 2.0)
RESET_NOISE = 1e-2
TWO_PI = 2.0 * math.pi


@dataclasses.dataclass(frozen=True)
class PlanarDirectionTask(Task):
    """A direction of motion in the plane: ``angle`` (rad) from the x axis, in ``[0, 2π]``."""

    angle: float

    bounds: ClassVar = {"angle": (0.0, TWO_PI)}


@functools.cache
def _body_mass() -> np.ndarray:
    """The bodies' masses of Gymnasium's ``humanoid.xml`` (constant: not a task)."""
    path = Path(gymnasium.envs.mujoco.__file__).parent / "assets" / "humanoid.xml"
    return mujoco.MjModel.from_xml_path(str(path)).body_mass.copy()


_COMMON_SPEC = """
    ## Observation space
    ``Box(-inf, inf, (45,), float64)``: ``qpos[2:]`` (22: torso z and orientation
    quaternion, 17 joint angles) and ``qvel`` (23) — Humanoid-v5 with its four
    ``include_*_in_observation`` flags off. v5's default adds 303 dimensions of
    ``cinert``, ``cvel``, ``qfrc_actuator`` and ``cfrc_ext``, unnormalised (actuator
    forces ≈ 20 on average, contact wrenches up to thousands): with them one α = 0.1
    policy-gradient step lowered the return (see ``docs/results.md``). The torso's x, y
    position is excluded.

    ## Action space
    ``Box(-0.4, 0.4, (17,), float32)``: joint torques (abdomen, hips, knees,
    shoulders, elbows). MuJoCo clamps the controls for the dynamics; the control cost
    uses the action as given.

    ## Reward terms (v5's, with v5's weights)
    * ``ctrl = 0.1·‖a‖²`` (``info["reward_ctrl"] = −ctrl``);
    * ``contact = min(5e-7·‖cfrc_ext‖², 10)`` over all bodies
      (``info["reward_contact"] = −contact``);
    * ``survive = 5`` while healthy, 0 on the step that ends the episode
      (``info["reward_survive"]``).

    The velocity ``v = Δcom_xy / dt`` is that of the whole body's centre of mass
    (v5's ``mass_center``: mass-weighted body inertial frames), over the step
    (``dt = 0.015`` s, ``frame_skip = 5``). v5's forward term ``1.25·v_x`` is replaced
    by the task's; every other v5 term is kept as it is. ``info`` also holds
    ``x_position``, ``y_position`` (torso), ``x_velocity`` and ``y_velocity``.

    ## Start state
    v5's: ``qpos = qpos0 + U[-0.01, 0.01]^24``, then ``qvel = U[-0.01, 0.01]^23``.

    ## Episode end
    Terminates when the torso's z leaves ``(1, 2)`` m (v5's rule, strict
    inequalities; a non-finite state is unhealthy too). Truncated after
    ``horizon = 200`` steps (3 s), the locomotion families' horizon.
"""


class _HumanoidFamily(MujocoTaskFamily, HumanoidEnv):
    """Common part of the Humanoid families (not registered)."""

    horizon = 200
    uses_contact_forces = True  # the contact cost
    data_fields = ("xipos",)
    v5_kwargs: ClassVar[Mapping[str, object]] = {
        "include_cinert_in_observation": False,
        "include_cvel_in_observation": False,
        "include_qfrc_actuator_in_observation": False,
        "include_cfrc_ext_in_observation": False,
    }

    @classmethod
    def _position(
        cls, qpos: np.ndarray, xpos: np.ndarray | None, fields: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        # v5's mass_center, summed body by body (a fixed order for any K).
        mass, xipos = _body_mass(), fields["xipos"]
        weighted = np.zeros((len(qpos), 2))
        for body in range(len(mass)):
            weighted = weighted + mass[body] * xipos[:, body, :2]
        return weighted / mass.sum()

    @classmethod
    def _observe(
        cls,
        qpos: np.ndarray,
        qvel: np.ndarray,
        cfrc_ext: np.ndarray | None,
        fields: Mapping[str, np.ndarray],
    ) -> np.ndarray:
        return np.concatenate([qpos[:, 2:], qvel], axis=1)

    @classmethod
    def _reset_state(
        cls, rng: np.random.Generator, init_qpos: np.ndarray, init_qvel: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        qpos = init_qpos + rng.uniform(low=-RESET_NOISE, high=RESET_NOISE, size=len(init_qpos))
        qvel = init_qvel + rng.uniform(low=-RESET_NOISE, high=RESET_NOISE, size=len(init_qvel))
        return qpos, qvel

    @classmethod
    def _direction(cls, params: np.ndarray) -> np.ndarray:
        """The task's unit direction ``[K, 2]``."""
        raise NotImplementedError

    @classmethod
    def _evaluate(
        cls, params: np.ndarray, tr: Transition
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        assert tr.cfrc_ext is not None  # uses_contact_forces is set
        k = len(tr.qpos)
        velocity = (tr.pos_after - tr.pos_before) / tr.dt
        direction = cls._direction(params)
        forward = FORWARD_REWARD_WEIGHT * (
            direction[:, 0] * velocity[:, 0] + direction[:, 1] * velocity[:, 1]
        )
        ctrl_cost = CTRL_COST_WEIGHT * sum_squares(tr.action)
        contact_cost = np.minimum(
            CONTACT_COST_WEIGHT * sum_squares(tr.cfrc_ext.reshape(k, -1)), CONTACT_COST_MAX
        )
        z = tr.qpos[:, 2]
        healthy = (HEALTHY_Z_RANGE[0] < z) & (z < HEALTHY_Z_RANGE[1])
        survive = np.where(healthy, HEALTHY_REWARD, 0.0)
        reward = (forward + survive) - (ctrl_cost + contact_cost)  # v5's order
        info = {
            "x_position": tr.qpos[:, 0].copy(),
            "y_position": tr.qpos[:, 1].copy(),
            "x_velocity": velocity[:, 0],
            "y_velocity": velocity[:, 1],
            "reward_forward": forward,
            "reward_ctrl": -ctrl_cost,
            "reward_contact": -contact_cost,
            "reward_survive": survive,
        }
        return reward, ~healthy, info


class HumanoidDirEnv(_HumanoidFamily):
    __doc__ = (
        """Humanoid that must walk in a direction of the plane it cannot observe.

    Registered as ``MetaRL/HumanoidDir-v0``: Gymnasium's ``Humanoid-v5`` (same model,
    start state, physics, termination and cost terms; the observation without v5's
    303 unnormalised body dimensions) with a direction
    task, as PEARL's Humanoid direction benchmark. The forward/backward variant
    along x is ``MetaRL/HumanoidFwdBack-v0`` (:class:`HumanoidFwdBackEnv`).

    ## Reward
    ``reward = 1.25·⟨(cos θ, sin θ), v⟩ + survive − ctrl − contact`` (terms below),
    ``θ`` the task's angle; ``info["reward_forward"] = 1.25·⟨(cos θ, sin θ), v⟩``.
    """
        + _COMMON_SPEC
        + """
    ## Task distribution
    One parameter, the direction's angle ``angle ~ U[0, 2π)`` rad from the x axis,
    drawn with the generator given to :meth:`sample_tasks`. Task type
    :class:`PlanarDirectionTask` (valid range ``[0, 2π]``); the default task (before
    ``set_task``) is ``angle = 0`` (forward).

    ## Arguments
    ``task`` (initial task), ``render_mode``, ``width``, ``height`` (rendering).

    ## Version history
    * v0: initial version (Gymnasium Humanoid-v5 without its body observations, mujoco ≥ 3).
    """
    )

    task_cls = PlanarDirectionTask
    task_distribution = "angle ~ U[0, 2π) rad, direction (cos, sin) in the plane"

    @classmethod
    def default_task(cls) -> Task:
        return PlanarDirectionTask(angle=0.0)

    @classmethod
    def sample_tasks(cls, n: int, rng: np.random.Generator) -> list[Task]:
        cls._check_sample_args(n, rng)
        return [PlanarDirectionTask(angle=float(a)) for a in rng.uniform(0.0, TWO_PI, size=n)]

    @classmethod
    def _task_params(cls, tasks: Sequence[Task]) -> np.ndarray:
        # math.cos per task: the same bits whether one task or many.
        angles = [t.angle for t in tasks]  # type: ignore[attr-defined]
        return np.array([[math.cos(a), math.sin(a)] for a in angles], dtype=np.float64)

    @classmethod
    def _direction(cls, params: np.ndarray) -> np.ndarray:
        return params


class HumanoidFwdBackEnv(DirectionFamily, _HumanoidFamily):
    __doc__ = (
        """Humanoid that must walk forward or backward along x, without being told which.

    Registered as ``MetaRL/HumanoidFwdBack-v0``: the ±x variant of
    ``MetaRL/HumanoidDir-v0`` (the forward/backward task of HalfCheetahDir and
    AntDir on the Humanoid).

    ## Reward
    ``reward = 1.25·d·v_x + survive − ctrl − contact`` (terms below), ``d ∈ {−1, +1}``
    the task's direction; ``info["reward_forward"] = 1.25·d·v_x``.
    """
        + _COMMON_SPEC
        + """
    ## Task distribution
    One parameter, the direction ``direction ∈ {−1, +1}``, each with probability 0.5,
    drawn with the generator given to :meth:`sample_tasks`. Task type
    :class:`~maml_rl.envs.locomotion.DirectionTask`; the default task is
    ``direction = +1``.

    ## Arguments
    ``task`` (initial task), ``render_mode``, ``width``, ``height`` (rendering).

    ## Version history
    * v0: initial version (Gymnasium Humanoid-v5 without its body observations, mujoco ≥ 3).
    """
    )

    @classmethod
    def _direction(cls, params: np.ndarray) -> np.ndarray:
        return np.concatenate([params[:, :1], np.zeros((len(params), 1))], axis=1)
