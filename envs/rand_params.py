"""Random-dynamics task families: Hopper, Walker2d and HalfCheetah with random physics.

The rand-param suite of ProMP (Rothfuss et al., ICLR 2019) and PEARL (Rakelly et al.,
ICML 2019): each task rescales every body mass, body inertia, joint (dof) damping and
geom friction of the robot by its own factor ``b**u``, ``u ~ U[-3, 3]`` independently
per element, with base ``b = 1.5`` (``1.3`` for damping). The reward is fixed (run
forward); the agent must adapt its gait to the body it was given, which it cannot
observe.

The task is the vector of exponents ``u`` (one per model element, in the model's
order), so a task is bounded (``[-3, 3]``), exact and serialisable. The single env
writes ``nominal × b**u`` into its ``MjModel`` and reruns ``mj_setConst`` (subtree
masses, inverse weights and the other constants derived from these fields); the
batched env does the same per simulation (:class:`~maml_rl.envs.locomotion.BatchedMujocoEnv`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv

from maml_rl.envs.half_cheetah import _HalfCheetahFamily
from maml_rl.envs.locomotion import (
    MujocoTaskFamily,
    Transition,
    sum_squares,
)
from maml_rl.tasks import Task

__all__ = [
    "HalfCheetahRandParamsEnv",
    "HalfCheetahRandParamsTask",
    "HopperRandParamsEnv",
    "HopperRandParamsTask",
    "RandParamsTask",
    "Walker2dRandParamsEnv",
    "Walker2dRandParamsTask",
]

#: ``u ~ U[-LOG_SCALE_LIMIT, LOG_SCALE_LIMIT]`` (ProMP's ``log_scale_limit``).
LOG_SCALE_LIMIT = 3.0
#: The scaled ``MjModel`` fields and their bases ``b`` (factor ``b**u``).
RAND_PARAMS = {"body_mass": 1.5, "body_inertia": 1.5, "dof_damping": 1.3, "geom_friction": 1.5}

#: Gymnasium v5's weights and ranges (Hopper-v5, Walker2d-v5, HalfCheetah-v5 defaults).
HOP_WALK_CTRL_COST_WEIGHT = 1e-3
HEALTHY_REWARD = 1.0
HOP_WALK_RESET_NOISE = 5e-3
HOPPER_HEALTHY_STATE = (-100.0, 100.0)
HOPPER_HEALTHY_Z = (0.7, np.inf)
HOPPER_HEALTHY_ANGLE = (-0.2, 0.2)
WALKER_HEALTHY_Z = (0.8, 2.0)
WALKER_HEALTHY_ANGLE = (-1.0, 1.0)
CHEETAH_CTRL_COST_WEIGHT = 0.1


@dataclasses.dataclass(frozen=True)
class RandParamsTask(Task):
    """Exponents ``u`` of the scale factors ``b**u`` of each model field, flattened in
    the model's order (``body_inertia`` and ``geom_friction`` row by row), each in
    ``[-3, 3]``; ``u = 0`` everywhere is the nominal robot.

    Base class only: each family subclasses it with its model's sizes in ``shapes``.
    """

    body_mass: tuple[float, ...]
    body_inertia: tuple[float, ...]
    dof_damping: tuple[float, ...]
    geom_friction: tuple[float, ...]

    bounds: ClassVar = {name: (-LOG_SCALE_LIMIT, LOG_SCALE_LIMIT) for name in RAND_PARAMS}


@dataclasses.dataclass(frozen=True)
class HopperRandParamsTask(RandParamsTask):
    """A HopperRandParams task (5 bodies, 6 dofs, 5 geoms)."""

    shapes: ClassVar = {"body_mass": 5, "body_inertia": 15, "dof_damping": 6, "geom_friction": 15}


@dataclasses.dataclass(frozen=True)
class Walker2dRandParamsTask(RandParamsTask):
    """A Walker2dRandParams task (8 bodies, 9 dofs, 8 geoms)."""

    shapes: ClassVar = {"body_mass": 8, "body_inertia": 24, "dof_damping": 9, "geom_friction": 24}


@dataclasses.dataclass(frozen=True)
class HalfCheetahRandParamsTask(RandParamsTask):
    """A HalfCheetahRandParams task (8 bodies, 9 dofs, 9 geoms)."""

    shapes: ClassVar = {"body_mass": 8, "body_inertia": 24, "dof_damping": 9, "geom_friction": 27}


class _RandParamsFamily(MujocoTaskFamily):
    """The task half of a random-dynamics family (not registered)."""

    horizon = 200
    rand_params = RAND_PARAMS
    task_cls: ClassVar[type[RandParamsTask]]
    task_distribution = "mass, inertia, friction × 1.5^u, damping × 1.3^u, u ~ U[-3, 3] per element"

    @classmethod
    def default_task(cls) -> Task:
        return cls.task_cls(**{name: (0.0,) * n for name, n in cls.task_cls.shapes.items()})

    @classmethod
    def sample_tasks(cls, n: int, rng: np.random.Generator) -> list[Task]:
        cls._check_sample_args(n, rng)
        sizes = [cls.task_cls.shapes[name] for name in RAND_PARAMS]
        u = rng.uniform(-LOG_SCALE_LIMIT, LOG_SCALE_LIMIT, size=(n, sum(sizes)))
        bounds = np.cumsum([0, *sizes])
        return [
            cls.task_cls(
                **{
                    name: tuple(float(x) for x in row[bounds[i] : bounds[i + 1]])
                    for i, name in enumerate(RAND_PARAMS)
                }
            )
            for row in u
        ]

    @classmethod
    def _task_params(cls, tasks: Sequence[Task]) -> np.ndarray:
        # The reward does not depend on the task; the dynamics do (rand_params).
        return np.zeros((len(tasks), 0))

    @classmethod
    def _position(
        cls, qpos: np.ndarray, xpos: np.ndarray | None, fields: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        # v5 measures the forward velocity on the rootx slide joint.
        return qpos[:, :1]


class _HopWalkFamily(_RandParamsFamily):
    """Hopper and Walker2d: v5's observation, reward and health check."""

    _healthy_state: ClassVar[tuple[float, float] | None]
    _healthy_z: ClassVar[tuple[float, float]]
    _healthy_angle: ClassVar[tuple[float, float]]

    @classmethod
    def _observe(
        cls,
        qpos: np.ndarray,
        qvel: np.ndarray,
        cfrc_ext: np.ndarray | None,
        fields: Mapping[str, np.ndarray],
    ) -> np.ndarray:
        return np.concatenate([qpos[:, 1:], np.clip(qvel, -10.0, 10.0)], axis=1)

    @classmethod
    def _reset_state(
        cls, rng: np.random.Generator, init_qpos: np.ndarray, init_qvel: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        noise = HOP_WALK_RESET_NOISE
        qpos = init_qpos + rng.uniform(low=-noise, high=noise, size=len(init_qpos))
        qvel = init_qvel + rng.uniform(low=-noise, high=noise, size=len(init_qvel))
        return qpos, qvel

    @classmethod
    def _healthy(cls, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        z, angle = qpos[:, 1], qpos[:, 2]
        healthy = (cls._healthy_z[0] < z) & (z < cls._healthy_z[1])
        healthy &= (cls._healthy_angle[0] < angle) & (angle < cls._healthy_angle[1])
        if cls._healthy_state is not None:
            state = np.concatenate([qpos[:, 2:], qvel], axis=1)
            low, high = cls._healthy_state
            healthy &= ((low < state) & (state < high)).all(axis=1)
        return healthy

    @classmethod
    def _evaluate(
        cls, params: np.ndarray, tr: Transition
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        x_velocity = (tr.pos_after[:, 0] - tr.pos_before[:, 0]) / tr.dt
        healthy = cls._healthy(tr.qpos, tr.qvel)
        survive = np.where(healthy, HEALTHY_REWARD, 0.0)
        ctrl_cost = HOP_WALK_CTRL_COST_WEIGHT * sum_squares(tr.action)
        reward = (x_velocity + survive) - ctrl_cost  # v5's order: rewards − costs
        info = {
            "x_position": tr.qpos[:, 0].copy(),
            "x_velocity": x_velocity,
            "reward_forward": x_velocity,
            "reward_ctrl": -ctrl_cost,
            "reward_survive": survive,
        }
        return reward, ~healthy, info


_TASK_SECTION = """
    ## Task distribution
    Per task, independently for every element ``i`` of four ``MjModel`` fields:

    | field | elements | factor |
    |---|---|---|
    | ``body_mass`` | one per body (world included: its mass is 0) | ``1.5**u_i`` |
    | ``body_inertia`` | three per body (principal moments) | ``1.5**u_i`` |
    | ``dof_damping`` | one per dof | ``1.3**u_i`` |
    | ``geom_friction`` | three per geom (slide, spin, roll; floor included) | ``1.5**u_i`` |

    with ``u_i ~ U[-3, 3]`` (so masses, inertias and frictions range over
    ``[0.30, 3.4]×`` nominal, damping over ``[0.46, 2.2]×``), drawn with the generator
    given to :meth:`sample_tasks`. A task holds the exponents ``u`` (task type
    {task}, each component in ``[-3, 3]``); the default task is ``u = 0`` (the nominal
    robot). After writing the fields the env reruns ``mj_setConst``, so the constants
    MuJoCo derives from them (subtree masses, inverse weights, mean inertia) match.
    Independent factors on the three principal moments may break the triangle
    inequality of a body's inertia, as in the original suite; MuJoCo simulates it.

    ## Differences from the original suite
    ProMP's and PEARL's rand-param envs ran on mujoco-py with ``frame_skip = 4`` for
    every robot and their own older models; here each robot is Gymnasium's v5 one with
    v5's frame skip ({frame_skip}), observation, reward, start state and termination.
    Returns are therefore comparable with Gymnasium's v5 env, not with the papers' curves.
"""


class HopperRandParamsEnv(_HopWalkFamily, HopperEnv):
    __doc__ = (
        """Hopper with random physics: masses, inertias, damping and friction per task.

    Registered as ``MetaRL/HopperRandParams-v0``: Gymnasium's ``Hopper-v5`` (same
    model, observation, reward, start state and termination; v5's default weights)
    whose dynamics are drawn per task, as the rand-param suite of ProMP and PEARL.

    ## Observation space
    v5's, ``Box(-inf, inf, (11,), float64)``: ``qpos[1:]`` (torso z, torso angle,
    thigh, leg, foot angles) then ``clip(qvel, -10, 10)`` (6 velocities).

    ## Action space
    ``Box(-1, 1, (3,), float32)``: torques on the thigh, leg and foot joints (gear
    200). MuJoCo clamps the controls for the dynamics; the control cost uses the
    action as given.

    ## Reward
    ``reward = v_x + survive − 0.001·‖a‖²`` (v5's defaults): ``v_x = (x_after −
    x_before)/dt`` the torso's (``rootx``) forward velocity, ``survive = 1`` while
    healthy, 0 on the step that ends the episode. ``info`` holds ``reward_forward``
    (``v_x``), ``reward_survive``, ``reward_ctrl`` (``−0.001·‖a‖²``), ``x_position``
    and ``x_velocity``.

    ## Start state
    v5's: ``qpos = qpos0 + U[-0.005, 0.005]^6``, then ``qvel = U[-0.005, 0.005]^6``.

    ## Episode end
    Terminates when unhealthy (v5's rule, strict inequalities): torso z ∉ (0.7, ∞),
    torso angle ∉ (−0.2, 0.2) rad, or any of ``qpos[2:]``, ``qvel`` ∉ (−100, 100)
    (a non-finite state is unhealthy). Truncated after ``horizon = 200`` steps
    (1.6 s at ``dt = 0.008`` s), the suite's horizon.
    """
        + _TASK_SECTION.format(task=":class:`HopperRandParamsTask`", frame_skip="4, dt 0.008 s")
        + """
    ## Arguments
    ``task`` (initial task), ``render_mode``, ``width``, ``height`` (rendering).

    ## Version history
    * v0: initial version (Gymnasium Hopper-v5, mujoco ≥ 3).
    """
    )

    task_cls = HopperRandParamsTask
    _healthy_state = HOPPER_HEALTHY_STATE
    _healthy_z = HOPPER_HEALTHY_Z
    _healthy_angle = HOPPER_HEALTHY_ANGLE


class Walker2dRandParamsEnv(_HopWalkFamily, Walker2dEnv):
    __doc__ = (
        """Walker2d with random physics: masses, inertias, damping and friction per task.

    Registered as ``MetaRL/Walker2dRandParams-v0``: Gymnasium's ``Walker2d-v5`` (same
    model — ``walker2d_v5.xml`` —, observation, reward, start state and termination;
    v5's default weights) whose dynamics are drawn per task, as the rand-param suite
    of ProMP and PEARL.

    ## Observation space
    v5's, ``Box(-inf, inf, (17,), float64)``: ``qpos[1:]`` (torso z, torso angle, the
    six joint angles of the right then left thigh, leg, foot) then
    ``clip(qvel, -10, 10)`` (9 velocities).

    ## Action space
    ``Box(-1, 1, (6,), float32)``: torques on the right then left thigh, leg and foot
    joints (gear 100). MuJoCo clamps the controls for the dynamics; the control cost
    uses the action as given.

    ## Reward
    ``reward = v_x + survive − 0.001·‖a‖²`` (v5's defaults): ``v_x`` the torso's
    (``rootx``) forward velocity over the step, ``survive = 1`` while healthy, 0 on the
    step that ends the episode. ``info`` holds ``reward_forward``, ``reward_survive``,
    ``reward_ctrl``, ``x_position`` and ``x_velocity``.

    ## Start state
    v5's: ``qpos = qpos0 + U[-0.005, 0.005]^9``, then ``qvel = U[-0.005, 0.005]^9``.

    ## Episode end
    Terminates when unhealthy (v5's rule, strict inequalities): torso z ∉ (0.8, 2.0)
    or torso angle ∉ (−1, 1) rad. Truncated after ``horizon = 200`` steps (1.6 s at
    ``dt = 0.008`` s), the suite's horizon.
    """
        + _TASK_SECTION.format(task=":class:`Walker2dRandParamsTask`", frame_skip="4, dt 0.008 s")
        + """
    ## Arguments
    ``task`` (initial task), ``render_mode``, ``width``, ``height`` (rendering).

    ## Version history
    * v0: initial version (Gymnasium Walker2d-v5, mujoco ≥ 3).
    """
    )

    task_cls = Walker2dRandParamsTask
    _healthy_state = None
    _healthy_z = WALKER_HEALTHY_Z
    _healthy_angle = WALKER_HEALTHY_ANGLE


class HalfCheetahRandParamsEnv(_RandParamsFamily, HalfCheetahEnv):
    __doc__ = (
        """HalfCheetah with random physics: masses, inertias, damping and friction per task.

    Registered as ``MetaRL/HalfCheetahRandParams-v0``: Gymnasium's ``HalfCheetah-v5``
    (same model, observation, reward weights, start state; no termination) whose
    dynamics are drawn per task, as the rand-param suite of ProMP and PEARL.

    ## Observation space
    v5's, ``Box(-inf, inf, (17,), float64)``: ``qpos[1:]`` then ``qvel`` (see
    :class:`~maml_rl.envs.half_cheetah.HalfCheetahVelEnv` for the table).

    ## Action space
    ``Box(-1, 1, (6,), float32)``: torques on back thigh, shin, foot, front thigh,
    shin, foot. MuJoCo clamps the controls for the dynamics; the control cost uses the
    action as given.

    ## Reward
    ``reward = v_x − 0.1·‖a‖²``: v5's two terms with v5's default weights (forward
    weight 1, control cost 0.1 — not the 0.05 of the MAML cheetah families); no alive
    bonus. ``info`` holds ``reward_forward`` (``v_x``), ``reward_ctrl``
    (``−0.1·‖a‖²``), ``x_position`` and ``x_velocity``.

    ## Start state
    v5's: ``qpos = U[-0.1, 0.1]^9``, then ``qvel = 0.1·N(0, 1)^9``.

    ## Episode end
    Never terminates (as v5). Truncated after ``horizon = 200`` steps (10 s at
    ``dt = 0.05`` s).
    """
        + _TASK_SECTION.format(task=":class:`HalfCheetahRandParamsTask`", frame_skip="5, dt 0.05 s")
        + """
    ## Arguments
    ``task`` (initial task), ``render_mode``, ``width``, ``height`` (rendering).

    ## Version history
    * v0: initial version (Gymnasium HalfCheetah-v5, mujoco ≥ 3).
    """
    )

    task_cls = HalfCheetahRandParamsTask

    #: The model's ``track`` camera follows the body (v5's default camera stays put).
    v5_kwargs: ClassVar[Mapping[str, Any]] = {"camera_name": "track"}

    # v5 HalfCheetah's observation, as the other HalfCheetah families compute it.
    _observe = _HalfCheetahFamily.__dict__["_observe"]

    @classmethod
    def _evaluate(
        cls, params: np.ndarray, tr: Transition
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        x_velocity = (tr.pos_after[:, 0] - tr.pos_before[:, 0]) / tr.dt
        ctrl_cost = CHEETAH_CTRL_COST_WEIGHT * sum_squares(tr.action)
        reward = x_velocity - ctrl_cost
        info = {
            "x_position": tr.qpos[:, 0].copy(),
            "x_velocity": x_velocity,
            "reward_forward": x_velocity,
            "reward_ctrl": -ctrl_cost,
        }
        return reward, np.zeros(len(reward), dtype=bool), info
