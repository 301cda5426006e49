"""Fast adaptation to held-out tasks: the test of a meta-trained policy.

For each of ``N`` evaluation tasks the policy plays ``E`` episodes, takes one
policy-gradient step on them, plays ``E`` new episodes, and so on ``K`` times
(Finn et al., 2017, §5.3): the *adaptation curve*, the mean return after
``0, 1, …, K`` steps, with a 95 % confidence interval over tasks. The same is
measured, on the same tasks and with the same episodes per step, for the MAML
paper's baselines::

    result = evaluate(["runs/Navigation2D-v0-maml_trpo-…"],
                      EvalSettings(adapt_steps=3, baselines=("random", "pretrained")))
    result["runs"][0]["curve"]["mean"]        # [K + 1] mean returns over tasks

or ``maml-rl evaluate RUN_DIR [RUN_DIR …] --adapt-steps 3 --baselines random,oracle``.

**Adaptation.** Step ``k`` (1-based) is the agents' own inner step
(:func:`maml_rl.agents.maml.inner_step`: REINFORCE with the per-task linear baseline
and normalised advantages, one step for all tasks at once) with the step size
``fast_lr_schedule[k - 1]`` (the last entry repeats). The default schedule is the
run's ``eval.fast_lr_schedule`` where its config sets one, else the MAML paper's
test-time rule: the run's ``fast_lr`` for the first step, half of it for later ones
(0.1 then 0.05 in the paper); ``eval.episodes_per_step`` likewise sets ``E``. The
inner objectives the agents offer (REINFORCE, ProMP's LVC, DiCE) share their gradient
at the sampling policy, so this step adapts a run as its own agent's inner step
would (up to rounding), whichever it trained with; they differ only in the curvature
the meta-update sees.

**Held-out tasks.** The trainer draws iteration ``i``'s tasks from
``SeedSequence(seed, spawn_key=(1, i))`` (:func:`maml_rl.seeding.iteration_seeds`).
Evaluation draws from ``SeedSequence([EVAL_ENTROPY_TAG, eval_seed])``, whose entropy
differs from every training stream's, so the two never share a stream whatever the
seeds. As a guarantee rather than a probability, the training tasks of every
evaluated run (and of the pretrained/oracle baselines) are replayed from their
seeds, and an evaluation task that equals one of them exactly is re-drawn.
*Finite families* — every task field has a finite set of ``choices``, e.g.
HalfCheetahDir/AntDir with direction ∈ {−1, +1} — have no held-out tasks: the
training tasks are all of them. They are evaluated on every task of the family,
each repeated equally often up to at least ``num_tasks`` (each repeat with its own
episodes), and ``eval.json`` says so (``task_set.held_out = false``).

**Randomness.** Everything derives from the evaluation seed, so two evaluations
with the same seed give identical numbers. Rollouts of step ``k`` use the same
sampler seed for every method: on a given task all methods start from the same
initial states and action noise (common random numbers), which makes their
differences less noisy.

**Outputs** (in ``out``): ``eval.json`` (schema below), ``adaptation.png`` (the
adaptation curves, SB3 PPO against its env-step budgets) and TensorBoard scalars
``eval/return_step_<k>`` under ``tensorboard/<label>/`` (x-axis: the checkpoint's
environment steps).

``eval.json`` (``schema_version`` 1)::

    {
      "schema_version": 1, "maml_rl_version": str, "env_id": str,
      "settings": {"num_tasks", "adapt_steps", "episodes_per_step", "fast_lr_schedule",
                   "step_fast_lr": [K], "seed", "baselines": [...], "confidence": 0.95,
                   "horizon", "sampler", "pretrain_iterations", "sb3_multipliers"},
      "task_set": {"held_out": bool, "rule": str, "num_tasks": N,
                   "training_tasks_checked": int, "redrawn": int},
      "tasks": [task dicts, N],
      "runs": [{"label", "path", "agent", "iteration", "env_steps", "curve": CURVE}],
      "baselines": {
        "random": {"curve": CURVE},
        "pretrained": {"curve": CURVE, "train_iterations", "train_env_steps"},
        "oracle": {"curve": CURVE, "env_id", "train_iterations", "train_env_steps"},
        "sb3_ppo": {"num_tasks", "adaptation_budget_env_steps": K·E·horizon, "policy",
                    "points": [{"multiplier", "budget_env_steps", "n_steps", "batch_size",
                                "env_steps", "mean", "ci95", "ci_low", "ci_high",
                                "per_task_mean": [num_tasks]}]}
      },
      "timing_s": {label: seconds}
    }
    CURVE = {"step": [0..K], "fast_lr": [null, lr_1, …, lr_K],
             "mean": [K+1], "ci95": [K+1], "ci_low": [K+1], "ci_high": [K+1],
             "env_steps_per_task": [K+1],      # cumulative, episodes actually played
             "per_task_mean": [[N] × (K+1)], "per_task_ci95": [[N] × (K+1)]}

``mean`` is the mean over tasks of each task's mean episode return, ``ci95`` the
half-width of its 95 % t-interval over the ``N`` tasks (``null`` when undefined);
``per_task_ci95`` is each task's t-interval over its ``E`` episodes.

**Baseline budgets.** *random* is adapted exactly like the runs. *pretrained* and
*oracle* are trained by plain TRPO (the run's ``trpo.*`` settings) for
``pretrain_iterations`` iterations (default: the run's meta-iterations), each on
``meta_batch_size`` training tasks of the run's own task stream with
``fast_batch_size`` episodes — the same tasks the meta-learner saw, one batch per
iteration instead of ``K + 1``; *pretrained* is then adapted like the runs, while
*oracle*, which observes the task, is not adapted: each step samples it afresh with
its trained parameters (its ``fast_lr`` entries are 0). *sb3_ppo* trains on each
of the first ``sb3_tasks`` evaluation tasks for ``multiplier · K · E · horizon`` env
steps (the nominal budget of the adaptation) and is scored on ``E`` episodes with
stochastic actions, as the other methods are.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from scipy import stats

import maml_rl
from maml_rl.agents.maml import TaskSamples, inner_step
from maml_rl.agents.policies import Params, Policy
from maml_rl.batch import EpisodeBatch
from maml_rl.checkpoint import CHECKPOINT_NAME, checkpoint_path, load_checkpoint
from maml_rl.config import Config, config_from_dict
from maml_rl.factories import build_policy
from maml_rl.samplers import Sampler, make_sampler
from maml_rl.seeding import eval_seed_sequence, iteration_seeds, seed_int
from maml_rl.tasks import Task, TaskFamily, family_class

__all__ = [
    "BASELINES",
    "EVAL_JSON",
    "SCHEMA_VERSION",
    "Curve",
    "EvalSettings",
    "LoadedRun",
    "TaskSet",
    "adapt",
    "adaptation_curve",
    "default_fast_lr_schedule",
    "default_out_dir",
    "evaluate",
    "finite_task_set",
    "format_summary",
    "held_out_tasks",
    "load_eval",
    "load_run",
    "mean_confidence_interval",
    "parse_baselines",
    "parse_fast_lr_schedule",
    "parse_multipliers",
    "step_learning_rates",
    "training_tasks",
    "write_outputs",
]

EVAL_JSON = "eval.json"
PLOT_NAME = "adaptation.png"
SCHEMA_VERSION = 1
#: The baselines :func:`evaluate` knows, in plotting order.
BASELINES = ("random", "pretrained", "oracle", "sb3_ppo")
CONFIDENCE = 0.95

# Spawn keys of the evaluation streams (children of SeedSequence([TAG, seed])).
_TASKS, _ROLLOUTS, _RANDOM_INIT, _PRETRAINED, _ORACLE, _SB3 = range(6)


# -- statistics --------------------------------------------------------------------------


def mean_confidence_interval(
    values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float | None]:
    """Sample mean and the half-width of its two-sided t confidence interval.

    ``half = t_{(1 + confidence) / 2, n − 1} · s / √n`` with ``s`` the sample standard
    deviation (``ddof = 1``) and ``t_{p, ν}`` the quantile of Student's t distribution
    (``scipy.stats.t``).

    Args:
        values: ``n ≥ 1`` numbers.
        confidence: coverage of the interval, in ``(0, 1)``.

    Returns:
        ``(mean, half_width)``; ``half_width`` is ``None`` for a single value.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("mean_confidence_interval needs at least one value")
    mean = float(x.mean())
    if x.size == 1:
        return mean, None
    sem = float(x.std(ddof=1)) / math.sqrt(x.size)
    return mean, float(stats.t.ppf(0.5 + confidence / 2.0, x.size - 1)) * sem


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


def default_fast_lr_schedule(fast_lr: float) -> tuple[float, ...]:
    """The MAML paper's test-time rule: ``fast_lr`` for the first step, half after."""
    return (fast_lr, fast_lr / 2.0)


def step_learning_rates(schedule: Sequence[float], adapt_steps: int) -> list[float]:
    """The step size of each of ``adapt_steps`` steps (the schedule's last entry repeats)."""
    return [schedule[min(k, len(schedule) - 1)] for k in range(adapt_steps)]


def parse_baselines(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """Parse ``"random,oracle"`` (``"all"``, ``"none"`` or ``""``) into baseline names.

    Unknown names raise a one-line error that suggests the closest known one.
    """
    if text is None:
        return ()
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    items = [s for s in items if s]
    if items in (["all"], ["ALL"]):
        return BASELINES
    if items in ([], ["none"]):
        return ()
    for name in items:
        if name not in BASELINES:
            close = difflib.get_close_matches(name, BASELINES, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown baseline {name!r}{hint} (choose from {', '.join(BASELINES)}, or all)"
            )
    return tuple(b for b in BASELINES if b in items)  # canonical order, no duplicates


def parse_multipliers(text: str | Sequence[float]) -> tuple[float, ...]:
    """Parse SB3 budget multipliers ``"1,10,100"``: finite numbers > 0."""
    return _parse_positive_numbers(text, "--sb3-multipliers", "multipliers", "1,10,100")


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer ≥ {low}, got {value!r}")
    return int(value)


# -- runs ----------------------------------------------------------------------------------


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
        label=_run_label(file),
        path=file,
        config=config,
        policy_state=state["policy"],
        iteration=int(state["iteration"]),
        env_steps=int(state["env_steps"]),
    )


# -- tasks ----------------------------------------------------------------------------------


def _family(env_id: str) -> type[TaskFamily]:
    """The class of a registered task family (a clear error for an unknown id)."""
    return cast(type[TaskFamily], family_class(env_id))


def training_tasks(config: Config, iterations: int) -> list[Task]:
    """The tasks a run with ``config`` meets in its first ``iterations`` iterations.

    Replayed from the trainer's own seeding (:func:`maml_rl.seeding.iteration_seeds`),
    without any rollout; the pretrained and oracle baselines train on these too.
    """
    family = _family(config.env.id)
    tasks: list[Task] = []
    for i in range(iterations):
        rng, _, _ = iteration_seeds(config.seed, i, config.maml.num_adapt_steps + 1)
        tasks += family.sample_tasks(config.maml.meta_batch_size, rng)
    return tasks


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "held_out": self.held_out,
            "rule": self.rule,
            "num_tasks": len(self.tasks),
            "training_tasks_checked": self.training_tasks_checked,
            "redrawn": self.redrawn,
        }


def held_out_tasks(env_id: str, num_tasks: int, seed: int, exclude: Iterable[Task] = ()) -> TaskSet:
    """``num_tasks`` evaluation tasks from the evaluation seed stream, none in ``exclude``.

    See the module docstring for the rule, including finite families.

    Args:
        env_id: the task family.
        num_tasks: ``N ≥ 1``.
        seed: the evaluation seed.
        exclude: the training tasks (an exact match is re-drawn).
    """
    num_tasks = _check_int("num_tasks", num_tasks, 1)
    family = _family(env_id)
    excluded = set(exclude)
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
    rng = np.random.default_rng(eval_seed_sequence(seed, _TASKS))
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


# -- the adaptation curve --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Curve:
    """Returns of ``N`` tasks after ``0..K`` adaptation steps.

    Attributes:
        returns: ``[K + 1, N, E]`` undiscounted episode returns.
        fast_lr: the ``K`` step sizes used.
        env_steps: ``[K + 1]`` cumulative environment steps per task, up to and
            including the episodes of each step.
    """

    returns: np.ndarray
    fast_lr: list[float]
    env_steps: list[float]

    def to_dict(self, confidence: float = CONFIDENCE) -> dict[str, Any]:
        """The ``CURVE`` object of ``eval.json`` (see the module docstring)."""
        k1, n, _ = self.returns.shape
        task_means = self.returns.mean(axis=2)  # [K + 1, N]
        means, halves = zip(*(mean_confidence_interval(m, confidence) for m in task_means),
                            strict=True)  # fmt: skip
        per_task_ci = [
            [mean_confidence_interval(self.returns[k, i], confidence)[1] for i in range(n)]
            for k in range(k1)
        ]
        return {
            "step": list(range(k1)),
            "fast_lr": [None, *self.fast_lr],
            "mean": list(means),
            "ci95": list(halves),
            "ci_low": [
                m - h if h is not None else None for m, h in zip(means, halves, strict=True)
            ],
            "ci_high": [
                m + h if h is not None else None for m, h in zip(means, halves, strict=True)
            ],
            "env_steps_per_task": list(self.env_steps),
            "per_task_mean": task_means.tolist(),
            "per_task_ci95": per_task_ci,
        }


def adapt(
    policy: Policy,
    params: Mapping[str, torch.Tensor],
    batch: EpisodeBatch,
    fast_lr: float,
    *,
    gamma: float,
    gae_lambda: float,
) -> Params:
    """One inner REINFORCE step for every task of ``batch`` (detached, for sampling).

    The agents' inner step (:func:`maml_rl.agents.maml.inner_step`) with advantages
    from the per-task linear baseline, normalised per task as the agents do.
    """
    dtype = next(policy.parameters()).dtype
    samples = TaskSamples.from_batch(batch, gamma, gae_lambda, dtype=dtype)
    step = inner_step(policy, params, samples, fast_lr, second_order=False, keep_graph=False)
    return step.params_out


def adaptation_curve(
    sampler: Sampler,
    policy: Policy,
    tasks: Sequence[Task],
    *,
    episodes: int,
    fast_lrs: Sequence[float],
    seeds: Sequence[int],
    gamma: float,
    gae_lambda: float,
    progress: Callable[[], None] | None = None,
) -> Curve:
    """Sample, adapt, sample again, ``len(fast_lrs)`` times, from the policy's own θ.

    Args:
        sampler: a sampler of the tasks' family, built for ``policy``.
        policy: the policy to adapt (its parameters are not changed).
        tasks: the ``N`` tasks.
        episodes: ``E`` episodes per task and step.
        fast_lrs: the ``K`` step sizes (0: no adaptation at that step, only fresh
            episodes with the current parameters).
        seeds: ``K + 1`` sampler seeds, one per sample call.
        gamma: discount of the inner step's returns.
        gae_lambda: GAE ``λ`` of the inner step.
        progress: called after every sample call (e.g. a progress bar's update).
    """
    if len(seeds) != len(fast_lrs) + 1:
        raise ValueError(f"need {len(fast_lrs) + 1} sampler seeds, got {len(seeds)}")
    params: Mapping[str, torch.Tensor] = {k: v.detach() for k, v in policy.named_parameters()}
    returns, env_steps, total = [], [], 0.0
    for k, seed in enumerate(seeds):
        batch = sampler.sample(list(tasks), params, episodes, int(seed))
        returns.append(batch.episode_returns.double().numpy())
        total += batch.env_steps / len(tasks)
        env_steps.append(total)
        if progress is not None:
            progress()
        if k < len(fast_lrs) and fast_lrs[k] != 0.0:
            params = adapt(policy, params, batch, fast_lrs[k], gamma=gamma,
                           gae_lambda=gae_lambda)  # fmt: skip
    return Curve(np.stack(returns), [float(lr) for lr in fast_lrs], env_steps)


# -- the whole evaluation ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """What :func:`evaluate` measures. ``None`` fields default from the (first) run.

    Attributes:
        env_id: the family the runs must have been trained on (``None``: any one).
        num_tasks: evaluation tasks ``N``.
        adapt_steps: adaptation steps ``K`` (curves have ``K + 1`` points).
        episodes_per_step: ``E``; default: the run's ``eval.episodes_per_step``, else
            its ``maml.fast_batch_size``.
        fast_lr_schedule: step sizes (last repeats); default: the run's
            ``eval.fast_lr_schedule``, else its ``fast_lr`` then half of it.
        baselines: any of :data:`BASELINES`.
        seed: the evaluation seed (tasks, rollouts, baseline initialisation).
        sampler: sampler backend; default: the run's.
        num_workers: sampler workers; default: the run's.
        pretrain_iterations: TRPO iterations of the pretrained and oracle baselines;
            default: the (longest) run's completed meta-iterations.
        sb3_multipliers: SB3 PPO budgets as multiples of the adaptation budget
            ``K · E · horizon``.
        sb3_tasks: run SB3 PPO on the first this many evaluation tasks (``None``: all).
        progress: show progress bars (tqdm, on stderr).
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

    def __post_init__(self) -> None:
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
        if "sb3_ppo" in self.baselines and self.adapt_steps == 0:
            raise ValueError(
                "the sb3_ppo baseline gets the env steps of the adaptation (K · E · horizon), "
                "which is 0 with --adapt-steps 0; use --adapt-steps ≥ 1 or drop sb3_ppo"
            )


def _unique_labels(labels: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        n = seen.get(label, 0)
        seen[label] = n + 1
        out.append(label if n == 0 else f"{label}-{n + 1}")
    return out


def _check_same_family(runs: Sequence[LoadedRun], env_id: str | None) -> str:
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


class _Progress:
    """A tqdm bar (or nothing) with an ``update()`` callable."""

    def __init__(self, enabled: bool, total: int, desc: str) -> None:
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="step", leave=True, dynamic_ncols=True)

    def update(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _policy_like(config: Config, seed: int, env_id: str | None = None) -> Policy:
    """A freshly initialised policy with the run's architecture (for ``env_id``'s spaces)."""
    overrides: dict[str, Any] = {"seed": seed}
    if env_id is not None:
        overrides["env.id"] = env_id
    return build_policy(config.replace(overrides))


def _pretrain(
    config: Config,
    env_id: str,
    iterations: int,
    seed: int,
    stream: int,
    samplers: _Samplers,
    progress: bool,
    desc: str,
) -> tuple[Policy, int]:
    """Train one policy by plain TRPO on the run's training tasks (the pretrained and
    oracle baselines); returns it and the env steps it used."""
    from maml_rl.agents.multitask_trpo import MultiTaskTRPO

    policy = _policy_like(config, seed_int(eval_seed_sequence(seed, stream)), env_id)
    t = config.trpo
    learner = MultiTaskTRPO(
        policy, gamma=config.maml.gamma, gae_lambda=config.maml.gae_lambda, max_kl=t.max_kl,
        cg_iters=t.cg_iters, cg_damping=t.cg_damping, ls_max_steps=t.ls_max_steps,
        ls_backtrack_ratio=t.ls_backtrack_ratio,
    )  # fmt: skip
    env_steps = 0
    sampler = samplers.get(config, policy, env_id)
    with _Progress(progress, iterations, desc) as bar:
        for i, tasks in enumerate(_training_task_stream(config, iterations)):
            roll_seed = seed_int(eval_seed_sequence(seed, stream, i))
            params = {k: v.detach() for k, v in policy.named_parameters()}
            batch = sampler.sample(tasks, params, config.maml.fast_batch_size, roll_seed)
            learner.step(batch)
            env_steps += batch.env_steps
            bar.update()
    return policy, env_steps


def _training_task_stream(config: Config, iterations: int) -> Iterable[list[Task]]:
    family = _family(config.env.id)
    for i in range(iterations):
        rng, _, _ = iteration_seeds(config.seed, i, config.maml.num_adapt_steps + 1)
        yield family.sample_tasks(config.maml.meta_batch_size, rng)


class _Samplers:
    """The samplers of one evaluation, shared by every method with the same env and policy
    architecture (parameters travel with each sample call), so that ``process``/``ray``
    workers start once rather than once per method. The backend and worker count are the
    run's unless the settings override them."""

    def __init__(self, settings: EvalSettings) -> None:
        self._settings = settings
        self._samplers: dict[tuple[Any, ...], Sampler] = {}

    def get(self, config: Config, policy: Policy, env_id: str | None = None) -> Sampler:
        env_id = env_id or config.env.id
        s = config.sampler
        backend = self._settings.sampler or s.backend
        workers = self._settings.num_workers or s.num_workers
        # Everything that shapes the rollout besides the parameters' values.
        key = (env_id, type(policy), config.policy.hidden_sizes, config.policy.activation,
               backend, workers, repr(config.env.kwargs), config.env.max_episode_steps)  # fmt: skip
        if key not in self._samplers:
            self._samplers[key] = make_sampler(
                env_id,
                policy,
                backend=backend,
                num_workers=workers,
                ray_address=s.ray_address if backend == "ray" else None,
                env_kwargs=dict(config.env.kwargs),
                max_episode_steps=config.env.max_episode_steps,
            )
        return self._samplers[key]

    def close(self) -> None:
        for sampler in self._samplers.values():
            sampler.close()
        self._samplers.clear()

    def __enter__(self) -> _Samplers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def evaluate(
    runs: Sequence[str | Path],
    settings: EvalSettings | None = None,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate fast adaptation of one or more runs (and baselines) on held-out tasks.

    Args:
        runs: run folders or checkpoint files, all of one task family.
        settings: what to measure (default :class:`EvalSettings`).
        out: output folder for ``eval.json``, the plot and TensorBoard events;
            ``None``: ``<run>/eval`` for one run, ``eval/<label>-vs-<label>…`` for
            several; an empty string writes nothing.

    Returns:
        The ``eval.json`` dict (see the module docstring).

    Raises:
        ValueError: one line — a missing/corrupt checkpoint, runs of another family
            than requested, or invalid settings.
    """
    settings = settings or EvalSettings()
    if not runs:
        raise ValueError("evaluate needs at least one run folder or checkpoint")
    loaded = [load_run(r) for r in runs]
    labels = _unique_labels([r.label for r in loaded])
    env_id = _check_same_family(loaded, settings.env_id)
    first = loaded[0].config
    k_steps = settings.adapt_steps
    episodes = (
        settings.episodes_per_step or first.eval.episodes_per_step or first.maml.fast_batch_size
    )
    schedule = (
        settings.fast_lr_schedule
        or first.eval.fast_lr_schedule
        or default_fast_lr_schedule(first.maml.fast_lr)
    )
    fast_lrs = step_learning_rates(schedule, k_steps)
    baselines = settings.baselines
    seed = settings.seed
    trains_baselines = bool({"pretrained", "oracle"} & set(baselines))
    pretrain_iters = settings.pretrain_iterations or max(1, max(r.iteration for r in loaded))

    exclude: set[Task] = set()
    for run in loaded:
        n_iter = max(run.iteration, pretrain_iters if trains_baselines else 0)
        exclude.update(training_tasks(run.config, n_iter))
    task_set = held_out_tasks(env_id, settings.num_tasks, seed, exclude)
    tasks = task_set.tasks
    n = len(tasks)
    sample_seeds = [seed_int(eval_seed_sequence(seed, _ROLLOUTS, k)) for k in range(k_steps + 1)]
    gamma, lam = first.maml.gamma, first.maml.gae_lambda

    samplers = _Samplers(settings)

    def curve_of(
        policy: Policy, config: Config, desc: str, env: str | None = None, adapted: bool = True
    ) -> Curve:
        with _Progress(settings.progress, k_steps + 1, desc) as bar:
            return adaptation_curve(
                samplers.get(config, policy, env), policy, tasks, episodes=episodes,
                fast_lrs=fast_lrs if adapted else [0.0] * len(fast_lrs), seeds=sample_seeds,
                gamma=gamma, gae_lambda=lam, progress=bar.update,
            )  # fmt: skip

    try:
        timing: dict[str, float] = {}
        run_results = []
        for run, label in zip(loaded, labels, strict=True):
            t0 = time.perf_counter()
            curve = curve_of(run.policy(), run.config, f"evaluate {label}")
            timing[label] = time.perf_counter() - t0
            run_results.append(
                {
                    "label": label,
                    "path": str(run.path),
                    "agent": run.config.agent,
                    "iteration": run.iteration,
                    "env_steps": run.env_steps,
                    "curve": curve.to_dict(),
                }
            )

        baseline_results: dict[str, Any] = {}
        if "random" in baselines:
            t0 = time.perf_counter()
            policy = _policy_like(first, seed_int(eval_seed_sequence(seed, _RANDOM_INIT)))
            curve = curve_of(policy, first, "baseline random")
            baseline_results["random"] = {"curve": curve.to_dict()}
            timing["random"] = time.perf_counter() - t0
        if "pretrained" in baselines:
            t0 = time.perf_counter()
            policy, steps = _pretrain(
                first, env_id, pretrain_iters, seed, _PRETRAINED, samplers, settings.progress,
                "pretrain (TRPO)",
            )  # fmt: skip
            curve = curve_of(policy, first, "baseline pretrained")
            baseline_results["pretrained"] = {
                "curve": curve.to_dict(),
                "train_iterations": pretrain_iters,
                "train_env_steps": steps,
            }
            timing["pretrained"] = time.perf_counter() - t0
        if "oracle" in baselines:
            from maml_rl.envs.oracle import oracle_env_id

            t0 = time.perf_counter()
            oracle_id = oracle_env_id(env_id)
            policy, steps = _pretrain(
                first, oracle_id, pretrain_iters, seed, _ORACLE, samplers, settings.progress,
                "train oracle (TRPO)",
            )  # fmt: skip
            # Not adapted: it sees the task (the MAML paper draws it as a flat line), and
            # policy-gradient steps on its near-deterministic policy only do harm.
            curve = curve_of(policy, first, "baseline oracle", oracle_id, adapted=False)
            baseline_results["oracle"] = {
                "curve": curve.to_dict(),
                "env_id": oracle_id,
                "train_iterations": pretrain_iters,
                "train_env_steps": steps,
            }
            timing["oracle"] = time.perf_counter() - t0
        if "sb3_ppo" in baselines:
            t0 = time.perf_counter()
            baseline_results["sb3_ppo"] = _sb3_baseline(first, env_id, tasks, settings, episodes)
            timing["sb3_ppo"] = time.perf_counter() - t0
    finally:
        samplers.close()

    horizon = first.env.max_episode_steps or int(_family(env_id).horizon)
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "maml_rl_version": maml_rl.__version__,
        "env_id": env_id,
        "settings": {
            "num_tasks": n,
            "adapt_steps": k_steps,
            "episodes_per_step": episodes,
            "fast_lr_schedule": list(schedule),
            "step_fast_lr": fast_lrs,
            "seed": seed,
            "baselines": list(baselines),
            "confidence": CONFIDENCE,
            "horizon": horizon,
            "sampler": settings.sampler or first.sampler.backend,
            "pretrain_iterations": pretrain_iters if trains_baselines else None,
            "sb3_multipliers": list(settings.sb3_multipliers) if "sb3_ppo" in baselines else None,
        },
        "task_set": task_set.to_dict(),
        "tasks": [t.to_dict() for t in tasks],
        "runs": run_results,
        "baselines": baseline_results,
        "timing_s": timing,
    }
    if out != "":
        write_outputs(result, Path(out) if out is not None else default_out_dir(runs))
    return result


def _sb3_baseline(
    config: Config,
    env_id: str,
    tasks: Sequence[Task],
    settings: EvalSettings,
    episodes: int,
) -> dict[str, Any]:
    """SB3 PPO from scratch on each evaluation task, at multiples of the adaptation budget."""
    from maml_rl.eval_baselines import sb3_hyperparameters, sb3_ppo_on_task

    horizon = config.env.max_episode_steps or int(_family(env_id).horizon)
    base_budget = settings.adapt_steps * episodes * horizon
    sub = list(tasks[: settings.sb3_tasks] if settings.sb3_tasks else tasks)
    seed = settings.seed
    points = []
    total = len(settings.sb3_multipliers) * len(sub)
    with _Progress(settings.progress, total, "baseline sb3_ppo (tasks × budgets)") as bar:
        for j, mult in enumerate(settings.sb3_multipliers):
            budget = max(1, round(mult * base_budget))
            task_returns, used = [], []
            for i, task in enumerate(sub):
                # Reset seeds of the evaluation episodes: per task, shared by the budgets.
                eval_seeds = eval_seed_sequence(seed, _SB3, i).generate_state(episodes)
                res = sb3_ppo_on_task(
                    env_id, task, budget=budget, eval_seeds=[int(s) for s in eval_seeds],
                    seed=int(eval_seed_sequence(seed, _SB3, i, j + 1).generate_state(1)[0]),
                    env_kwargs=dict(config.env.kwargs),
                    max_episode_steps=config.env.max_episode_steps,
                )  # fmt: skip
                task_returns.append(float(res.returns.mean()))
                used.append(res.env_steps)
                bar.update()
            mean, half = mean_confidence_interval(task_returns)
            points.append(
                {
                    "multiplier": mult,
                    "budget_env_steps": budget,
                    **sb3_hyperparameters(budget),
                    "env_steps": float(np.mean(used)),
                    "mean": mean,
                    "ci95": half,
                    "ci_low": mean - half if half is not None else None,
                    "ci_high": mean + half if half is not None else None,
                    "per_task_mean": task_returns,
                }
            )
    return {
        "num_tasks": len(sub),
        "adaptation_budget_env_steps": base_budget,
        "policy": "SB3 PPO, MlpPolicy, default hyperparameters but n_steps/batch_size",
        "points": points,
    }


def _run_label(path: str | Path) -> str:
    """A run's short name: its folder's name (for a checkpoint file, the file's folder's
    name when it is ``checkpoint.pt``, else the file's stem)."""
    p = Path(path)
    if p.is_dir():
        return p.resolve().name or "run"
    return (p.resolve().parent.name if p.name == CHECKPOINT_NAME else p.stem) or "run"


def default_out_dir(runs: Sequence[str | Path]) -> Path:
    """Where :func:`evaluate` writes by default: ``<run folder>/eval`` for one run,
    ``eval/<label>-vs-<label>…`` (in the working folder) for several."""
    if len(runs) == 1:
        p = Path(runs[0])
        return (p if p.is_dir() else p.parent) / "eval"
    return Path("eval") / "-vs-".join(_unique_labels([_run_label(r) for r in runs]))


def write_outputs(result: Mapping[str, Any], out: str | Path) -> None:
    """Write ``eval.json``, the adaptation plot and TensorBoard scalars to ``out``."""
    from maml_rl.logger import TensorBoardLogger
    from maml_rl.plotting import plot_adaptation

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in result.items() if not k.startswith("_")}
    tmp = out / f".{EVAL_JSON}.tmp"
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(out / EVAL_JSON)
    plot_adaptation(data, out / PLOT_NAME)
    curves = [(r["label"], r["env_steps"], r["curve"]) for r in data["runs"]]
    curves += [
        (f"baseline-{name}", b.get("train_env_steps", 0), b["curve"])
        for name, b in data["baselines"].items()
        if "curve" in b
    ]
    for label, step, curve in curves:
        logger = TensorBoardLogger(out / "tensorboard" / label)
        try:
            logger.write(
                {f"eval/return_step_{k}": m for k, m in zip(curve["step"], curve["mean"],
                                                             strict=True)},
                step=int(step),
            )  # fmt: skip
        finally:
            logger.close()


def load_eval(path: str | Path) -> dict[str, Any]:
    """Read an ``eval.json`` (a file or the folder holding it), checking its schema."""
    p = Path(path)
    file = p / EVAL_JSON if p.is_dir() else p
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"no {EVAL_JSON} at {str(path)!r}") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{str(file)!r} is not a readable {EVAL_JSON}: {exc}") from None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{str(file)!r} is not an {EVAL_JSON} of schema version {SCHEMA_VERSION}")
    return data


def format_summary(result: Mapping[str, Any]) -> str:
    """A markdown table of an evaluation: mean return ± 95 % CI per method and step."""
    k = result["settings"]["adapt_steps"]

    def cell(mean: float, half: float | None) -> str:
        return f"{mean:.2f} ± {half:.2f}" if half is not None else f"{mean:.2f}"

    header = "| method | " + " | ".join(f"step {s}" for s in range(k + 1)) + " |"
    lines = [header, "|---" * (k + 2) + "|"]
    rows = [(r["label"], r["curve"]) for r in result["runs"]]
    rows += [(n, b["curve"]) for n, b in result["baselines"].items() if "curve" in b]
    for name, curve in rows:
        cells = [cell(m, h) for m, h in zip(curve["mean"], curve["ci95"], strict=True)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    sb3 = result["baselines"].get("sb3_ppo")
    if sb3:
        lines.append("")
        lines.append(
            f"SB3 PPO from scratch ({sb3['num_tasks']} tasks; adaptation budget "
            f"{sb3['adaptation_budget_env_steps']:,} env steps per task):"
        )
        for p in sb3["points"]:
            lines.append(
                f"- {p['multiplier']:g}× ({p['env_steps']:,.0f} env steps): "
                f"{cell(p['mean'], p['ci95'])}"
            )
    ts = result["task_set"]
    where = "held-out" if ts["held_out"] else "all (no held-out tasks exist)"
    lines.append("")
    lines.append(
        f"{result['env_id']}: {ts['num_tasks']} {where} tasks, "
        f"{result['settings']['episodes_per_step']} episodes per step, "
        f"step sizes {result['settings']['step_fast_lr']}"
    )
    return "\n".join(lines)
