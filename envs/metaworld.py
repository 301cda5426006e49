"""Meta-World's meta-learning benchmarks (ML1, ML10, ML45) as task families.

Needs the optional extra: ``pip install "maml-rl[metaworld]"``. Meta-World 3.1.1 pins
``mujoco==3.3.0``, so the extra moves MuJoCo back from 4.x (maml-rl runs on both: its
MuJoCo families step their ``MjData`` in a loop where mujoco < 3.17); a separate
virtual environment keeps the main one on MuJoCo 4.

**Ids** (registered by :mod:`maml_rl.envs` only where ``metaworld`` is importable; this
module itself imports ``metaworld`` only when a family is built or its tasks are asked
for, so ``import maml_rl.envs`` never loads it):

* ``MetaWorld/ML1-<env>-v3``, e.g. ``MetaWorld/ML1-reach-v3``, ``MetaWorld/ML1-push-v3``:
  ML1 on any of Meta-World's 50 environments (:data:`ENV_NAMES`; the id's ``<env>`` is
  Meta-World's name without its ``-v3``);
* ``MetaWorld/ML10-v3``: 10 training environments, 5 held-out ones;
* ``MetaWorld/ML45-v3``: 45 training environments, 5 held-out ones.

The ``-v3`` is Meta-World's environment version (its v3 environments). Where the extra
is missing, any ``MetaWorld/`` id is refused with one line saying how to install it.

**Tasks.** The train and test sets are Meta-World's own, built once per process with
the classic API (``metaworld.ML1(env, seed=TASK_SEED)``, ``metaworld.ML10(seed=...)``,
``metaworld.ML45(seed=...)``: ``train_tasks`` / ``test_tasks``). ``gymnasium.make_vec``
is not used: its ML1 path serves the test tasks in the training env (an open upstream
bug). Each Meta-World task is converted to a :class:`MetaWorldTask` (the environment's
index and the task's random vector, exactly), so tasks are small, picklable and
written to ``eval.json`` like any other family's.

**Memory and the pool.** A built Meta-World env holds about 22 MB (its ``MjModel`` and
``MjData``), so a sample call of ``tasks × episodes`` envs needs that many times 22 MB
across the workers (4.4 GB for the preset's 20 × 10). When a family env switches to a
task of another environment (ML10/ML45), it hands its Meta-World env back to a
per-process pool and takes an idle one of the new environment, built only when none
is idle; the pool keeps at most :data:`MAX_IDLE` idle envs (the oldest are closed).
``set_task`` followed by ``reset`` fully determines a Meta-World env's state, so a
pooled env behaves exactly as a fresh one (a test says so).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import pickle
import sys
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from maml_rl.tasks import Task, TaskFamily, register_family

__all__ = [
    "ENV_NAMES",
    "INSTALL_HINT",
    "MAX_IDLE",
    "ML10_TEST",
    "ML10_TRAIN",
    "ML45_TEST",
    "ML45_TRAIN",
    "NAMESPACE",
    "TASK_SEED",
    "ML10Env",
    "ML45Env",
    "MetaWorldTask",
    "ml1_class",
    "ml1_env_id",
    "register_metaworld_families",
]

NAMESPACE = "MetaWorld"

#: The seed handed to Meta-World's benchmark constructors: every run and every
#: evaluation sees the same train and test tasks. (ML1 draws its train goals with this
#: seed and its test goals with seed + 1; ML10/ML45 draw both with it.)
TASK_SEED = 0

#: Episode length: Meta-World's ``max_path_length``.
HORIZON = 500

INSTALL_HINT = (
    "Meta-World is not installed: pip install 'maml-rl[metaworld]' (it pins mujoco==3.3.0, "
    "replacing a newer MuJoCo; a separate virtual environment keeps the main one on MuJoCo 4)"
)

#: Meta-World's 50 v3 environments, in its own order (``ALL_V3_ENVIRONMENTS``); a
#: :class:`MetaWorldTask`'s ``env`` is an index into this list.
ENV_NAMES: tuple[str, ...] = (
    "assembly-v3",
    "basketball-v3",
    "bin-picking-v3",
    "box-close-v3",
    "button-press-topdown-v3",
    "button-press-topdown-wall-v3",
    "button-press-v3",
    "button-press-wall-v3",
    "coffee-button-v3",
    "coffee-pull-v3",
    "coffee-push-v3",
    "dial-turn-v3",
    "disassemble-v3",
    "door-close-v3",
    "door-lock-v3",
    "door-open-v3",
    "door-unlock-v3",
    "hand-insert-v3",
    "drawer-close-v3",
    "drawer-open-v3",
    "faucet-open-v3",
    "faucet-close-v3",
    "hammer-v3",
    "handle-press-side-v3",
    "handle-press-v3",
    "handle-pull-side-v3",
    "handle-pull-v3",
    "lever-pull-v3",
    "pick-place-wall-v3",
    "pick-out-of-hole-v3",
    "pick-place-v3",
    "plate-slide-v3",
    "plate-slide-side-v3",
    "plate-slide-back-v3",
    "plate-slide-back-side-v3",
    "peg-insert-side-v3",
    "peg-unplug-side-v3",
    "soccer-v3",
    "stick-push-v3",
    "stick-pull-v3",
    "push-v3",
    "push-wall-v3",
    "push-back-v3",
    "reach-v3",
    "reach-wall-v3",
    "shelf-place-v3",
    "sweep-into-v3",
    "sweep-v3",
    "window-open-v3",
    "window-close-v3",
)

#: Length of each environment's random vector (object and/or goal positions): 6 or 3.
RAND_VEC_SIZES: dict[str, int] = {
    name: 3
    for name in (
        "button-press-topdown-v3",
        "button-press-topdown-wall-v3",
        "button-press-v3",
        "button-press-wall-v3",
        "coffee-button-v3",
        "dial-turn-v3",
        "door-close-v3",
        "door-lock-v3",
        "door-open-v3",
        "door-unlock-v3",
        "drawer-close-v3",
        "drawer-open-v3",
        "faucet-open-v3",
        "faucet-close-v3",
        "hammer-v3",
        "handle-press-side-v3",
        "handle-press-v3",
        "handle-pull-side-v3",
        "handle-pull-v3",
        "lever-pull-v3",
        "peg-unplug-side-v3",
        "sweep-v3",
        "window-open-v3",
        "window-close-v3",
    )
}
RAND_VEC_SIZES.update({name: 6 for name in ENV_NAMES if name not in RAND_VEC_SIZES})
_VEC = 6  # a MetaWorldTask's rand_vec: the random vector, zero-padded to 6 components

ML10_TRAIN: tuple[str, ...] = (
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "sweep-v3",
    "basketball-v3",
)
ML10_TEST: tuple[str, ...] = (
    "drawer-open-v3",
    "door-close-v3",
    "shelf-place-v3",
    "sweep-into-v3",
    "lever-pull-v3",
)
ML45_TEST: tuple[str, ...] = (
    "bin-picking-v3",
    "box-close-v3",
    "hand-insert-v3",
    "door-lock-v3",
    "door-unlock-v3",
)
#: ML45's training environments, in Meta-World's order (``ML45_V3["train"]``).
ML45_TRAIN: tuple[str, ...] = (
    "assembly-v3",
    "basketball-v3",
    "button-press-topdown-v3",
    "button-press-topdown-wall-v3",
    "button-press-v3",
    "button-press-wall-v3",
    "coffee-button-v3",
    "coffee-pull-v3",
    "coffee-push-v3",
    "dial-turn-v3",
    "disassemble-v3",
    "door-close-v3",
    "door-open-v3",
    "drawer-close-v3",
    "drawer-open-v3",
    "faucet-open-v3",
    "faucet-close-v3",
    "hammer-v3",
    "handle-press-side-v3",
    "handle-press-v3",
    "handle-pull-side-v3",
    "handle-pull-v3",
    "lever-pull-v3",
    "pick-place-wall-v3",
    "pick-out-of-hole-v3",
    "push-back-v3",
    "pick-place-v3",
    "plate-slide-v3",
    "plate-slide-side-v3",
    "plate-slide-back-v3",
    "plate-slide-back-side-v3",
    "peg-insert-side-v3",
    "peg-unplug-side-v3",
    "soccer-v3",
    "stick-push-v3",
    "stick-pull-v3",
    "push-wall-v3",
    "push-v3",
    "reach-wall-v3",
    "reach-v3",
    "shelf-place-v3",
    "sweep-into-v3",
    "sweep-v3",
    "window-open-v3",
    "window-close-v3",
)


# -- the metaworld package, imported on first use -----------------------------------------


@functools.cache
def _metaworld() -> Any:
    """Import ``metaworld`` (one-line ``ValueError`` where it is missing or its MuJoCo
    is not the one it requires)."""
    try:
        import metaworld
    except ImportError as exc:
        raise ValueError(f"{INSTALL_HINT} ({type(exc).__name__}: {exc})") from None
    _check_mujoco_version()
    return metaworld


def _check_mujoco_version() -> None:
    """Meta-World pins an exact MuJoCo; another one fails in its first ``reset``
    (``reset_mocap_welds``: the weld equality data changed size in mujoco 3.17)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover - the extra brings packaging
        raise ValueError(f"Meta-World needs `packaging`: {INSTALL_HINT}") from None
    for line in importlib.metadata.requires("metaworld") or []:
        req = Requirement(line)
        if req.name == "mujoco" and req.marker is None:
            have = importlib.metadata.version("mujoco")
            if not req.specifier.contains(have, prereleases=True):
                raise ValueError(
                    f"metaworld {importlib.metadata.version('metaworld')} requires "
                    f"mujoco{req.specifier}, this environment has mujoco {have}: "
                    f"pip install 'mujoco{req.specifier}' (best in a separate virtual "
                    "environment, see README 'Meta-World')"
                )


# -- tasks ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MetaWorldTask(Task):
    """One Meta-World task: an environment and its random vector.

    ``env`` is the environment's index in :data:`ENV_NAMES`; ``rand_vec`` is the task's
    random vector (Meta-World's ``rand_vec``: the object's and/or the goal's initial
    position, 6 or 3 components, :data:`RAND_VEC_SIZES`), zero-padded to 6 components.
    Together they fix the episode's start state and goal exactly.
    """

    env: float
    rand_vec: tuple[float, ...]

    choices: ClassVar = {"env": tuple(float(i) for i in range(len(ENV_NAMES)))}
    shapes: ClassVar = {"rand_vec": _VEC}

    def __post_init__(self) -> None:
        super().__post_init__()
        n = RAND_VEC_SIZES[self.env_name]
        if any(c != 0.0 for c in self.rand_vec[n:]):
            raise ValueError(
                f"MetaWorldTask.rand_vec of {self.env_name} has {n} components "
                f"(zero-padded to {_VEC}), got {self.rand_vec!r}"
            )

    @property
    def env_name(self) -> str:
        """Meta-World's name of the task's environment (``"reach-v3"``)."""
        return ENV_NAMES[int(self.env)]

    @classmethod
    def from_metaworld(cls, task: Any) -> MetaWorldTask:
        """Convert a Meta-World ``Task`` (``env_name``, pickled ``data``)."""
        data = pickle.loads(task.data)
        vec = np.asarray(data["rand_vec"], dtype=np.float64)
        padded = np.zeros(_VEC)
        padded[: vec.size] = vec
        return cls(env=float(ENV_NAMES.index(task.env_name)), rand_vec=tuple(padded.tolist()))

    def to_metaworld(self) -> Any:
        """This task as a Meta-World ``Task`` for ``SawyerXYZEnv.set_task`` (goal hidden,
        as in every ML benchmark)."""
        mw = _metaworld()
        name = self.env_name
        vec = np.asarray(self.rand_vec[: RAND_VEC_SIZES[name]], dtype=np.float64)
        data = {
            "rand_vec": vec,
            "env_cls": mw.env_dict.ALL_V3_ENVIRONMENTS[name],
            "partially_observable": True,
        }
        return mw.Task(env_name=name, data=pickle.dumps(data))


@functools.cache
def _benchmark_tasks(benchmark: str) -> tuple[tuple[MetaWorldTask, ...], tuple[MetaWorldTask, ...]]:
    """``(train, test)`` tasks of ``"ML10"``, ``"ML45"`` or ``"ML1:<env>"`` (cached)."""
    mw = _metaworld()
    if benchmark.startswith("ML1:"):
        bench = mw.ML1(benchmark[4:], seed=TASK_SEED)
    else:
        bench = getattr(mw, benchmark)(seed=TASK_SEED)
    train = tuple(MetaWorldTask.from_metaworld(t) for t in bench.train_tasks)
    test = tuple(MetaWorldTask.from_metaworld(t) for t in bench.test_tasks)
    return train, test


# -- the pool of built Meta-World envs ----------------------------------------------------

#: Per process: built Meta-World envs no family env holds, oldest first, as
#: ``(name, env)``; at most :data:`MAX_IDLE` (each holds about 22 MB).
_IDLE: list[tuple[str, Any]] = []
MAX_IDLE = 64


def _take_env(name: str) -> Any:
    for k in range(len(_IDLE) - 1, -1, -1):
        if _IDLE[k][0] == name:
            return _IDLE.pop(k)[1]
    env = _metaworld().env_dict.ALL_V3_ENVIRONMENTS[name]()
    # The registered time limit (500, Meta-World's own) ends episodes; Meta-World's
    # counter would otherwise refuse a longer `max_episode_steps` in the middle of one.
    env.max_path_length = sys.maxsize
    return env


def _give_back(name: str, env: Any) -> None:
    _IDLE.append((name, env))
    if len(_IDLE) > MAX_IDLE:
        _IDLE.pop(0)[1].close()


# -- the families --------------------------------------------------------------------------


class _MetaWorldFamily(TaskFamily, gym.Env[np.ndarray, np.ndarray]):
    """Base of the Meta-World families (see the subclasses' docstrings)."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012
    task_cls = MetaWorldTask
    horizon = HORIZON
    reports_success = True
    #: Key of the benchmark in :func:`_benchmark_tasks`.
    benchmark: ClassVar[str]
    train_envs: ClassVar[tuple[str, ...]]
    test_envs: ClassVar[tuple[str, ...]]

    def __init__(self, task: MetaWorldTask | dict[str, Any] | None = None) -> None:
        first = self.train_envs[0]
        self._name = first
        self._env = _take_env(first)
        # Every v3 env has these spaces (39 observations with the goal hidden: its three
        # entries are 0; 4 actions: end-effector displacement and gripper).
        self.observation_space = self._env.sawyer_observation_space
        self.action_space = self._env.action_space
        if task is None:  # ML1's first training task on the family's first environment
            task = _benchmark_tasks(f"ML1:{first}")[0][0]
        self.set_task(task)

    @classmethod
    def train_tasks(cls) -> list[Task]:
        """Meta-World's training tasks of this benchmark (fixed by :data:`TASK_SEED`)."""
        return list(_benchmark_tasks(cls.benchmark)[0])

    @classmethod
    def test_tasks(cls) -> list[Task]:
        """Meta-World's test tasks of this benchmark (fixed by :data:`TASK_SEED`)."""
        return list(_benchmark_tasks(cls.benchmark)[1])

    @classmethod
    def sample_tasks(cls, n: int, rng: np.random.Generator) -> list[Task]:
        """``n`` training tasks drawn with ``rng`` (without replacement while ``n`` is at
        most the set's size), as meta-training draws them."""
        cls._check_sample_args(n, rng)
        fixed = cls.train_tasks()
        picks = rng.choice(len(fixed), size=n, replace=n > len(fixed))
        return [fixed[int(i)] for i in picks]

    def _apply_task(self, task: MetaWorldTask) -> None:
        name = task.env_name
        if name not in self.train_envs and name not in self.test_envs:
            raise ValueError(
                f"{type(self).__name__}: a task of {name} is not in this benchmark "
                f"(its environments: {', '.join(self.train_envs + self.test_envs)})"
            )
        if name != self._name:
            _give_back(self._name, self._env)
            self._env, self._name = _take_env(name), name
        self._env.set_task(task.to_metaworld())

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)  # the start state is the task's: nothing is drawn
        obs, _ = self._env.reset()
        return obs, {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (4,):
            raise ValueError(f"action must have shape (4,), got {action.shape}")
        obs, reward, _, _, info = self._env.step(np.clip(action, -1.0, 1.0))
        info = {**info, "success": bool(info["success"])}
        return obs, float(reward), False, False, info

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


_FAMILY_DOC = """
    ## Observation space
    ``Box((39,), float64)``, Meta-World's: end-effector position (3), gripper opening
    (1), up to two objects' positions and quaternions (14, zero-padded), the same 18 of
    the previous step, and the goal position (3), which the ML benchmarks hide (always
    0). Hand positions are bounded, object entries unbounded.

    ## Action space
    ``Box(-1, 1, (4,), float32)``: end-effector displacement (scaled by 1/100 in the
    mocap) and gripper effort. Actions are clipped to ``[-1, 1]`` before use.

    ## Reward
    Meta-World's v2 reward of the environment (shaped, in ``[0, 10]``), unchanged; its
    terms are in ``info``. ``info["success"]`` is Meta-World's success flag of the step
    (within the environment's tolerance of the goal); an episode succeeds when any of
    its steps does.

    ## Start state
    Fixed by the task: ``set_task`` then ``reset`` places the objects and goal at the
    task's random vector; nothing is drawn at reset (the seed only seeds
    ``np_random``, which the dynamics never use).

    ## Episode end
    Never terminates (Meta-World reports no terminal states); truncated after
    ``horizon = 500`` steps (the registered ``max_episode_steps``, Meta-World's
    ``max_path_length``).
"""


def _ml1_doc(name: str) -> str:
    return (
        f"Meta-World ML1 on ``{name}``: 50 training goals, 50 held-out goals.\n\n"
        f"    Registered as ``{ml1_env_id(name)}``.\n{_FAMILY_DOC}\n"
        "    ## Task distribution\n"
        f"    Fixed sets: ``metaworld.ML1({name!r}, seed={TASK_SEED})``'s ``train_tasks`` (50\n"
        "    goals drawn with seed 0) and ``test_tasks`` (50 drawn with seed 1), the same\n"
        "    environment with other object/goal positions. Meta-training draws each\n"
        "    iteration's tasks uniformly from the train set; ``maml-rl evaluate`` uses the\n"
        "    test set. ``sample_tasks(n, rng)`` draws from the train set. Before\n"
        "    ``set_task`` the task is the first training task.\n"
    )


class ML10Env(_MetaWorldFamily):
    """Meta-World ML10: 10 training environments, 5 held-out environments.

    Registered as ``MetaWorld/ML10-v3``. Training environments: reach, push,
    pick-place, door-open, drawer-close, button-press-topdown, peg-insert-side,
    window-open, sweep, basketball; test environments: drawer-open, door-close,
    shelf-place, sweep-into, lever-pull (:data:`ML10_TRAIN`, :data:`ML10_TEST`).
    """

    benchmark = "ML10"
    train_envs = ML10_TRAIN
    test_envs = ML10_TEST
    task_distribution = (
        f"Meta-World ML10: 10 train envs x 50 goals, 5 test envs x 50 (seed {TASK_SEED})"
    )


class ML45Env(_MetaWorldFamily):
    """Meta-World ML45: 45 training environments, 5 held-out environments.

    Registered as ``MetaWorld/ML45-v3``. Test environments: bin-picking, box-close,
    hand-insert, door-lock, door-unlock; training: the other 45
    (:data:`ML45_TRAIN`, :data:`ML45_TEST`). Building its task sets makes 2,500 resets
    of 50 environments (tens of seconds, once per process).
    """

    benchmark = "ML45"
    train_envs = ML45_TRAIN
    test_envs = ML45_TEST
    task_distribution = (
        f"Meta-World ML45: 45 train envs x 50 goals, 5 test envs x 50 (seed {TASK_SEED})"
    )


_BENCH_DOC = f"""{_FAMILY_DOC}
    ## Task distribution
    Fixed sets: ``metaworld.{{bench}}(seed={TASK_SEED})``'s ``train_tasks`` (50 goals for
    each training environment) and ``test_tasks`` (50 goals for each held-out
    environment). Meta-training draws each iteration's tasks uniformly from all the
    training tasks (not stratified by environment); ``maml-rl evaluate`` uses the test
    tasks, of environments never seen in training. ``sample_tasks(n, rng)`` draws from
    the training tasks. Before ``set_task`` the task is the first training task of ML1
    on the first training environment (which builds only that environment's tasks).
"""
ML10Env.__doc__ = (ML10Env.__doc__ or "") + _BENCH_DOC.format(bench="ML10")
ML45Env.__doc__ = (ML45Env.__doc__ or "") + _BENCH_DOC.format(bench="ML45")


def ml1_env_id(name: str) -> str:
    """The id of ML1 on Meta-World environment ``name``: ``"reach-v3"`` →
    ``"MetaWorld/ML1-reach-v3"``."""
    if name not in ENV_NAMES:
        raise ValueError(f"{name!r} is not a Meta-World v3 environment (one of {ENV_NAMES})")
    return f"{NAMESPACE}/ML1-{name}"


def _ml1_class_name(name: str) -> str:
    return "ML1_" + name.replace("-", "_")


def _make_ml1_class(name: str) -> type:
    cls_name = _ml1_class_name(name)
    return type(
        cls_name,
        (_MetaWorldFamily,),
        {
            "__module__": __name__,
            "__qualname__": cls_name,
            "__doc__": _ml1_doc(name),
            "benchmark": f"ML1:{name}",
            "train_envs": (name,),
            "test_envs": (),
            "task_distribution": f"Meta-World ML1 {name}: 50 train goals, 50 test goals "
            f"(seed {TASK_SEED})",
        },
    )


# One module-level class per ML1 environment (``ML1_reach_v3``, ...): the sampler's
# worker processes and Ray actors unpickle the family class by reference.
for _name in ENV_NAMES:
    globals()[_ml1_class_name(_name)] = _make_ml1_class(_name)
del _name


def ml1_class(name: str) -> type:
    """The family class of ML1 on ``name`` (``"reach-v3"``)."""
    ml1_env_id(name)  # validates the name
    return globals()[_ml1_class_name(name)]


def register_metaworld_families() -> None:
    """Register ML1 on each of the 50 environments, ML10 and ML45 (idempotent).

    Imports nothing of Meta-World: the families import it when they are built.
    Gymnasium's passive checker is left out of ``gymnasium.make``: it warns on every
    make that the hidden goal's entries have equal bounds (they are always 0), and
    ``tests/test_metaworld.py`` runs the full ``check_env`` on the families.
    """
    quiet = {"disable_env_checker": True}
    for name in ENV_NAMES:
        register_family(ml1_env_id(name), ml1_class(name), **quiet)
    register_family(f"{NAMESPACE}/ML10-v3", ML10Env, **quiet)
    register_family(f"{NAMESPACE}/ML45-v3", ML45Env, **quiet)
