"""Duck-typed task families: a plain :class:`gymnasium.Env` with ``sample_tasks``,
``set_task`` and ``task`` (what the earlier meta-RL libraries asked users to write),
taken in without subclassing :class:`~maml_rl.tasks.TaskFamily`.

Such an env is registered as usual (``gymnasium.register`` or
:func:`~maml_rl.tasks.register_family`); when maml-rl looks the id up, it wraps the
env class in a generated :class:`TaskFamily` (:func:`adapter_class`) and points the
Gymnasium registration at it, so ``gymnasium.make(id)`` builds the adapter from then
on. The adapter

* keeps the user's tasks as they are, each inside an :class:`OpaqueTask` (any
  picklable value: a dict, an array, a number, a dataclass); ``set_task`` hands the
  original value to the user's env;
* calls the user's ``sample_tasks`` as it is written: with ``(n, rng)`` when it takes
  two arguments, with ``(n)`` otherwise — then with NumPy's global generator seeded
  from ``rng`` for the call and restored afterwards, so the same seed gives the same
  tasks — on the class when it is a class/static method, else on one instance built
  with the registered kwargs;
* forwards ``reset`` / ``step`` / ``render`` / ``close`` and the spaces; takes the
  user's ``train_tasks()`` / ``test_tasks()`` and ``reports_success`` when present.

The generated class pickles by reference (its name encodes the id and the user's
module), so ``process`` workers and Ray actors rebuild it after importing that module.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pickle
from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from maml_rl.tasks import PROTOCOL, Task, TaskFamily

__all__ = ["OpaqueTask", "adapter_class", "missing_protocol"]


def missing_protocol(cls: Any, kwargs: dict[str, Any]) -> list[str]:
    """What of :data:`PROTOCOL` the env class ``cls`` lacks (``task`` may be set in
    ``__init__`` only: then one instance, built with ``kwargs``, is checked)."""
    missing = [attr for attr in PROTOCOL if not hasattr(cls, attr)]
    if missing == ["task"]:
        try:
            instance = cls(**kwargs)
        except Exception:
            return missing
        if hasattr(instance, "task"):
            missing = []
        close = getattr(instance, "close", None)
        if callable(close):
            close()
    return missing


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return repr(value)


@dataclasses.dataclass(frozen=True, eq=False)
class OpaqueTask(Task):
    """A duck-typed family's task, kept as the user's own (picklable) value.

    Two tasks are equal when their values pickle to the same bytes (so evaluation can
    tell a training task from a held-out one); :meth:`to_dict` gives a JSON-friendly
    copy for reports.
    """

    value: Any

    def __post_init__(self) -> None:
        try:
            key = pickle.dumps(self.value)
        except Exception as exc:
            raise ValueError(
                f"a task of a duck-typed family must be picklable (it travels to worker "
                f"processes), got {type(self.value).__name__}: {exc}"
            ) from None
        object.__setattr__(self, "_key", key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OpaqueTask) and self._key == other._key  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._key)  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        return {"value": _jsonable(self.value)}

    @classmethod
    def coerce(cls, task: Any) -> OpaqueTask:
        if isinstance(task, OpaqueTask):
            return task
        if isinstance(task, Task):
            raise ValueError(f"expected a duck-typed family's task, got a {type(task).__name__}")
        return cls(task)

    @classmethod
    def from_dict(cls, data: Any) -> OpaqueTask:
        return cls(data["value"] if isinstance(data, dict) and set(data) == {"value"} else data)

    @classmethod
    def describe(cls) -> str:
        return "the family's own task values"


class DuckTypedFamily(TaskFamily, gym.Env):
    """Base of the generated adapters: one user env inside, tasks wrapped as
    :class:`OpaqueTask`. Subclasses are made by :func:`adapter_class`."""

    env_id: ClassVar[str]
    env_cls: ClassVar[type]
    registered_kwargs: ClassVar[dict[str, Any]]
    task_cls = OpaqueTask

    def __init__(self, **kwargs: Any) -> None:
        self.env = self.env_cls(**kwargs)
        self.observation_space = self.env.observation_space
        self.action_space = self.env.action_space
        self.metadata = getattr(self.env, "metadata", {"render_modes": []})
        self.render_mode = getattr(self.env, "render_mode", None)
        self._task = OpaqueTask.coerce(getattr(self.env, "task", None))

    # The user's env owns the randomness: seeding the adapter seeds it.
    @property
    def _np_random(self) -> np.random.Generator | None:
        return getattr(self.env, "_np_random", None)

    @_np_random.setter
    def _np_random(self, value: np.random.Generator | None) -> None:
        if isinstance(self.env, gym.Env):
            self.env._np_random = value

    @property
    def _np_random_seed(self) -> int | None:
        return getattr(self.env, "_np_random_seed", None)

    @_np_random_seed.setter
    def _np_random_seed(self, value: int | None) -> None:
        if isinstance(self.env, gym.Env):
            self.env._np_random_seed = value

    def _apply_task(self, task: OpaqueTask) -> None:
        self.env.set_task(task.value)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        return self.env.step(action)

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        close = getattr(self.env, "close", None)
        if callable(close):
            close()

    # -- tasks --------------------------------------------------------------------------
    _prototype: ClassVar[Any] = None

    @classmethod
    def _user_method(cls, name: str) -> Callable[..., Any]:
        """The user's ``name`` method, bound to the class (class/static method) or to a
        prototype instance built once per process with the registered kwargs."""
        if isinstance(inspect.getattr_static(cls.env_cls, name), (classmethod, staticmethod)):
            return getattr(cls.env_cls, name)
        if cls._prototype is None:
            cls._prototype = cls.env_cls(**cls.registered_kwargs)
        return getattr(cls._prototype, name)

    @classmethod
    def sample_tasks(cls, n: int, rng: np.random.Generator) -> list[Task]:
        cls._check_sample_args(n, rng)
        sample = cls._user_method("sample_tasks")
        try:
            takes_rng = len(inspect.signature(sample).parameters) >= 2
        except (TypeError, ValueError):
            takes_rng = False
        if takes_rng:
            values = sample(n, rng)
        else:
            state = np.random.get_state()  # noqa: NPY002 (the user's code draws from it)
            np.random.seed(int(rng.integers(2**32)))  # noqa: NPY002
            try:
                values = sample(n)
            finally:
                np.random.set_state(state)  # noqa: NPY002
        values = list(values)
        if len(values) != n:
            raise ValueError(
                f"{cls.env_id}: {cls.env_cls.__qualname__}.sample_tasks({n}) returned "
                f"{len(values)} tasks"
            )
        return [OpaqueTask.coerce(v) for v in values]

    @classmethod
    def _fixed(cls, name: str) -> list[Task] | None:
        if not hasattr(cls.env_cls, name):
            return None
        values = cls._user_method(name)()
        return None if values is None else [OpaqueTask.coerce(v) for v in values]

    @classmethod
    def train_tasks(cls) -> list[Task] | None:
        return cls._fixed("train_tasks")

    @classmethod
    def test_tasks(cls) -> list[Task] | None:
        return cls._fixed("test_tasks")


_CLASS_PREFIX = "_Duck_"


def adapter_class(env_id: str, env_cls: type, horizon: int, kwargs: dict[str, Any]) -> type:
    """The :class:`TaskFamily` adapter of a duck-typed env class (made once per process).

    Its name encodes ``env_id`` and the module that registers it, and this module
    resolves such names on demand (:func:`__getattr__`), so it pickles by reference into
    worker processes and Ray actors.
    """
    name = _CLASS_PREFIX + f"{env_id}|{env_cls.__module__}".encode().hex()
    cls = globals().get(name)
    if cls is None:
        doc = (inspect.getdoc(env_cls) or "").strip().splitlines()
        cls = type(
            name,
            (DuckTypedFamily,),
            {
                "__module__": __name__,
                "__qualname__": name,
                "__doc__": f"{env_id}: {env_cls.__qualname__} adapted as a task family.",
                "env_id": env_id,
                "env_cls": env_cls,
                "registered_kwargs": dict(kwargs),
                "horizon": horizon,
                "task_distribution": getattr(env_cls, "task_distribution", None)
                or (doc[0] if doc else f"{env_cls.__qualname__}.sample_tasks"),
                "reports_success": bool(getattr(env_cls, "reports_success", False)),
                "_prototype": None,
            },
        )
        globals()[name] = cls
    return cls


def __getattr__(name: str) -> Any:
    """Recreate a generated adapter when a worker unpickles it by name."""
    if name.startswith(_CLASS_PREFIX):
        try:
            env_id, module = bytes.fromhex(name[len(_CLASS_PREFIX) :]).decode().split("|")
        except ValueError:
            pass
        else:
            from maml_rl.tasks import family_class

            importlib.import_module(module)  # registers the user's env
            cls = family_class(env_id)  # adopts it: makes the adapter
            if cls.__name__ == name:
                return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
