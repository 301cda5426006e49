"""Oracle families: a registered task family that also *observes* its task.

``oracle_env_id("MetaRL/Navigation2D-v0")`` registers (once) and returns
``MetaRLOracle/Navigation2D-v0``: the base family with the current task's fields
(:func:`task_vector`) appended to every observation. Its dynamics, rewards, task
distribution, time limit and seeding are exactly the base family's; only the
observation grows by :func:`task_dim` components, bounded where the task's fields are
(a declared range, or the extremes of its finite choices; ±inf otherwise). A policy
trained on it no longer has to infer the task from rewards: it is the MAML paper's
*oracle* baseline, and shows what knowing the task is worth.

The oracle family is registered like any other (so the sampler, its worker processes
and Ray actors build it by id) and is natively batched wherever its base family is
(:class:`BatchedTaskObservation`). The generated classes resolve by name in this
module (:func:`__getattr__`), so they pickle by reference into fresh workers.
:class:`TaskObservation` is the same observation as a plain Gymnasium wrapper.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from maml_rl.adapters import OpaqueTask
from maml_rl.tasks import (
    Task,
    TaskFamily,
    family_class,
    family_spec,
    register_family,
    unwrap_family,
)
from maml_rl.vector import BatchedTaskEnv, make_task_env

__all__ = [
    "BatchedTaskObservation",
    "TaskObservation",
    "oracle_env_id",
    "task_dim",
    "task_vector",
]

#: Namespace suffix of the oracle families: ``MetaRL/Navigation2D-v0`` is observed with
#: its task as ``MetaRLOracle/Navigation2D-v0``.
ORACLE_SUFFIX = "Oracle"


# -- the task as an observation ---------------------------------------------------------


def task_vector(task: Task) -> np.ndarray:
    """A task's fields as one flat float64 vector, in field order (tuples flattened)."""
    parts: list[float] = []
    for f in dataclasses.fields(task):
        value = getattr(task, f.name)
        parts.extend(value if isinstance(value, tuple) else (value,))
    return np.asarray(parts, dtype=np.float64)


def task_dim(task_cls: type[Task]) -> int:
    """Length of :func:`task_vector` for tasks of ``task_cls``."""
    return sum(task_cls.shapes.get(f.name, 1) for f in dataclasses.fields(task_cls))


def _task_bounds(task_cls: type[Task]) -> tuple[np.ndarray, np.ndarray]:
    """Per-component bounds of :func:`task_vector` (±inf where the task declares none)."""
    low: list[float] = []
    high: list[float] = []
    for f in dataclasses.fields(task_cls):
        n = task_cls.shapes.get(f.name, 1)
        if f.name in task_cls.bounds:
            lo, hi = task_cls.bounds[f.name]
        elif f.name in task_cls.choices:
            lo, hi = min(task_cls.choices[f.name]), max(task_cls.choices[f.name])
        else:
            lo, hi = -math.inf, math.inf
        low += [lo] * n
        high += [hi] * n
    return np.asarray(low), np.asarray(high)


def _augmented_space(space: gym.Space, task_cls: type[Task]) -> gym.spaces.Box:
    if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
        raise ValueError(f"the oracle appends the task to a flat Box observation, got {space}")
    low, high = _task_bounds(task_cls)
    return gym.spaces.Box(
        np.concatenate([space.low, low]).astype(space.dtype),
        np.concatenate([space.high, high]).astype(space.dtype),
        dtype=space.dtype,
    )


class TaskObservation(gym.ObservationWrapper):
    """Appends the current task's fields (:func:`task_vector`) to the observation.

    Wraps any task-family env; the observation space grows by
    :func:`task_dim` components, bounded where the task's fields are. With it, a
    policy no longer has to infer the task from rewards: the oracle baseline.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.family = unwrap_family(env)
        self._task_cls: type[Task] = type(self.family).task_cls
        self.observation_space = _augmented_space(env.observation_space, self._task_cls)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        dtype = self.observation_space.dtype
        return np.concatenate([observation, task_vector(self.family.task)]).astype(dtype)


class BatchedTaskObservation(BatchedTaskEnv):
    """The batched twin of :class:`TaskObservation`: env ``k`` observes ``tasks[k]``."""

    def __init__(self, base: BatchedTaskEnv) -> None:
        super().__init__(base.num_envs, base.max_episode_steps)
        self.base = base
        self.task_cls = base.task_cls
        self.single_action_space = base.single_action_space
        self.single_observation_space = _augmented_space(
            base.single_observation_space, self.task_cls
        )
        self.action_space = base.action_space
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, self.num_envs
        )
        self._features = np.zeros((self.num_envs, task_dim(self.task_cls)))

    def _apply_tasks(self, tasks: list[Task]) -> None:
        self.base.set_tasks(tasks)
        self._features = np.stack([task_vector(t) for t in tasks])

    def _augment(self, obs: np.ndarray) -> np.ndarray:
        dtype = self.single_observation_space.dtype
        return np.concatenate([obs, self._features], axis=1).astype(dtype)

    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.base.reset(seed=seed, options=options)
        return self._augment(obs), info

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.base.step(actions)
        return self._augment(obs), reward, terminated, truncated, info

    def close(self, **kwargs: Any) -> None:
        self.base.close()


class _OracleFamily(TaskFamily, gym.Env):
    """Base of the generated oracle families: the base family, observing its task.

    A registered family in its own right (so the sampler, its workers and Ray actors
    build it by id like any other); the dynamics, rewards, tasks and seeding are
    exactly the base family's. Subclasses are generated by :func:`oracle_env_id`.
    """

    base_id: ClassVar[str]

    def __init__(self, **kwargs: Any) -> None:
        base_cls = family_class(self.base_id)
        self._base = base_cls(**{**gym.spec(self.base_id).kwargs, **kwargs})
        self._wrapped = TaskObservation(self._base)
        self.observation_space = self._wrapped.observation_space
        self.action_space = self._base.action_space
        self._task = self._base.task

    # All randomness is the base env's: expose its generator as this env's own, so
    # seeding and Gymnasium's checks see one generator.
    @property
    def _np_random(self) -> np.random.Generator | None:
        return self._base._np_random

    @_np_random.setter
    def _np_random(self, value: np.random.Generator | None) -> None:
        self._base._np_random = value

    @property
    def _np_random_seed(self) -> int | None:
        return self._base._np_random_seed

    @_np_random_seed.setter
    def _np_random_seed(self, value: int | None) -> None:
        self._base._np_random_seed = value

    @classmethod
    def sample_tasks(cls, n: int, rng: np.random.Generator) -> list[Task]:
        base: Any = family_class(cls.base_id)
        return base.sample_tasks(n, rng)

    def _apply_task(self, task: Task) -> None:
        self._base.set_task(task)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        return self._wrapped.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        return self._wrapped.step(action)  # type: ignore[return-value]

    def close(self) -> None:
        self._base.close()

    @classmethod
    def make_batched(
        cls, num_envs: int, max_episode_steps: int | None = None, **kwargs: Any
    ) -> BatchedTaskObservation:
        """The base family batched (natively where it can be), observing its tasks."""
        return BatchedTaskObservation(
            make_task_env(cls.base_id, num_envs, max_episode_steps, kwargs)
        )


_CLASS_PREFIX = "_Oracle_"


def _oracle_class(base_id: str) -> type:
    """The oracle family class of ``base_id`` (created once per process).

    Its name encodes ``base_id`` and the module of the base family, and this module
    resolves such names on demand (:func:`__getattr__`), so the class pickles *by
    reference* into fresh sampler worker processes and Ray actors: they import the
    base family's module (which registers it) and recreate the class from the name.
    """
    base_cls = family_class(base_id)
    name = _CLASS_PREFIX + f"{base_id}|{base_cls.__module__}".encode().hex()
    cls = globals().get(name)
    if cls is None:
        cls = type(
            name,
            (_OracleFamily,),
            {
                "__module__": __name__,
                "__qualname__": name,
                "__doc__": f"{base_id} with its task appended to the observation (oracle).",
                "base_id": base_id,
                "task_cls": base_cls.task_cls,  # type: ignore[attr-defined]
                "horizon": base_cls.horizon,  # type: ignore[attr-defined]
                "task_distribution": base_cls.task_distribution,  # type: ignore[attr-defined]
            },
        )
        globals()[name] = cls
    return cls


def __getattr__(name: str) -> Any:
    """Recreate a generated oracle class when a worker unpickles it by name."""
    if name.startswith(_CLASS_PREFIX):
        try:
            base_id, module = bytes.fromhex(name[len(_CLASS_PREFIX) :]).decode().split("|")
        except ValueError:
            pass
        else:
            importlib.import_module(module)  # registers the base family
            return _oracle_class(base_id)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def oracle_env_id(base_id: str) -> str:
    """Register (once) and return the oracle family of a registered task family.

    ``MetaRL/Navigation2D-v0`` → ``MetaRLOracle/Navigation2D-v0``: same dynamics,
    rewards, tasks and time limit, with the task's fields appended to the observation.
    """
    base_id = family_spec(base_id).id  # a clear error for an unknown id; module imported
    base_family: Any = family_class(base_id)
    if issubclass(base_family.task_cls, OpaqueTask):
        raise ValueError(
            f"the oracle observes a task's numeric fields; {base_id} is a duck-typed family "
            "whose tasks are its own values: give it a Task dataclass (subclass "
            "maml_rl.tasks.TaskFamily) to compare against the oracle"
        )
    ns, name, version = gym.envs.registration.parse_env_id(base_id)
    oracle_id = f"{ns}{ORACLE_SUFFIX}/{name}-v{version}"
    if oracle_id not in gym.registry:
        register_family(
            oracle_id,
            _oracle_class(base_id),
            max_episode_steps=gym.spec(base_id).max_episode_steps,
        )
    return oracle_id
