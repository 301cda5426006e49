"""The evaluation protocol: settings, runs, held-out tasks, step sizes and seeds.

The rules themselves (which tasks, which step sizes, which seeds) are stated in
:mod:`maml_rl.evaluation`; this module implements them.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from maml_rl.agents.policies import Policy
from maml_rl.checkpoint import checkpoint_path, load_checkpoint
from maml_rl.config import Config, config_from_dict
from maml_rl.evaluation.report import TaskSetEntry, run_label
from maml_rl.factories import build_policy
from maml_rl.seeding import eval_seed_sequence, iteration_seeds, seed_int
from maml_rl.tasks import Task, TaskFamily, family_class, sample_training_tasks

__all__ = [
    "EvalSettings",
    "LoadedRun",
    "TaskSet",
    "check_same_family",
    "default_fast_lr_schedule",
    "finite_task_set",
    "held_out_tasks",
    "horizon",
    "load_run",
    "parse_fast_lr_schedule",
    "parse_multipliers",
    "sampler_seeds",
    "step_learning_rates",
    "training_task_batches",
    "training_tasks",
]

# Spawn keys of the evaluation's random streams (children of SeedSequence([TAG, seed])),
# one per purpose so that no two share a stream.
TASKS_STREAM = 0
ROLLOUTS_STREAM = 1
RANDOM_INIT_STREAM = 2
PRETRAINED_STREAM = 3
ORACLE_STREAM = 4
SB3_STREAM = 5


# -- user input ------------------------------------------------------------------------------


def _parse_positive_numbers(
    text: str | Sequence[float], option: str, what: str, example: str
) -> tuple[float, ...]:
    """Parse a comma-separated list (or a sequence) of finite numbers > 0 given to
    ``option``; every error is one line naming the option and the bad item."""
    items: Sequence[Any] = text.split(",") if isinstance(text, str) else text
    out = []
    for item in items:
        try:
            value = float(item.strip() if isinstance(item, str) else item)
        except (TypeError, ValueError):
            raise ValueError(
                f"{option} must be comma-separated {what} like {example}, "
                f"got {text!r} ({item!r} is not a number)"
            ) from None
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{option} {what} must be finite and > 0, got {item!r} in {text!r}")
        out.append(value)
    if not out:
        raise ValueError(f"{option} is empty; give {what} like {example}")
    return tuple(out)


def parse_fast_lr_schedule(text: str | Sequence[float]) -> tuple[float, ...]:
    """Parse ``"0.1,0.05"`` (or a sequence) into inner step sizes, all finite and > 0."""
    return _parse_positive_numbers(text, "--fast-lr-schedule", "step sizes", "0.1,0.05")


def parse_multipliers(text: str | Sequence[float]) -> tuple[float, ...]:
    """Parse SB3 budget multipliers ``"1,10,100"``: finite numbers > 0."""
    return _parse_positive_numbers(text, "--sb3-multipliers", "multipliers", "1,10,100")


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer ≥ {low}, got {value!r}")
    return int(value)


# -- step sizes and seeds --------------------------------------------------------------------


def default_fast_lr_schedule(fast_lr: float) -> tuple[float, ...]:
    """The MAML paper's test-time rule: ``fast_lr`` for the first step, half after."""
    return (fast_lr, fast_lr / 2.0)


def step_learning_rates(schedule: Sequence[float], adapt_steps: int) -> list[float]:
    """The step size of each of ``adapt_steps`` steps (the schedule's last entry repeats)."""
    return [schedule[min(k, len(schedule) - 1)] for k in range(adapt_steps)]


def sampler_seeds(seed: int, adapt_steps: int) -> list[int]:
    """The seeds of a curve's ``K + 1`` sample calls: the same for every method, so that
    on a given task all start from the same states with the same action noise."""
    return [seed_int(eval_seed_sequence(seed, ROLLOUTS_STREAM, k)) for k in range(adapt_steps + 1)]


# -- settings --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """What :func:`~maml_rl.evaluation.evaluate` measures. ``None`` fields default from
    the (first) run.

    Attributes:
        env_id: the family the runs must have been trained on (``None``: any one).
        num_tasks: evaluation tasks ``N``.
        adapt_steps: adaptation steps ``K`` (curves have ``K + 1`` points).
        episodes_per_step: ``E``; default: the run's ``eval.episodes_per_step``, else
            its ``maml.fast_batch_size``.
        fast_lr_schedule: step sizes (last repeats); default: the run's
            ``eval.fast_lr_schedule``, else its ``fast_lr`` then half of it.
        baselines: names in :data:`~maml_rl.evaluation.baselines.BASELINES`.
        seed: the evaluation seed (tasks, rollouts, baseline initialisation).
        sampler: sampler backend; default: the run's.
        num_workers: sampler workers; default: the run's.
        pretrain_iterations: TRPO iterations of the pretrained and oracle baselines;
            default: the (longest) run's completed meta-iterations.
        sb3_multipliers: SB3 PPO budgets as multiples of the adaptation budget
            ``K · E · horizon``.
        sb3_tasks: run SB3 PPO on the first this many evaluation tasks (``None``: all).
        progress: show progress bars (tqdm, on stderr).
        video_tasks: render videos of adaptation for the first this many evaluation tasks
            (0: none; :mod:`maml_rl.evaluation.video`).
    """

    env_id: str | None = None
    num_tasks: int = 40
    adapt_steps: int = 3
    episodes_per_step: int | None = None
    fast_lr_schedule: tuple[float, ...] | None = None
    baselines: tuple[str, ...] = ()
    seed: int = 0
    sampler: str | None = None
    num_workers: int | None = None
    pretrain_iterations: int | None = None
    sb3_multipliers: tuple[float, ...] = (1.0, 10.0, 100.0)
    sb3_tasks: int | None = None
    progress: bool = True
    video_tasks: int = 0

    def __post_init__(self) -> None:
        # The registry sits above the settings (its runners take them), hence imported here.
        from maml_rl.evaluation.baselines import BASELINES, parse_baselines

        _check_int("num_tasks", self.num_tasks, 1)
        if isinstance(self.adapt_steps, bool) or not isinstance(self.adapt_steps, int):
            raise ValueError(f"adapt_steps must be an integer ≥ 0, got {self.adapt_steps!r}")
        if self.adapt_steps < 0:
            raise ValueError(
                f"--adapt-steps must be ≥ 0 (0 evaluates without adaptation), got "
                f"{self.adapt_steps}"
            )
        if self.episodes_per_step is not None:
            _check_int("episodes_per_step", self.episodes_per_step, 1)
        if self.fast_lr_schedule is not None:
            object.__setattr__(
                self, "fast_lr_schedule", parse_fast_lr_schedule(self.fast_lr_schedule)
            )
        object.__setattr__(self, "baselines", parse_baselines(self.baselines))
        _check_int("seed", self.seed, 0)
        if self.num_workers is not None:
            _check_int("num_workers", self.num_workers, 1)
        if self.pretrain_iterations is not None:
            _check_int("pretrain_iterations", self.pretrain_iterations, 1)
        object.__setattr__(self, "sb3_multipliers", parse_multipliers(self.sb3_multipliers))
        if self.sb3_tasks is not None:
            _check_int("sb3_tasks", self.sb3_tasks, 1)
        _check_int("video_tasks", self.video_tasks, 0)
        for name in self.baselines:
            BASELINES[name].check(self)


# -- runs ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LoadedRun:
    """A meta-trained policy from a checkpoint.

    Attributes:
        label: a short name for plots and ``eval.json`` (the run folder's name).
        path: the checkpoint file.
        config: the run's config.
        policy_state: the policy's ``state_dict``.
        iteration: meta-iterations completed.
        env_steps: environment steps of training so far.
    """

    label: str
    path: Path
    config: Config
    policy_state: Mapping[str, torch.Tensor]
    iteration: int
    env_steps: int

    def policy(self) -> Policy:
        """The meta-trained policy ``θ`` (built from the config, weights loaded)."""
        policy = build_policy(self.config)
        try:
            policy.load_state_dict(self.policy_state)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ValueError(
                f"checkpoint {str(self.path)!r} does not fit its config's policy: {first}"
            ) from None
        return policy


def load_run(path: str | Path) -> LoadedRun:
    """Load a run folder or checkpoint file for evaluation.

    Raises:
        ValueError: one line — missing, corrupt or incomplete checkpoint, or an
            invalid stored config.
    """
    state = load_checkpoint(path)
    file = checkpoint_path(path)
    try:
        config = config_from_dict(state["config"])
    except ValueError as exc:
        raise ValueError(f"checkpoint {str(file)!r} holds an invalid config: {exc}") from None
    if not isinstance(state["policy"], Mapping):
        raise ValueError(f"checkpoint {str(file)!r} has no policy weights")
    return LoadedRun(
        label=run_label(file),
        path=file,
        config=config,
        policy_state=state["policy"],
        iteration=int(state["iteration"]),
        env_steps=int(state["env_steps"]),
    )


def check_same_family(runs: Sequence[LoadedRun], env_id: str | None) -> str:
    """The family of ``runs`` (all must share it, and ``env_id`` if given, and the env
    settings); a one-line ``ValueError`` otherwise."""
    wanted = env_id if env_id is not None else runs[0].config.env.id
    if env_id is not None:
        _family(env_id)  # an unknown id fails with a suggestion
    for run in runs:
        got = run.config.env.id
        if got != wanted:
            if env_id is not None:
                raise ValueError(
                    f"checkpoint {str(run.path)!r} was trained on {got}, not the requested "
                    f"family {wanted}; pass --env {got} (or no --env)"
                )
            raise ValueError(
                f"checkpoint {str(run.path)!r} was trained on {got}, not the first run's family "
                f"{wanted}; evaluate runs of one family together"
            )
        if (run.config.env.kwargs, run.config.env.max_episode_steps) != (
            runs[0].config.env.kwargs,
            runs[0].config.env.max_episode_steps,
        ):
            raise ValueError(
                f"checkpoint {str(run.path)!r} uses other env settings (env.kwargs / "
                f"env.max_episode_steps) than {str(runs[0].path)!r}; they are not comparable"
            )
    return wanted


# -- tasks -----------------------------------------------------------------------------------


def _family(env_id: str) -> type[TaskFamily]:
    """The class of a registered task family (a clear error for an unknown id)."""
    return cast(type[TaskFamily], family_class(env_id))


def horizon(config: Config, env_id: str) -> int:
    """The episode length of a run's env: its ``env.max_episode_steps``, else the family's."""
    return config.env.max_episode_steps or int(_family(env_id).horizon)


def training_task_batches(config: Config, iterations: int) -> Iterator[list[Task]]:
    """The tasks of each of a run's first ``iterations`` meta-iterations, in order.

    Replayed from the trainer's own seeding (:func:`maml_rl.seeding.iteration_seeds`),
    without any rollout; the pretrained and oracle baselines train on these too.
    """
    family = _family(config.env.id)
    for i in range(iterations):
        rng, _, _ = iteration_seeds(config.seed, i, config.maml.num_adapt_steps + 1)
        yield sample_training_tasks(family, config.maml.meta_batch_size, rng)


def training_tasks(config: Config, iterations: int) -> list[Task]:
    """The tasks a run with ``config`` meets in its first ``iterations`` iterations."""
    return [task for tasks in training_task_batches(config, iterations) for task in tasks]


def finite_task_set(task_cls: type[Task]) -> list[Task] | None:
    """All tasks of a family whose every field is one of finitely many ``choices``."""
    fields = [f.name for f in dataclasses.fields(task_cls)]
    if not fields or not all(name in task_cls.choices for name in fields):
        return None
    combos = itertools.product(*(task_cls.choices[name] for name in fields))
    return [task_cls(**dict(zip(fields, values, strict=True))) for values in combos]


@dataclasses.dataclass(frozen=True)
class TaskSet:
    """The evaluation tasks and how they were chosen.

    Attributes:
        tasks: the ``N`` tasks.
        held_out: whether they are disjoint from the training tasks (False for a
            finite family, where no held-out task exists).
        rule: one sentence on how they were chosen (written to ``eval.json``).
        training_tasks_checked: number of training tasks compared against.
        redrawn: evaluation tasks re-drawn because they equalled a training task.
    """

    tasks: list[Task]
    held_out: bool
    rule: str
    training_tasks_checked: int
    redrawn: int

    def to_dict(self) -> TaskSetEntry:
        return {
            "held_out": self.held_out,
            "rule": self.rule,
            "num_tasks": len(self.tasks),
            "training_tasks_checked": self.training_tasks_checked,
            "redrawn": self.redrawn,
        }


def held_out_tasks(env_id: str, num_tasks: int, seed: int, exclude: Iterable[Task] = ()) -> TaskSet:
    """``num_tasks`` evaluation tasks from the evaluation seed stream, none in ``exclude``.

    See :mod:`maml_rl.evaluation` for the rule, including finite families.

    Args:
        env_id: the task family.
        num_tasks: ``N ≥ 1``.
        seed: the evaluation seed.
        exclude: the training tasks (an exact match is re-drawn).
    """
    num_tasks = _check_int("num_tasks", num_tasks, 1)
    family = _family(env_id)
    excluded = set(exclude)
    test_set = family.test_tasks()
    if test_set:
        rng = np.random.default_rng(eval_seed_sequence(seed, TASKS_STREAM))
        if num_tasks <= len(test_set):
            picks = rng.choice(len(test_set), size=num_tasks, replace=False)
            how = f"{num_tasks} of them drawn without replacement from the evaluation seed stream"
        else:
            picks = np.arange(num_tasks) % len(test_set)
            how = f"every one of them, repeated up to {num_tasks} with its own episodes"
        return TaskSet(
            tasks=[test_set[int(i)] for i in picks],
            held_out=True,
            rule=f"the family's fixed test set ({len(test_set)} tasks): {how}",
            training_tasks_checked=len(excluded),
            redrawn=0,
        )
    finite = finite_task_set(family.task_cls)
    if finite is not None:
        repeats = -(-num_tasks // len(finite))
        return TaskSet(
            tasks=finite * repeats,
            held_out=False,
            rule=(
                f"{env_id} has only {len(finite)} tasks, so none is held out: every task is "
                f"evaluated, each {repeats}× with its own episodes"
            ),
            training_tasks_checked=len(excluded),
            redrawn=0,
        )
    rng = np.random.default_rng(eval_seed_sequence(seed, TASKS_STREAM))
    tasks: list[Task] = []
    redrawn = 0
    while len(tasks) < num_tasks:
        for task in family.sample_tasks(num_tasks - len(tasks), rng):
            if task in excluded:
                redrawn += 1
            else:
                tasks.append(task)
        if redrawn > 1000 * num_tasks:
            raise ValueError(
                f"{env_id}: could not draw {num_tasks} evaluation tasks unseen in training "
                f"({redrawn} draws were training tasks); the family has too few distinct tasks"
            )
    return TaskSet(
        tasks=tasks,
        held_out=True,
        rule=(
            "drawn from the evaluation seed stream (disjoint from the trainer's); exact "
            "matches with the replayed training tasks are re-drawn"
        ),
        training_tasks_checked=len(excluded),
        redrawn=redrawn,
    )
