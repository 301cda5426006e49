"""Shared machinery of the MuJoCo locomotion families (HalfCheetah*, Ant*).

Each family is a subclass of a Gymnasium v5 MuJoCo env (same bundled model,
same observation, same start-state noise) whose reward depends on a task. The
reward is written **once**, as a function vectorised over a leading env axis
``K`` (:meth:`MujocoTaskFamily._evaluate`), and used by both faces of the
family:

* the single env (``gymnasium.make("MetaRL/AntVel-v0")``) calls it with ``K = 1``;
* :class:`BatchedMujocoEnv` (``family.make_batched(K)``) steps ``K`` simulations
  together and calls it once for all ``K``. With MuJoCo ≥ 3.17 the simulations
  are stepped in C on a thread pool (:class:`maml_rl.envs.mjbatch.NativeBatch`),
  their state read from live ``[K, ...]`` arrays; with an older MuJoCo, ``K``
  ``MjData`` of one ``MjModel`` are stepped in a Python loop and their state
  gathered into preallocated ``[K, ...]`` arrays.

Because the physics calls are the same on both paths (``ctrl ← action``,
``mj_step`` with ``nstep = frame_skip``, then ``mj_rnePostConstraint`` when
contact forces are used; the batched simulator is bit-identical to a loop of
them at any thread count) and every array operation in the reward is
elementwise or a fixed-order sum (:func:`sum_squares`), the batched env
reproduces the single env **bitwise**.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces, utils

from maml_rl.envs.mjbatch import NativeBatch, native_batch_available
from maml_rl.tasks import Task, TaskFamily
from maml_rl.threads import available_cores
from maml_rl.vector import BatchedTaskEnv

__all__ = [
    "BatchedMujocoEnv",
    "DirectionFamily",
    "DirectionTask",
    "MujocoTaskFamily",
    "Transition",
    "VelocityFamily",
    "VelocityTask",
    "mujoco_warnings_to_python",
    "sum_squares",
]

#: Gymnasium v5's default start-state noise (uniform on qpos, Gaussian on qvel).
RESET_NOISE_SCALE = 0.1


@dataclasses.dataclass(frozen=True)
class VelocityTask(Task):
    """A target forward velocity ``velocity`` (m/s).

    Base class only: each family subclasses it with its own range in ``bounds``
    (e.g. :class:`~maml_rl.envs.half_cheetah.HalfCheetahVelTask`), so a task of one
    family is rejected by another.
    """

    velocity: float


@dataclasses.dataclass(frozen=True)
class DirectionTask(Task):
    """A direction of motion along the x axis: ``+1`` (forward) or ``-1`` (backward)."""

    direction: float

    choices: ClassVar = {"direction": (-1.0, 1.0)}


#: MuJoCo warnings about the Gymnasium models that the families pin on purpose.
KNOWN_MODEL_WARNINGS = (
    # half_cheetah.xml's <compiler settotalmass="14">, deprecated in MuJoCo 4; the
    # family keeps v5's model (and its masses) exactly.
    "compiler attribute 'settotalmass' is deprecated",
)


@contextlib.contextmanager
def mujoco_warnings_to_python(ignore: Sequence[str] = KNOWN_MODEL_WARNINGS) -> Iterator[None]:
    """Route MuJoCo's warnings to Python's :mod:`warnings` while the block runs.

    MuJoCo's default handler prints each warning and appends it to ``MUJOCO_LOG.TXT``
    in the working directory — a file that grew by a line per env built, wherever
    ``maml-rl`` ran. Inside the block a warning containing one of ``ignore`` is
    dropped and any other becomes a ``RuntimeWarning``; the previous handler is
    restored after.
    """

    def handler(message: str) -> None:
        if not any(known in message for known in ignore):
            warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)

    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(handler)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


@contextlib.contextmanager
def _state_kept(model: mujoco.MjModel, data: mujoco.MjData) -> Iterator[None]:
    """Restore ``data``'s integration state (time, qpos, qvel, act, warm start, ctrl...)
    after the block."""
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(model, spec))
    mujoco.mj_getState(model, data, state, spec)
    try:
        yield
    finally:
        mujoco.mj_setState(model, data, state, spec)


def sum_squares(x: np.ndarray) -> np.ndarray:
    """Row-wise sum of squares ``[K, n] -> [K]`` in an order independent of ``K``.

    ``np.sum(x * x, axis=1)`` may add a row's elements in a different order
    depending on the array's shape (pairwise blocks vs column sweeps), so a
    single env (``K = 1``) and a batched env would disagree in the last bit.
    Here the squares are zero-padded to a power of two and halved by elementwise
    adds, a fixed binary tree: the same bits for any ``K``.
    """
    sq = x * x
    k, n = sq.shape
    width = 1 << max(n - 1, 0).bit_length()
    if width != n:
        sq = np.concatenate([sq, np.zeros((k, width - n))], axis=1)
    while width > 1:
        width //= 2
        sq = sq[:, :width] + sq[:, width:]
    return sq[:, 0]


class Transition(NamedTuple):
    """One step of ``K`` simulations, the input of a family's reward function.

    Attributes:
        action: ``[K, nu]`` float64, the actions as given (before MuJoCo's
            ``ctrlrange`` clamp).
        pos_before: ``[K, d]``, the family's tracked position
            (:meth:`MujocoTaskFamily._position`) before the step.
        pos_after: ``[K, d]``, the same after the step.
        qpos: ``[K, nq]`` joint positions after the step.
        qvel: ``[K, nv]`` joint velocities after the step.
        cfrc_ext: ``[K, nbody, 6]`` external contact wrenches after the step
            (``None`` for families that do not use them).
        dt: seconds per env step (``timestep * frame_skip``).
    """

    action: np.ndarray
    pos_before: np.ndarray
    pos_after: np.ndarray
    qpos: np.ndarray
    qvel: np.ndarray
    cfrc_ext: np.ndarray | None
    dt: float


class MujocoTaskFamily(TaskFamily):
    """Mixin for a task family on a Gymnasium v5 MuJoCo env.

    Use as ``class AntVelEnv(MujocoTaskFamily, AntEnv)``. It replaces ``step``
    (physics exactly as v5's ``do_simulation``; reward from :meth:`_evaluate`),
    keeps v5's ``reset`` and ``_get_obs``, and provides :meth:`make_batched`.
    Subclasses define the hooks below, all vectorised over a leading env axis.
    """

    #: Whether the reward/observation reads ``cfrc_ext`` (needs ``mj_rnePostConstraint``).
    uses_contact_forces: ClassVar[bool] = False
    #: Whether :meth:`_position` reads the body positions ``xpos``.
    position_from_xpos: ClassVar[bool] = False
    #: Further ``MjData`` fields that :meth:`_position` and :meth:`_observe` read, given
    #: to them as ``[K, *shape]`` arrays in ``fields`` (e.g. Humanoid's ``cinert``).
    data_fields: ClassVar[tuple[str, ...]] = ()
    #: ``MjModel`` fields that the task scales (random dynamics): ``{field: b}``, the
    #: field's value becoming ``nominal × b**u`` elementwise, ``u`` the task's field of
    #: the same name (flattened). Empty for families whose task changes only the reward.
    rand_params: ClassVar[Mapping[str, float]] = {}
    #: Keyword arguments for the Gymnasium v5 env's constructor besides the render
    #: settings (e.g. the reward weights, so v5's own properties agree with the family's
    #: reward, and ``camera_name="track"`` where v5's default camera stays put).
    v5_kwargs: ClassVar[Mapping[str, Any]] = {}

    def __init__(
        self,
        task: Task | dict[str, Any] | None = None,
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
    ) -> None:
        with mujoco_warnings_to_python():  # the model compiles here
            v5: Any = self._v5_class()
            v5.__init__(self, render_mode=render_mode, width=width, height=height, **self.v5_kwargs)
        self._init_family(task, render_mode, width, height)

    @classmethod
    def _v5_class(cls) -> type:
        """The Gymnasium MuJoCo env this family extends (the first in its MRO)."""
        from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

        return next(
            c
            for c in cls.__mro__
            if issubclass(c, MujocoEnv) and not issubclass(c, MujocoTaskFamily)
        )

    # Provided by the Gymnasium MujocoEnv base.
    model: mujoco.MjModel
    data: mujoco.MjData
    frame_skip: int
    init_qpos: np.ndarray
    init_qvel: np.ndarray
    observation_space: spaces.Box
    action_space: spaces.Box
    render_mode: str | None
    dt: float
    do_simulation: Callable[[np.ndarray, int], None]
    _get_obs: Callable[[], np.ndarray]
    render: Callable[[], Any]

    # -- hooks -------------------------------------------------------------------
    @classmethod
    def _task_params(cls, tasks: Sequence[Task]) -> np.ndarray:
        """The tasks as a float64 array ``[K, p]`` (what :meth:`_evaluate` reads)."""
        raise NotImplementedError

    @classmethod
    def _position(
        cls, qpos: np.ndarray, xpos: np.ndarray | None, fields: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        """The position whose change is the velocity, ``[K, d]``, from the joint
        positions ``[K, nq]``, (when :attr:`position_from_xpos`) the body frame
        positions ``[K, nbody, 3]`` and the :attr:`data_fields`."""
        raise NotImplementedError

    @classmethod
    def _evaluate(
        cls, params: np.ndarray, tr: Transition
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Rewards ``[K]``, terminations ``[K]`` (bool) and info arrays ``[K]``."""
        raise NotImplementedError

    @classmethod
    def _observe(
        cls,
        qpos: np.ndarray,
        qvel: np.ndarray,
        cfrc_ext: np.ndarray | None,
        fields: Mapping[str, np.ndarray],
    ) -> np.ndarray:
        """Observations ``[K, obs_dim]`` from gathered state (equal to v5's ``_get_obs``)."""
        raise NotImplementedError

    @classmethod
    def _reset_state(
        cls, rng: np.random.Generator, init_qpos: np.ndarray, init_qvel: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """One env's start state, draw for draw as its v5 ``reset_model``.

        The default is HalfCheetah's and Ant's: ``qpos`` uniform in ±0.1, then ``qvel``
        with 0.1-scaled standard normal noise."""
        noise = RESET_NOISE_SCALE
        qpos = init_qpos + rng.uniform(low=-noise, high=noise, size=len(init_qpos))
        qvel = init_qvel + noise * rng.standard_normal(len(init_qvel))
        return qpos, qvel

    @classmethod
    def _model_scales(cls, task: Task) -> dict[str, np.ndarray]:
        """The factors ``b**u`` of each :attr:`rand_params` field for one task (flat).

        Computed per task, on arrays of the same shape in the single and the batched
        env, so that both get the same bits."""
        return {
            name: np.power(base, np.asarray(getattr(task, name), dtype=np.float64))
            for name, base in cls.rand_params.items()
        }

    # -- single env ----------------------------------------------------------------
    def _init_family(self, task: Task | dict[str, Any] | None, *ezpickle_args: Any) -> None:
        """Finish ``__init__``: pickling by constructor args, then the initial task."""
        # v5's EzPickle records the parent's constructor arguments; record ours.
        utils.EzPickle.__init__(self, task, *ezpickle_args)  # type: ignore[arg-type]
        self.set_task(task if task is not None else self.default_task())

    @classmethod
    def default_task(cls) -> Task:
        """The task used before :meth:`set_task` is called."""
        raise NotImplementedError

    def _apply_task(self, task: Task) -> None:
        self._params = self._task_params([task])
        if self.rand_params:
            self._scale_model(task)

    def _scale_model(self, task: Task) -> None:
        """Write the task's model fields (nominal × scale) and rerun ``mj_setConst``;
        the simulation's state is kept (``mj_setConst`` overwrites it)."""
        if not hasattr(self, "_nominal"):
            self._nominal = {name: getattr(self.model, name).copy() for name in self.rand_params}
        for name, scale in self._model_scales(task).items():
            field = getattr(self.model, name)
            field[...] = (self._nominal[name].reshape(-1) * scale).reshape(field.shape)
        with _state_kept(self.model, self.data):
            mujoco.mj_setConst(self.model, self.data)

    def __getstate__(self) -> dict[str, Any]:
        # Rebuild from the constructor arguments (MuJoCo objects do not pickle),
        # but keep the current task rather than the one given to __init__.
        state = utils.EzPickle.__getstate__(self)  # type: ignore[arg-type]
        state["task"] = self.task
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        utils.EzPickle.__setstate__(self, state)  # type: ignore[arg-type]
        self.set_task(state["task"])

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        # float64 first: the control cost must not depend on the action's dtype
        # (the batched env works in float64 too).
        action = np.asarray(action, dtype=np.float64)
        pos_before = self._single_position()
        # v5's do_simulation: shape check, ctrl ← action, mj_step(nstep=frame_skip),
        # mj_rnePostConstraint (fills cfrc_ext).
        self.do_simulation(action, self.frame_skip)
        tr = Transition(
            action=action[None],
            pos_before=pos_before,
            pos_after=self._single_position(),
            qpos=self.data.qpos.copy()[None],
            qvel=self.data.qvel.copy()[None],
            cfrc_ext=self.data.cfrc_ext.copy()[None] if self.uses_contact_forces else None,
            dt=self.dt,
        )
        reward, terminated, terms = self._evaluate(self._params, tr)
        observation = self._get_obs()
        info = {key: value[0] for key, value in terms.items()}
        if self.render_mode == "human":
            self.render()
        # Truncation is the TimeLimit wrapper's job (registered max_episode_steps).
        return observation, reward[0], bool(terminated[0]), False, info

    def _single_position(self) -> np.ndarray:
        xpos = self.data.xpos[None] if self.position_from_xpos else None
        return self._position(self.data.qpos[None], xpos, self._single_fields()).copy()

    def _single_fields(self) -> dict[str, np.ndarray]:
        return {name: getattr(self.data, name)[None] for name in self.data_fields}

    # -- batched env -------------------------------------------------------------
    @classmethod
    def make_batched(
        cls,
        num_envs: int,
        max_episode_steps: int | None = None,
        num_threads: int | None = None,
        stepper: str = "auto",
    ) -> BatchedMujocoEnv:
        """``num_envs`` copies of this family as one natively batched env.

        Args:
            num_envs: number of simulations ``K``.
            max_episode_steps: time limit; defaults to the registered ``horizon``.
            num_threads: threads stepping the simulations (``None``: every core
                this process may use); only the native stepper uses threads.
            stepper: ``"native"`` (MuJoCo's batched simulator), ``"loop"`` (a
                Python loop over ``MjData``) or ``"auto"`` (native where the
                installed MuJoCo has it).
        """
        return BatchedMujocoEnv(
            cls,
            num_envs,
            cls.horizon if max_episode_steps is None else max_episode_steps,
            num_threads=num_threads,
            stepper=stepper,
        )


class VelocityFamily(MujocoTaskFamily):
    """The task half of a target-velocity family: ``velocity ~ U[low, high]`` over the
    range in ``task_cls.bounds`` (a :class:`VelocityTask` subclass), 1 m/s by default.

    Use as ``class AntVelEnv(VelocityFamily, _AntFamily)``; the family still writes its
    reward (:meth:`MujocoTaskFamily._evaluate`), reading the velocity as ``params[:, 0]``.
    """

    task_cls: ClassVar[type[VelocityTask]]

    @classmethod
    def default_task(cls) -> Task:
        return cls.task_cls(velocity=1.0)

    @classmethod
    def sample_tasks(cls, n: int, rng: np.random.Generator) -> list[Task]:
        cls._check_sample_args(n, rng)
        low, high = cls.task_cls.bounds["velocity"]
        return [cls.task_cls(velocity=float(v)) for v in rng.uniform(low, high, size=n)]

    @classmethod
    def _task_params(cls, tasks: Sequence[Task]) -> np.ndarray:
        return np.array([[t.velocity] for t in tasks], dtype=np.float64)  # type: ignore[attr-defined]


class DirectionFamily(MujocoTaskFamily):
    """The task half of a forward/backward family: ``direction ∈ {−1, +1}`` with
    probability 0.5 each (:class:`DirectionTask`), ``+1`` by default.

    Use as ``class AntDirEnv(DirectionFamily, _AntFamily)``; the family still writes its
    reward, reading the direction as ``params[:, 0]``.
    """

    task_cls = DirectionTask
    task_distribution = "direction ∈ {-1, +1}, p = 0.5 each"

    @classmethod
    def default_task(cls) -> Task:
        return DirectionTask(direction=1.0)

    @classmethod
    def sample_tasks(cls, n: int, rng: np.random.Generator) -> list[Task]:
        cls._check_sample_args(n, rng)
        directions = np.where(rng.random(n) < 0.5, -1.0, 1.0)
        return [DirectionTask(direction=float(d)) for d in directions]

    @classmethod
    def _task_params(cls, tasks: Sequence[Task]) -> np.ndarray:
        return np.array([[t.direction] for t in tasks], dtype=np.float64)  # type: ignore[attr-defined]


class BatchedMujocoEnv(BatchedTaskEnv):
    """``K`` simulations of one MuJoCo task family, stepped together.

    Contract: :mod:`maml_rl.vector`. ``reset(seed=[s_k])`` draws env ``k``'s
    start state from ``gymnasium.utils.seeding.np_random(s_k)`` exactly as the
    single env does; then each ``step`` gives, bitwise, the single env's
    observations, rewards, ``terminated`` and ``truncated`` for the same actions.

    Two steppers, chosen once (see :meth:`MujocoTaskFamily.make_batched`):

    * **native** (MuJoCo ≥ 3.17): a persistent :class:`~maml_rl.envs.mjbatch.NativeBatch`
      steps the ``K`` simulations in C on ``num_threads`` threads; ``qpos``, ``qvel``
      and ``ctrl`` are live ``[K, n]`` views of its state rows and the derived fields
      a family reads (``xpos``, ``cfrc_ext``) are ``[K, ...]`` arrays it refreshes.
    * **loop**: ``K`` ``MjData`` of one ``MjModel`` stepped in one Python loop, their
      state gathered with one ``np.concatenate`` per quantity into preallocated
      buffers.

    For a family with random dynamics (:attr:`MujocoTaskFamily.rand_params`), each
    simulation has its own model fields: on the native stepper the fields are expanded
    per simulation (``mjb_expand``) and ``mj_setConst`` rerun per simulation
    (``mjb_setConst``); on the loop stepper each ``MjData`` has its own ``MjModel``
    copy. Either way the fields are written as the single env writes them.

    Either way observations and rewards are computed for all ``K`` at once. Envs
    that have terminated are no longer simulated; their later outputs are
    meaningless (frozen observation, zero reward).

    Args:
        family: the single-env class (a :class:`MujocoTaskFamily` subclass).
        num_envs: number of simulations ``K``.
        max_episode_steps: time limit (``truncated`` after this many steps).
        num_threads: threads of the native stepper (``None``: every core this
            process may use).
        stepper: ``"auto"``, ``"native"`` or ``"loop"``.
    """

    def __init__(
        self,
        family: type[MujocoTaskFamily],
        num_envs: int,
        max_episode_steps: int,
        num_threads: int | None = None,
        stepper: str = "auto",
    ) -> None:
        super().__init__(num_envs, max_episode_steps)
        if stepper not in ("auto", "native", "loop"):
            raise ValueError(f"stepper must be 'auto', 'native' or 'loop', got {stepper!r}")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be ≥ 1 or None, got {num_threads}")
        self.family = family
        self.task_cls = family.task_cls
        # One single env supplies the model, the spaces and the start state, so the
        # batched env cannot drift from the registered one.
        proto: Any = family()
        self.model: mujoco.MjModel = proto.model
        self._field_shapes = {name: getattr(proto.data, name).shape for name in family.data_fields}
        self.frame_skip: int = proto.frame_skip
        self.dt: float = proto.dt
        self._init_qpos: np.ndarray = proto.init_qpos.copy()
        self._init_qvel: np.ndarray = proto.init_qvel.copy()
        self.single_observation_space = proto.observation_space
        self.single_action_space = proto.action_space
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, self.num_envs
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        proto.close()

        per_sim_models = bool(family.rand_params)
        if stepper == "auto":
            stepper = "native" if native_batch_available(per_sim_models) else "loop"
        elif stepper == "native" and per_sim_models and not native_batch_available(True):
            raise RuntimeError(
                f"mujoco {mujoco.__version__} has no per-simulation model fields "
                f"(mjb_expand), which {family.__name__} needs on the native stepper; "
                "use stepper='loop'"
            )
        self.stepper = stepper
        m, k = self.model, self.num_envs
        self._batch: NativeBatch | None = None
        self._xpos: np.ndarray | None = None
        self._cfrc: np.ndarray | None = None
        self._fields: dict[str, np.ndarray] = {}
        # Nominal values of the task-scaled model fields, flat (random dynamics only).
        self._nominal = {name: getattr(m, name).reshape(-1).copy() for name in family.rand_params}
        self._model_rows: dict[str, np.ndarray] = {}
        if stepper == "native":
            threads = available_cores() if num_threads is None else num_threads
            # Contact forces are computed on each step's own MjData (persistent); without
            # them a batch that keeps one MjData per thread steps faster (mjbatch).
            self._batch = batch = NativeBatch(
                m, k, min(threads, k), persistent=family.uses_contact_forces
            )
            self.num_threads = batch.nthread
            self._qpos, self._qvel, self._ctrl_rows = batch.qpos, batch.qvel, batch.ctrl
            if family.position_from_xpos:
                self._xpos = batch.output("xpos").reshape(k, m.nbody, 3)
            if family.uses_contact_forces:
                self._cfrc = batch.output("cfrc_ext").reshape(k, m.nbody, 6)
            for name, shape in self._field_shapes.items():
                self._fields[name] = batch.output(name).reshape(k, *shape)
            self._model_rows = {name: batch.expand(name) for name in family.rand_params}
        else:
            self.num_threads = 1
            # Each simulation its own model where the task changes the dynamics.
            self._models = [copy.deepcopy(m) for _ in range(k)] if per_sim_models else [m] * k
            self._datas = [mujoco.MjData(m) for _ in range(k)]
            # Cached views into each MjData: valid for its lifetime (MuJoCo never
            # reallocates), and they spare the attribute lookups in the hot loop.
            self._ctrl = [d.ctrl for d in self._datas]
            self._gather_views: list[tuple[list[np.ndarray], np.ndarray]] = []
            self._qpos = self._gathered([d.qpos for d in self._datas], (k, m.nq))
            self._qvel = self._gathered([d.qvel for d in self._datas], (k, m.nv))
            if family.position_from_xpos:
                self._xpos = self._gathered([d.xpos for d in self._datas], (k, m.nbody, 3))
            if family.uses_contact_forces:
                self._cfrc = self._gathered([d.cfrc_ext for d in self._datas], (k, m.nbody, 6))
            for name, shape in self._field_shapes.items():
                views = [getattr(d, name) for d in self._datas]
                self._fields[name] = self._gathered(views, (k, *shape))
        self._running = np.ones(k, dtype=bool)
        self._active: np.ndarray | None = None  # None: every env is running
        self._needs_reset = True
        self._closed = False
        self.set_tasks([family.default_task()] * k)

    def _gathered(self, views: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
        """A ``shape`` buffer that :meth:`_gather` fills from ``views`` (loop stepper)."""
        flat = np.zeros(int(np.prod(shape)))
        self._gather_views.append(([v.reshape(-1) for v in views], flat))
        return flat.reshape(shape)

    def _gather(self) -> None:
        if self._batch is None:
            for views, flat in self._gather_views:
                np.concatenate(views, out=flat)

    def _apply_tasks(self, tasks: list[Task]) -> None:
        self._params = self.family._task_params(tasks)
        if self.family.rand_params:
            self._scale_models(tasks)

    def _scale_models(self, tasks: list[Task]) -> None:
        """Each simulation's model fields as the single env writes them (nominal × scale,
        then ``mj_setConst``); the simulations' states are kept."""
        scales = [self.family._model_scales(t) for t in tasks]
        if self._batch is not None:
            for name, rows in self._model_rows.items():
                for k, scale in enumerate(scales):
                    rows[k] = self._nominal[name] * scale[name]
            # mjb_setConst leaves the state rows as they are (tested).
            self._batch.set_const()
            return
        for model, data, scale in zip(self._models, self._datas, scales, strict=True):
            for name, factor in scale.items():
                field = getattr(model, name)
                field[...] = (self._nominal[name] * factor).reshape(field.shape)
            with _state_kept(model, data):
                mujoco.mj_setConst(model, data)

    def _position(self) -> np.ndarray:
        return self.family._position(self._qpos, self._xpos, self._fields).copy()

    def _observation(self) -> np.ndarray:
        return self.family._observe(self._qpos, self._qvel, self._cfrc, self._fields)

    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every env; env ``k`` as the single env's ``reset(seed=seed[k])``.

        Returns:
            Observations ``[K, obs_dim]`` (float64) and an empty info dict.
        """
        if self._closed:
            raise gym.error.ClosedEnvironmentError("the batched env is closed")
        start = self.family._reset_state
        # As Gymnasium's Env.reset: a seed re-creates env k's generator, None keeps it.
        self._reseed(seed)
        rngs = self._generators()
        # v5's MujocoEnv.reset + reset_model + set_state, draw for draw:
        # mj_resetData, qpos and qvel with noise, mj_forward.
        if self._batch is not None:
            self._batch.reset(stage=0)
            for k, rng in enumerate(rngs):
                self._qpos[k], self._qvel[k] = start(rng, self._init_qpos, self._init_qvel)
            self._batch.forward()
        else:
            for m, d, rng in zip(self._models, self._datas, rngs, strict=True):
                mujoco.mj_resetData(m, d)
                d.qpos[:], d.qvel[:] = start(rng, self._init_qpos, self._init_qvel)
                mujoco.mj_forward(m, d)
        self._elapsed = 0
        self._needs_reset = False
        self._running[:] = True
        self._active = None
        self._gather()
        return self._observation(), {}

    def _simulate(self, actions: np.ndarray) -> None:
        """``ctrl ← action``, ``frame_skip`` MuJoCo steps (and ``mj_rnePostConstraint``
        where contact forces are read) on every running env."""
        nstep, active = self.frame_skip, self._active
        contact = self.family.uses_contact_forces
        if active is not None and len(active) == 0:
            return
        if self._batch is not None:
            # Rows of terminated envs get controls too; they are not stepped.
            self._ctrl_rows[...] = actions
            self._batch.step(active, nstep=nstep)
            if contact:
                self._batch.rne_post_constraint(active)
            return
        models, datas, ctrl = self._models, self._datas, self._ctrl
        indices = range(self.num_envs) if active is None else active.tolist()
        if contact:
            for k in indices:
                ctrl[k][:] = actions[k]
                mujoco.mj_step(models[k], datas[k], nstep=nstep)
                mujoco.mj_rnePostConstraint(models[k], datas[k])
        else:
            # cfrc_ext is an output nothing reads here, so skip its computation.
            for k in indices:
                ctrl[k][:] = actions[k]
                mujoco.mj_step(models[k], datas[k], nstep=nstep)

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every running env with ``actions[k]``.

        Args:
            actions: ``[K, act_dim]``; values outside the action space are
                clamped by MuJoCo for the dynamics (as in the single env).

        Returns:
            observations ``[K, obs_dim]`` float64, rewards ``[K]`` float64,
            terminated ``[K]``, truncated ``[K]`` and an info dict of ``[K]``
            arrays (the reward terms).
        """
        if self._needs_reset:
            raise gym.error.ResetNeeded("call reset() before step()")
        actions = self._check_actions(actions)
        pos_before = self._position()
        self._simulate(actions)
        self._gather()
        rows = self._active
        if rows is None:
            tr = Transition(
                action=actions,
                pos_before=pos_before,
                pos_after=self._position(),
                qpos=self._qpos,
                qvel=self._qvel,
                cfrc_ext=self._cfrc,
                dt=self.dt,
            )
            rewards, terminated, info = self.family._evaluate(self._params, tr)
            observations = self._observation()
        else:
            rewards, terminated, info, observations = self._evaluate_rows(rows, actions, pos_before)
        if terminated.any():
            self._running &= ~terminated
            self._active = np.flatnonzero(self._running).astype(np.int32)
        return observations, rewards, terminated, self._time_limit(), info

    def _evaluate_rows(
        self, rows: np.ndarray, actions: np.ndarray, pos_before: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """Rewards, terminations, info and observations of the running envs ``rows``
        only, scattered into ``[K]`` arrays (zero elsewhere: an ended env's outputs are
        not read). The families compute row by row, so each row has the bits it would
        have in the whole batch; once most Ant episodes have ended this skips most of
        the work."""
        k = self.num_envs
        cfrc = None if self._cfrc is None else self._cfrc[rows]
        qpos, qvel = self._qpos[rows], self._qvel[rows]
        tr = Transition(
            action=actions[rows],
            pos_before=pos_before[rows],
            pos_after=self._position()[rows],
            qpos=qpos,
            qvel=qvel,
            cfrc_ext=cfrc,
            dt=self.dt,
        )
        part_rewards, part_terminated, part_info = self.family._evaluate(self._params[rows], tr)
        fields = {name: value[rows] for name, value in self._fields.items()}
        part_obs = self.family._observe(qpos, qvel, cfrc, fields)

        def scattered(part: np.ndarray) -> np.ndarray:
            full = np.zeros((k, *part.shape[1:]), dtype=part.dtype)
            full[rows] = part
            return full

        info = {name: scattered(np.asarray(v)) for name, v in part_info.items()}
        return (
            scattered(part_rewards),
            scattered(part_terminated),
            info,
            scattered(part_obs),
        )

    def close(self, **kwargs: Any) -> None:
        self._closed = True
        self._needs_reset = True
        if self._batch is not None:
            # Drop the views into the batch's memory before freeing it.
            self._qpos = self._qvel = self._ctrl_rows = np.zeros((self.num_envs, 0))
            self._xpos = self._cfrc = None
            self._fields, self._model_rows = {}, {}
            self._batch.close()
            self._batch = None
