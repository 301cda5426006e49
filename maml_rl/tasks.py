"""The task-family protocol: what every meta-RL environment in maml-rl offers.

A *task family* is a :class:`gymnasium.Env` whose dynamics or reward depend on a
*task* (a goal position, a target velocity, a direction, ...). On top of the
Gymnasium API it offers

* ``sample_tasks(n, rng) -> list[Task]``: ``n`` tasks drawn from the family's task
  distribution with the given :class:`numpy.random.Generator` (never the global
  ``np.random``), so the same generator state gives the same tasks;
* ``set_task(task)`` and the current ``task``.

Tasks are small frozen dataclasses (subclasses of :class:`Task`): hashable,
picklable, and serialisable with :meth:`Task.to_dict` / :meth:`Task.from_dict`.
Each task class declares its fields' allowed values in ``bounds`` (closed interval
per field) or ``choices`` (a finite set); construction validates them and raises a
one-line :class:`ValueError` naming the field and what is allowed.

A user plugs in a new family by subclassing :class:`TaskFamily` (together with
``gymnasium.Env``) and registering it with :func:`register_family`; nothing in the
sampler, agents or trainer changes.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

import gymnasium as gym
import numpy as np

__all__ = [
    "Task",
    "TaskFamily",
    "family_ids",
    "family_spec",
    "import_families",
    "import_family_module",
    "make_family",
    "register_family",
    "register_unavailable",
    "sample_training_tasks",
]

#: Namespace under which the built-in families are registered.
NAMESPACE = "MetaRL"


def _as_value(name: str, owner: str, value: Any) -> float | tuple[float, ...]:
    """Convert a numpy/torch/list value to a float or a tuple of floats."""
    if isinstance(value, bool):
        raise ValueError(f"{owner}.{name} must be a number, got bool {value!r}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise ValueError(
            f"{owner}.{name} must be a number or a sequence of numbers, "
            f"got {type(value).__name__} {value!r}"
        )
    arr = np.asarray(value)
    if arr.ndim != 1 or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise ValueError(f"{owner}.{name} must be a flat sequence of numbers, got {value!r}")
    return tuple(float(v) for v in arr)


@dataclasses.dataclass(frozen=True)
class Task:
    """Base class of all tasks: a frozen dataclass of float (or float-tuple) fields.

    Subclasses declare fields as ``float`` or ``tuple[float, ...]`` and describe
    their allowed values:

    * ``bounds``: ``{field: (low, high)}``: every component in ``[low, high]``;
    * ``choices``: ``{field: (v1, v2, ...)}``: the value is one of these;
    * ``shapes``: ``{field: n}``: tuple fields must have exactly ``n`` components.
    """

    bounds: ClassVar[Mapping[str, tuple[float, float]]] = {}
    choices: ClassVar[Mapping[str, tuple[float, ...]]] = {}
    shapes: ClassVar[Mapping[str, int]] = {}

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for f in dataclasses.fields(self):
            value = _as_value(f.name, owner, getattr(self, f.name))
            n = self.shapes.get(f.name)
            if n is not None:
                if not isinstance(value, tuple) or len(value) != n:
                    raise ValueError(f"{owner}.{f.name} must have {n} components, got {value!r}")
            elif isinstance(value, tuple):
                raise ValueError(f"{owner}.{f.name} must be a single number, got {value!r}")
            comps = value if isinstance(value, tuple) else (value,)
            if not all(math.isfinite(c) for c in comps):
                raise ValueError(f"{owner}.{f.name} must be finite, got {value!r}")
            if f.name in self.bounds:
                low, high = self.bounds[f.name]
                if not all(low <= c <= high for c in comps):
                    raise ValueError(
                        f"{owner}.{f.name} must lie in [{low:g}, {high:g}], got {value!r}"
                    )
            if f.name in self.choices:
                allowed = self.choices[f.name]
                if value not in allowed:
                    allowed_s = ", ".join(f"{c:g}" for c in allowed)
                    raise ValueError(
                        f"{owner}.{f.name} must be one of {{{allowed_s}}}, got {value!r}"
                    )
            object.__setattr__(self, f.name, value)

    # -- serialisation ---------------------------------------------------------
    def to_dict(self) -> dict[str, float | list[float]]:
        """A JSON-serialisable dict of this task's fields (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build (and validate) a task from a mapping, rejecting unknown or missing keys."""
        if not isinstance(data, Mapping):
            raise ValueError(
                f"a {cls.__name__} must be a {cls.__name__} or a mapping, got {type(data).__name__}"
            )
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(
                    f"unknown {cls.__name__} field {key!r} (fields: {', '.join(names)}){hint}"
                )
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"{cls.__name__} is missing field(s): {', '.join(missing)}")
        return cls(**dict(data))

    @classmethod
    def coerce(cls, task: Any) -> Self:
        """Return ``task`` as an instance of ``cls`` (accepts an instance or a mapping)."""
        if isinstance(task, cls):
            return task
        if isinstance(task, Task):
            raise ValueError(
                f"expected a {cls.__name__}, got a {type(task).__name__} (a task of another family)"
            )
        return cls.from_dict(task)

    @classmethod
    def describe(cls) -> str:
        """A one-line human description of the fields' allowed values."""
        parts = []
        for f in dataclasses.fields(cls):
            if f.name in cls.choices:
                vals = ", ".join(f"{c:g}" for c in cls.choices[f.name])
                parts.append(f"{f.name} ∈ {{{vals}}}")
            elif f.name in cls.bounds:
                low, high = cls.bounds[f.name]
                n = cls.shapes.get(f.name)
                sup = f"^{n}" if n else ""
                parts.append(f"{f.name} ∈ [{low:g}, {high:g}]{sup}")
            else:
                parts.append(f.name)
        return "; ".join(parts)


class TaskFamily:
    """Mixin for a :class:`gymnasium.Env` that is a distribution over tasks.

    Subclasses set ``task_cls`` and implement :meth:`sample_tasks` and
    :meth:`_apply_task` (react to a new task, e.g. store the goal). The initial
    task is ``default_task`` until :meth:`set_task` is called.

    **Fixed task sets.** A benchmark that defines its tasks up front (Meta-World's
    50 train / 50 test goal variations, PEARL-style suites) overrides
    :meth:`train_tasks` and :meth:`test_tasks`: meta-training then draws each
    iteration's tasks from the train set (:func:`sample_training_tasks`), and
    ``maml-rl evaluate`` uses the test set. Without them, training draws from
    :meth:`sample_tasks` and evaluation from a seed stream the trainer never uses.

    Optionally a family offers ``make_batched(num_envs)``: a natively batched
    implementation (:class:`maml_rl.vector.BatchedTaskEnv`) that the
    sampler picks automatically. It must give the same observations, rewards and
    terminations as ``num_envs`` copies of the single env.
    """

    task_cls: ClassVar[type[Task]]
    #: Episode length used when the family is registered (the time limit).
    horizon: ClassVar[int]
    #: One line describing the task distribution (shown by ``maml-rl envs``).
    task_distribution: ClassVar[str]
    #: Whether ``step`` reports ``info["success"]`` (e.g. Meta-World); the sampler then
    #: records it and the trainer and ``maml-rl evaluate`` report success rates.
    reports_success: ClassVar[bool] = False

    _task: Task

    @property
    def task(self) -> Task:
        """The current task."""
        return self._task

    def set_task(self, task: Task | Mapping[str, Any]) -> None:
        """Switch to ``task`` (a task instance or a mapping of its fields); validated."""
        task = self.task_cls.coerce(task)
        self._task = task
        self._apply_task(task)

    def _apply_task(self, task: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @classmethod
    def sample_tasks(cls, n: int, rng: np.random.Generator) -> list[Task]:
        """Draw ``n`` tasks from the task distribution using ``rng`` only."""
        raise NotImplementedError

    @classmethod
    def train_tasks(cls) -> list[Task] | None:
        """The family's fixed meta-training tasks, or ``None`` (draw from the distribution)."""
        return None

    @classmethod
    def test_tasks(cls) -> list[Task] | None:
        """The family's fixed test tasks, or ``None`` (evaluation draws held-out tasks)."""
        return None

    @staticmethod
    def _check_sample_args(n: int, rng: Any) -> None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"number of tasks must be an integer ≥ 0, got {n!r}")
        if not isinstance(rng, np.random.Generator):
            raise ValueError(
                "sample_tasks needs a numpy.random.Generator (e.g. np.random.default_rng(0)), "
                f"got {type(rng).__name__}"
            )


# -- registration ----------------------------------------------------------------

_FAMILIES: dict[str, type] = {}


def register_family(
    env_id: str,
    entry_point: type | str,
    *,
    max_episode_steps: int | None = None,
    disable_env_checker: bool = False,
    **kwargs: Any,
) -> None:
    """Register a task family with Gymnasium under a namespaced, versioned id.

    ``env_id`` must look like ``"Namespace/Name-vK"`` (a change to the dynamics,
    reward or task distribution bumps ``K``). ``entry_point`` is the env class (a
    :class:`TaskFamily` subclass) or a ``"module:Class"`` string. The time limit
    defaults to the class's ``horizon``. ``disable_env_checker`` leaves Gymnasium's
    passive checker out of ``gymnasium.make`` (for spaces it warns about although they
    are right, e.g. Meta-World's zero-width hidden-goal entries). Registering the same
    id twice with the same entry point is a no-op, so modules may be re-imported safely.
    """
    ns, _name, version = gym.envs.registration.parse_env_id(env_id)
    if ns is None or version is None:
        raise ValueError(f"task family ids must look like 'Namespace/Name-vK', got {env_id!r}")
    cls = entry_point
    if isinstance(cls, str):
        cls = gym.envs.registration.load_env_creator(cls)  # type: ignore[assignment]
    if not isinstance(cls, type):
        raise ValueError(f"{env_id}: entry point {entry_point!r} is not a class")
    if not issubclass(cls, TaskFamily):  # duck-typed: registered as it is, then adopted
        if max_episode_steps is None:
            max_episode_steps = getattr(cls, "horizon", None)
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point=cls,  # type: ignore[arg-type]
                max_episode_steps=max_episode_steps,
                kwargs=kwargs,
            )
        _adopt(env_id)
        return
    if max_episode_steps is None:
        max_episode_steps = cls.horizon
    if env_id in gym.registry:
        if _FAMILIES.get(env_id) is cls:
            return
        raise ValueError(f"{env_id} is already registered with another entry point")
    gym.register(
        id=env_id,
        entry_point=cls,  # type: ignore[arg-type]
        max_episode_steps=max_episode_steps,
        disable_env_checker=disable_env_checker,
        kwargs=kwargs,
    )
    _FAMILIES[env_id] = cls


_UNAVAILABLE: dict[str, str] = {}


def register_unavailable(namespace: str, reason: str) -> None:
    """Declare that the families of ``namespace`` need something not installed here.

    An id of that namespace is then refused with ``reason`` (one line saying what to
    install) instead of "unknown task family". :mod:`maml_rl.envs` does this for
    ``MetaWorld/`` where the ``metaworld`` extra is missing.
    """
    _UNAVAILABLE[namespace] = reason


def family_ids() -> list[str]:
    """Ids of all registered task families, sorted."""
    import maml_rl.envs  # noqa: F401  (registers the built-in families)

    return sorted(_FAMILIES)


#: The protocol a task family's env class must offer (see the module docstring).
PROTOCOL = ("sample_tasks", "set_task", "task")


def import_family_module(env_id: str) -> str:
    """Import the module of a module-qualified id and return the bare id.

    ``"my_pkg.my_lab:MyLab/Reacher-v0"`` (Gymnasium's ``module:Id`` convention) imports
    ``my_pkg.my_lab`` — which registers the family — and returns ``"MyLab/Reacher-v0"``;
    an id without a module is returned as it is.

    Raises:
        ValueError: the module cannot be imported (one line: the module and the error).
    """
    if not isinstance(env_id, str):
        raise ValueError(f"a task family id must be a string, got {type(env_id).__name__}")
    if ":" not in env_id:
        return env_id
    module, _, bare = env_id.partition(":")
    if not module or not bare:
        raise ValueError(f"task family id {env_id!r} must look like 'package.module:NS/Name-vK'")
    import_families(module, f"task family id {env_id!r}: ")
    return bare


def import_families(module: str, context: str = "") -> None:
    """Import ``module`` (which registers task families); any error it raises becomes a
    one-line ``ValueError`` prefixed with ``context``."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # the user's module: whatever it raises, in one line
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(
            f"{context}importing module {module!r} failed ({type(exc).__name__}: {detail}); "
            "is it installed or on PYTHONPATH?"
        ) from None


def _adopt(env_id: str) -> None:
    """Take a family registered with ``gymnasium.register`` (not :func:`register_family`)
    into the task-family registry: a :class:`TaskFamily` env class as it is, a duck-typed
    one (``sample_tasks`` / ``set_task`` / ``task``) through its adapter
    (:mod:`maml_rl.adapters`), which the Gymnasium registration then points at."""
    if env_id in _FAMILIES or env_id not in gym.registry:
        return
    spec = gym.spec(env_id)
    entry = spec.entry_point
    cls = gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
    if isinstance(cls, type) and issubclass(cls, TaskFamily):
        _FAMILIES[env_id] = cls
        return
    from maml_rl import adapters  # the adapter subclasses TaskFamily: imported here

    name = getattr(cls, "__qualname__", repr(cls))
    missing = (
        adapters.missing_protocol(cls, dict(spec.kwargs))
        if isinstance(cls, type)
        else list(PROTOCOL)
    )
    if missing:
        raise ValueError(
            f"{env_id} is registered with Gymnasium but its env {name} lacks "
            f"{', '.join(missing)}: a task family offers sample_tasks(n[, rng]), "
            "set_task(task) and task, or subclasses maml_rl.tasks.TaskFamily; see README, "
            "'Plugging in a task family'"
        )
    if spec.max_episode_steps is None:
        raise ValueError(
            f"{env_id}: register it with max_episode_steps=... (the episode length); "
            "maml-rl samples episodes of a fixed horizon"
        )
    adapter = adapters.adapter_class(
        env_id,
        cls,  # type: ignore[arg-type]
        spec.max_episode_steps,
        dict(spec.kwargs),
    )
    gym.registry[env_id] = dataclasses.replace(spec, entry_point=adapter)  # type: ignore[arg-type]
    _FAMILIES[env_id] = adapter


def family_spec(env_id: str) -> gym.envs.registration.EnvSpec:
    """The Gymnasium spec of a registered task family; unknown ids suggest the closest.

    ``env_id`` may carry the module that registers the family
    (``"package.module:NS/Name-vK"``, see :func:`import_family_module`).
    """
    bare = import_family_module(env_id)
    ids = family_ids()
    _adopt(bare)
    if bare not in _FAMILIES:
        namespace = bare.partition("/")[0] if "/" in bare else None
        if namespace in _UNAVAILABLE:
            raise ValueError(f"{env_id}: {_UNAVAILABLE[namespace]}")
        close = difflib.get_close_matches(bare, ids, n=1, cutoff=0.4)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        where = (
            " (run `maml-rl envs` to list them)"
            if ":" in env_id
            else " (run `maml-rl envs` to list them; a family of your own module: "
            "'package.module:NS/Name-vK')"
        )
        raise ValueError(f"unknown task family {env_id!r}{hint}{where}")
    return gym.spec(bare)


def family_class(env_id: str) -> type:
    """The env class of a registered task family (``env_id`` may carry its module)."""
    return _FAMILIES[family_spec(env_id).id]


def make_family(env_id: str, **kwargs: Any) -> gym.Env:
    """``gymnasium.make`` for a task family, with a clear error for an unknown id or an
    argument the family does not take (a typo in ``env.kwargs``)."""
    spec = family_spec(env_id)
    check_family_kwargs(env_id, kwargs)
    return gym.make(spec.id, **kwargs)


def check_family_kwargs(env_id: str, kwargs: Mapping[str, Any]) -> None:
    """Raise a one-line ``ValueError`` naming any ``env.kwargs`` key the family's constructor
    does not accept, with the closest accepted one, or whose value holds a non-finite
    number (refused as a task's fields are)."""
    for key, value in kwargs.items():
        if not _all_finite(value):
            raise ValueError(f"env.kwargs.{key} must be finite, got {value!r}")
    params = inspect.signature(family_class(env_id)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = sorted(
        name
        for name, p in params.items()
        if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )
    for key in kwargs:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"env.kwargs.{key}: {env_id} takes no argument {key!r}; {hint}"
                f"it takes: {', '.join(accepted) or 'none'}"
            )


def _all_finite(value: Any) -> bool:
    """Whether every number in ``value`` (a number, or lists and mappings of them) is
    finite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Mapping):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_all_finite(v) for v in value)
    return True


def unwrap_family(env: gym.Env) -> TaskFamily:
    """The :class:`TaskFamily` inside a (possibly wrapped) env."""
    inner = env.unwrapped
    if not isinstance(inner, TaskFamily):
        raise ValueError(f"{inner!r} is not a task family")
    return inner


def sample_training_tasks(family: Any, n: int, rng: np.random.Generator) -> list[Task]:
    """``n`` meta-training tasks of ``family``: from its fixed train set when it has one
    (without replacement, or with it when ``n`` exceeds the set), else
    ``family.sample_tasks(n, rng)``."""
    fixed = family.train_tasks() if hasattr(family, "train_tasks") else None
    if not fixed:
        return list(family.sample_tasks(n, rng))
    picks = rng.choice(len(fixed), size=n, replace=n > len(fixed))
    return [fixed[int(i)] for i in picks]


def check_tasks(tasks: Sequence[Any], task_cls: type[Task]) -> list[Task]:
    """Coerce and validate a sequence of tasks for one family."""
    return [task_cls.coerce(t) for t in tasks]
