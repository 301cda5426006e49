"""Task families from the user's own modules, by module-qualified id.

* ``"package.module:NS/Name-vK"`` imports the module (which registers the family)
  wherever the id is looked up — trainer, CLI, evaluation, worker processes;
* a family registered with plain ``gymnasium.register`` is taken as it is when its env
  subclasses ``TaskFamily``, and refused with a line naming what it lacks otherwise;
* a module that does not import, an unknown id: one line;
* a family with fixed train / test task sets is meta-trained on the first and
  evaluated on the second;
* a family reporting ``info["success"]`` gets per-step success flags in its batches,
  success rates in the trainer's metrics and in ``maml-rl evaluate``;
* a duck-typed env (``sample_tasks`` / ``set_task`` / ``task``, no ``TaskFamily``) is
  adapted: its own task values, reproducible sampling, workers, evaluation;
* ``examples/line_reacher.py`` trains and evaluates through the CLI, on worker
  processes, and resumes from its stored config.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

from maml_rl.agents.policies import GaussianMLPPolicy
from maml_rl.config import load_config
from maml_rl.envs.navigation import GoalTask2D, Navigation2DEnv
from maml_rl.evaluation import (
    EvalSettings,
    evaluate,
    format_summary,
    held_out_tasks,
    training_tasks,
)
from maml_rl.samplers import make_sampler
from maml_rl.tasks import (
    Task,
    TaskFamily,
    family_class,
    family_ids,
    family_spec,
    make_family,
    register_family,
    sample_training_tasks,
)
from maml_rl.trainer import Trainer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

MODULE = '''
import gymnasium as gym
import numpy as np
from maml_rl.envs.navigation import Navigation2DEnv
from maml_rl.tasks import register_family


class MyNav(Navigation2DEnv):
    """Navigation2D under another name."""


class NotAFamily(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (1,))
    action_space = gym.spaces.Box(-1.0, 1.0, (1,))

    def set_task(self, task):
        pass


register_family("PlugTest/MyNav-v0", MyNav)
gym.register("PlugTest/GymRegistered-v0", entry_point=MyNav, max_episode_steps=7)
gym.register("PlugTest/NotAFamily-v0", entry_point=NotAFamily, max_episode_steps=7)
'''


@pytest.fixture(scope="module")
def plugin_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A module of the user's (not imported yet) that registers three envs."""
    folder = tmp_path_factory.mktemp("plugins")
    name = "maml_rl_test_plugin"
    (folder / f"{name}.py").write_text(textwrap.dedent(MODULE))
    (folder / "broken_plugin.py").write_text("raise RuntimeError('boom\\nsecond line')\n")
    sys.path.insert(0, str(folder))
    yield name
    sys.path.remove(str(folder))


def test_a_module_qualified_id_imports_its_module(plugin_module: str) -> None:
    assert plugin_module not in sys.modules or "PlugTest/MyNav-v0" in family_ids()
    spec = family_spec(f"{plugin_module}:PlugTest/MyNav-v0")
    assert spec.id == "PlugTest/MyNav-v0" and plugin_module in sys.modules
    cls = family_class(f"{plugin_module}:PlugTest/MyNav-v0")
    assert cls.__name__ == "MyNav" and "PlugTest/MyNav-v0" in family_ids()
    env = make_family(f"{plugin_module}:PlugTest/MyNav-v0")
    env.unwrapped.set_task(cls.sample_tasks(1, np.random.default_rng(0))[0])
    assert env.reset(seed=0)[0].shape == (2,)


def test_a_family_registered_with_gymnasium_is_adopted(plugin_module: str) -> None:
    cls = family_class(f"{plugin_module}:PlugTest/GymRegistered-v0")
    assert cls.__name__ == "MyNav"
    assert gym.spec("PlugTest/GymRegistered-v0").max_episode_steps == 7


def _one_line(exc: pytest.ExceptionInfo[ValueError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_bad_modules_and_ids_are_one_line_errors(plugin_module: str) -> None:
    with pytest.raises(ValueError) as exc:
        family_spec(f"{plugin_module}:PlugTest/NotAFamily-v0")
    message = _one_line(exc)
    assert "lacks sample_tasks, task" in message and "TaskFamily" in message
    with pytest.raises(ValueError) as exc:
        family_spec("no_such_module_xyz:PlugTest/MyNav-v0")
    assert "importing module 'no_such_module_xyz' failed (ModuleNotFoundError" in _one_line(exc)
    with pytest.raises(ValueError) as exc:
        family_spec("broken_plugin:PlugTest/MyNav-v0")
    assert "(RuntimeError: boom)" in _one_line(exc)
    with pytest.raises(ValueError) as exc:
        family_spec(f"{plugin_module}:PlugTest/MyNaw-v0")
    assert "did you mean 'PlugTest/MyNav-v0'" in _one_line(exc)
    with pytest.raises(ValueError) as exc:
        family_spec("MyLab/Unregistered-v0")
    assert "'package.module:NS/Name-vK'" in _one_line(exc)
    with pytest.raises(ValueError) as exc:
        family_spec(":MyLab/X-v0")
    assert "must look like" in _one_line(exc)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["maml-rl", *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.slow
def test_the_example_family_trains_and_evaluates_through_the_cli(tmp_path: Path) -> None:
    """The README's plug-in path, as a user runs it: the console script in the example's
    folder (the working folder is importable, as with ``python -m``), process workers."""
    env_id = "line_reacher:MyLab/LineReacher-v0"
    listing = _cli("envs", "--import", "line_reacher", cwd=EXAMPLES)
    assert listing.returncode == 0 and "MyLab/LineReacher-v0" in listing.stdout
    tiny = ["maml.meta_batch_size=3", "maml.fast_batch_size=2", "policy.hidden_sizes=[8, 8]"]
    train = _cli(
        "train", f"env.id={env_id}", "--num-batches", "2", "--sampler", "process",
        "--workers", "2", f"logdir={tmp_path}", "run_name=run", *tiny, cwd=EXAMPLES,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr
    run = tmp_path / "run"
    assert yaml.safe_load((run / "config.yaml").read_text())["env"]["id"] == env_id
    resumed = _cli("train", "--resume", str(run), "num_batches=3", cwd=EXAMPLES)
    assert resumed.returncode == 0, resumed.stderr
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    evaluated = _cli(
        "evaluate", str(run), "--adapt-steps", "1", "--num-tasks", "2",
        "--out", str(tmp_path / "eval"), cwd=EXAMPLES,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    assert (tmp_path / "eval" / "eval.json").is_file()
    # Elsewhere the module is not importable: one line saying so.
    elsewhere = _cli("train", "--resume", str(run), "num_batches=4", cwd=tmp_path)
    assert elsewhere.returncode == 2
    assert elsewhere.stderr.strip().count("\n") == 0
    assert "importing module 'line_reacher' failed" in elsewhere.stderr


# -- fixed train / test task sets ---------------------------------------------------------


class FixedSetNav(Navigation2DEnv):
    """Navigation2D with fixed train and test goals, as a PEARL-style suite defines them."""

    @classmethod
    def train_tasks(cls) -> list[Task]:
        return [GoalTask2D(goal=(0.1 * k, -0.1 * k)) for k in range(5)]

    @classmethod
    def test_tasks(cls) -> list[Task]:
        return [GoalTask2D(goal=(-0.3, 0.05 * k)) for k in range(3)]


FIXED = "PlugTest/FixedSetNav-v0"
register_family(FIXED, FixedSetNav)


def test_meta_training_draws_from_the_train_set_and_evaluation_uses_the_test_set() -> None:
    train, test = FixedSetNav.train_tasks(), FixedSetNav.test_tasks()
    picked = sample_training_tasks(FixedSetNav, 4, np.random.default_rng(0))
    assert len(set(picked)) == 4 and set(picked) <= set(train)  # without replacement
    assert set(sample_training_tasks(FixedSetNav, 12, np.random.default_rng(0))) <= set(train)
    config = load_config(None, [f"env.id={FIXED}", "maml.meta_batch_size=3"])
    replayed = training_tasks(config, 4)
    assert len(replayed) == 12 and set(replayed) <= set(train)

    task_set = held_out_tasks(FIXED, 2, seed=0)
    assert len(task_set.tasks) == 2 and set(task_set.tasks) <= set(test)
    assert task_set.held_out and "fixed test set (3 tasks)" in task_set.rule
    everything = held_out_tasks(FIXED, 5, seed=0)
    assert everything.tasks == [test[k % 3] for k in range(5)]
    assert held_out_tasks(FIXED, 2, seed=0).tasks == task_set.tasks


def test_a_family_without_fixed_sets_samples_as_before() -> None:
    a = sample_training_tasks(Navigation2DEnv, 6, np.random.default_rng(3))
    assert a == Navigation2DEnv.sample_tasks(6, np.random.default_rng(3))
    assert Navigation2DEnv.train_tasks() is None and Navigation2DEnv.test_tasks() is None


# -- success rates -------------------------------------------------------------------------


class SuccessNav(Navigation2DEnv):
    """Navigation2D reporting ``info["success"]`` within 0.15 of the goal (and no
    natively batched version: the generic vector env collects the flag)."""

    reports_success = True
    make_batched = None  # type: ignore[assignment]

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated, truncated, {**info, "success": info["distance"] < 0.15}


SUCCESS = "PlugTest/SuccessNav-v0"
register_family(SUCCESS, SuccessNav)
TINY_RUN = [f"env.id={SUCCESS}", "env.max_episode_steps=10", "maml.meta_batch_size=3",
            "maml.fast_batch_size=4", "policy.hidden_sizes=[8, 8]", "update_threads=1"]  # fmt: skip


def test_success_is_recorded_per_step_and_reported(tmp_path: Path) -> None:
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, (8, 8))
    tasks = SuccessNav.sample_tasks(3, np.random.default_rng(0))
    with make_sampler(SUCCESS, policy, max_episode_steps=10) as sampler:
        batch = sampler.sample(tasks, policy.params(), 4, seed=1)
    assert batch.success is not None and batch.success.shape == batch.rewards.shape
    # The flag is the env's: replay each episode's actions in the registered env.
    for i, task in enumerate(tasks):
        for e in range(4):
            env = make_family(SUCCESS)
            env.unwrapped.set_task(task)
            env.reset(seed=None)
            expected = []
            for t in range(int(batch.lengths[i, e])):
                info = env.step(batch.actions[i, t, e].numpy())[4]
                expected.append(info["success"])
            assert batch.success[i, : len(expected), e].tolist() == expected
    assert batch.episode_success is not None
    assert batch.episode_success.tolist() == batch.success.any(dim=1).float().tolist()

    trainer = Trainer(load_config(None, [*TINY_RUN, "num_batches=2"]), tmp_path / "run",
                      console=False)  # fmt: skip
    metrics = trainer.train()
    trainer.close()
    assert 0.0 <= metrics["rollout/success_pre_adapt"] <= 1.0
    assert 0.0 <= metrics["rollout/success_post_adapt"] <= 1.0

    result = evaluate([tmp_path / "run"], EvalSettings(adapt_steps=1, num_tasks=3), out="")
    success = result["runs"][0]["curve"]["success"]
    assert len(success["mean"]) == 2 and all(0.0 <= m <= 1.0 for m in success["mean"])
    assert "success %" in format_summary(result)


def test_families_that_report_no_success_have_none() -> None:
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, (8, 8))
    tasks = Navigation2DEnv.sample_tasks(2, np.random.default_rng(0))
    with make_sampler("MetaRL/Navigation2D-v0", policy, max_episode_steps=5) as sampler:
        batch = sampler.sample(tasks, policy.params(), 2, seed=1)
    assert batch.success is None and batch.episode_success is None


# -- duck-typed families --------------------------------------------------------------------

DUCK_MODULE = '''
import gymnasium as gym
import numpy as np


class OldStyleNav(gym.Env):
    """Point navigation written for an earlier meta-RL library."""

    def __init__(self, low=-0.5, high=0.5):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Box(-0.1, 0.1, (2,), np.float32)
        self.low, self.high = low, high
        self.set_task({"goal": np.zeros(2)})

    def sample_tasks(self, num_tasks):  # the global generator, as those libraries did
        goals = np.random.uniform(self.low, self.high, size=(num_tasks, 2))
        return [{"goal": goal} for goal in goals]

    def set_task(self, task):
        self.task = task
        self._goal = np.asarray(task["goal"])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._state = np.zeros(2, np.float32)
        return self._state.copy(), {}

    def step(self, action):
        self._state = (self._state + np.clip(action, -0.1, 0.1)).astype(np.float32)
        reward = -float(np.linalg.norm(self._state - self._goal))
        return self._state.copy(), reward, False, False, {"distance": -reward}


class RngNav(OldStyleNav):
    @classmethod
    def sample_tasks(cls, n, rng):
        return [{"goal": g} for g in rng.uniform(-0.5, 0.5, size=(n, 2))]


class Unpicklable(OldStyleNav):
    def sample_tasks(self, num_tasks):
        return [lambda: k for k in range(num_tasks)]


class NoTask(gym.Env):
    def sample_tasks(self, n):
        return [0] * n

    def set_task(self, task):
        pass


gym.register("Duck/OldStyleNav-v0", entry_point=OldStyleNav, max_episode_steps=6)
gym.register("Duck/RngNav-v0", entry_point=RngNav, max_episode_steps=6)
gym.register("Duck/Unpicklable-v0", entry_point=Unpicklable, max_episode_steps=6)
gym.register("Duck/NoTask-v0", entry_point=NoTask, max_episode_steps=6)
gym.register("Duck/NoLimit-v0", entry_point=OldStyleNav)
'''


@pytest.fixture(scope="module")
def duck_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("duck")
    name = "maml_rl_test_duck"
    (folder / f"{name}.py").write_text(textwrap.dedent(DUCK_MODULE))
    sys.path.insert(0, str(folder))
    yield name
    sys.path.remove(str(folder))


def test_a_duck_typed_env_is_adapted_with_its_own_tasks(duck_module: str) -> None:
    duck = f"{duck_module}:Duck/OldStyleNav-v0"
    cls = family_class(duck)
    assert issubclass(cls, TaskFamily) and cls.horizon == 6
    assert cls.task_distribution == "Point navigation written for an earlier meta-RL library."
    np.random.seed(123)  # noqa: NPY002 (the global generator the user's code draws from)
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    a = cls.sample_tasks(4, np.random.default_rng(7))
    b = cls.sample_tasks(4, np.random.default_rng(7))
    # Same generator state, same tasks; NumPy's global generator is left as it was.
    assert np.array_equal(np.random.get_state()[1], before)  # noqa: NPY002
    assert all(np.array_equal(x.value["goal"], y.value["goal"]) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].value["goal"], a[1].value["goal"])
    assert a[0] == b[0] and a[0] != a[1] and len({*a, *b}) == 4  # equal values, equal tasks
    assert all(-0.5 <= g <= 0.5 for t in a for g in t.value["goal"])
    env = make_family(duck)
    family = env.unwrapped
    family.set_task(a[2])
    assert family.env.task is a[2].value  # the user's env gets its own value back
    assert family.task is a[2]
    env.reset(seed=0)
    reward = env.step(np.zeros(2, np.float32))[1]
    assert reward == pytest.approx(-float(np.linalg.norm(a[2].value["goal"])))
    # A plain dict is taken as a task too; the report form is JSON.
    family.set_task({"goal": np.array([0.1, 0.2])})
    assert family.task.to_dict() == {"value": {"goal": [0.1, 0.2]}}
    # register_family takes a duck-typed class as well.
    rng_cls = family_class(f"{duck_module}:Duck/RngNav-v0")
    c = rng_cls.sample_tasks(3, np.random.default_rng(1))
    expected = np.random.default_rng(1).uniform(-0.5, 0.5, size=(3, 2))
    assert np.array_equal(np.stack([t.value["goal"] for t in c]), expected)


def test_duck_typed_envs_missing_parts_are_one_line_errors(duck_module: str) -> None:
    with pytest.raises(ValueError) as exc:
        family_spec(f"{duck_module}:Duck/NoTask-v0")
    assert "lacks task" in _one_line(exc)
    with pytest.raises(ValueError) as exc:
        family_spec(f"{duck_module}:Duck/NoLimit-v0")
    assert "max_episode_steps" in _one_line(exc)
    cls = family_class(f"{duck_module}:Duck/Unpicklable-v0")
    with pytest.raises(ValueError) as exc:
        cls.sample_tasks(2, np.random.default_rng(0))
    assert "must be picklable" in _one_line(exc)
    from maml_rl.envs.oracle import oracle_env_id

    with pytest.raises(ValueError) as exc:
        oracle_env_id(f"{duck_module}:Duck/OldStyleNav-v0")
    assert "duck-typed" in _one_line(exc)


@pytest.mark.slow
def test_a_duck_typed_family_trains_on_workers_and_evaluates(
    duck_module: str, tmp_path: Path
) -> None:
    """Process workers rebuild the adapter from its name (importing the user's module);
    their batch equals the in-process one bit for bit."""
    duck = f"{duck_module}:Duck/OldStyleNav-v0"
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, (8, 8))
    tasks = family_class(duck).sample_tasks(3, np.random.default_rng(0))
    batches = []
    for backend in ("sync", "process"):
        with make_sampler(duck, policy, backend=backend, num_workers=2) as sampler:
            batches.append(sampler.sample(tasks, policy.params(), 2, seed=5))
    assert torch.equal(batches[0].rewards, batches[1].rewards)
    assert torch.equal(batches[0].observations, batches[1].observations)

    run = tmp_path / "run"
    config = load_config(None, [f"env.id={duck}", "maml.meta_batch_size=3",
                                "maml.fast_batch_size=2", "policy.hidden_sizes=[8, 8]",
                                "num_batches=2", "update_threads=1"])  # fmt: skip
    trainer = Trainer(config, run, console=False)
    metrics = trainer.train()
    trainer.close()
    assert np.isfinite(metrics["rollout/return_post_adapt"])
    result = evaluate([run], EvalSettings(adapt_steps=1, num_tasks=2), out="")
    tasks_out = result["tasks"]
    assert len(tasks_out) == 2 and set(tasks_out[0]) == {"value"}
    assert len(tasks_out[0]["value"]["goal"]) == 2
