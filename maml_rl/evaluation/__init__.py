"""Fast adaptation to held-out tasks: the test of a meta-trained policy.

For each of ``N`` evaluation tasks the policy plays ``E`` episodes, takes one
policy-gradient step on them, plays ``E`` new episodes, and so on ``K`` times
(Finn et al., 2017, §5.3): the *adaptation curve*, the mean return after
``0, 1, …, K`` steps, with a 95 % confidence interval over tasks. The same is
measured, on the same tasks and with the same episodes per step, for the MAML
paper's baselines (:mod:`maml_rl.evaluation.baselines`)::

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

**Outputs** are ``eval.json``, a plot and TensorBoard scalars
(:mod:`maml_rl.evaluation.report` has the schema); the baselines and their budgets
are described in :mod:`maml_rl.evaluation.baselines`. With ``video_tasks`` (``--video``),
also videos of each run adapting on the first evaluation tasks, the very episodes the
curve measured (:mod:`maml_rl.evaluation.video`).

The package, one job a module: :mod:`~maml_rl.evaluation.protocol` (settings, runs,
held-out tasks, step sizes, seeds), :mod:`~maml_rl.evaluation.curve` (the adaptation
curve and the samplers it is measured with), :mod:`~maml_rl.evaluation.stats`
(confidence intervals),
:mod:`~maml_rl.evaluation.baselines` (the baseline registry and its runners),
:mod:`~maml_rl.evaluation.sb3` (Stable-Baselines3 PPO), :mod:`~maml_rl.evaluation.report`
(``eval.json``, TensorBoard, the summary), :mod:`~maml_rl.evaluation.plot` (figures) and
:mod:`~maml_rl.evaluation.video` (videos of adaptation, imported only when asked for).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import maml_rl
from maml_rl.agents.policies import Policy
from maml_rl.errors import check_writable_folder
from maml_rl.evaluation.baselines import (
    BASELINES,
    Baseline,
    EvalContext,
    parse_baselines,
    register_baseline,
)
from maml_rl.evaluation.curve import Curve, EvalSamplers, adapt, adaptation_curve
from maml_rl.evaluation.protocol import (
    EvalSettings,
    LoadedRun,
    TaskSet,
    check_same_family,
    default_fast_lr_schedule,
    finite_task_set,
    held_out_tasks,
    horizon,
    load_run,
    parse_fast_lr_schedule,
    parse_multipliers,
    sampler_seeds,
    step_learning_rates,
    training_tasks,
)
from maml_rl.evaluation.report import (
    EVAL_JSON,
    SCHEMA_VERSION,
    BaselineEntry,
    EvalResult,
    RunEntry,
    VideoEntry,
    default_out_dir,
    format_summary,
    load_eval,
    unique_labels,
    write_outputs,
)
from maml_rl.evaluation.stats import CONFIDENCE, mean_confidence_interval
from maml_rl.tasks import Task

__all__ = [
    "BASELINES",
    "EVAL_JSON",
    "SCHEMA_VERSION",
    "Baseline",
    "Curve",
    "EvalContext",
    "EvalResult",
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
    "register_baseline",
    "step_learning_rates",
    "training_tasks",
    "write_outputs",
]


def evaluate(
    runs: Sequence[str | Path],
    settings: EvalSettings | None = None,
    out: str | Path | None = None,
) -> EvalResult:
    """Evaluate fast adaptation of one or more runs (and baselines) on held-out tasks.

    Args:
        runs: run folders or checkpoint files, all of one task family.
        settings: what to measure (default :class:`EvalSettings`).
        out: output folder for ``eval.json``, the plot and TensorBoard events;
            ``None``: ``<run>/eval`` for one run, ``eval/<label>-vs-<label>…`` for
            several; an empty string writes nothing.

    Returns:
        The ``eval.json`` dict (:mod:`maml_rl.evaluation.report`).

    Raises:
        ValueError: one line — a missing/corrupt checkpoint, runs of another family
            than requested, invalid settings, or an output folder that cannot be written
            (checked before the evaluation runs).
    """
    settings = settings or EvalSettings()
    if not runs:
        raise ValueError("evaluate needs at least one run folder or checkpoint")
    loaded = [load_run(r) for r in runs]
    out_dir = None if out == "" else Path(out) if out is not None else default_out_dir(runs)
    if out_dir is not None:  # before the work, not after it
        check_writable_folder(out_dir, "output folder", "pass a writable folder with --out DIR")
    labels = unique_labels([r.label for r in loaded])
    env_id = check_same_family(loaded, settings.env_id)
    first = loaded[0].config
    episodes = (
        settings.episodes_per_step or first.eval.episodes_per_step or first.maml.fast_batch_size
    )
    schedule = (
        settings.fast_lr_schedule
        or first.eval.fast_lr_schedule
        or default_fast_lr_schedule(first.maml.fast_lr)
    )
    baselines = [BASELINES[name] for name in settings.baselines]
    pretrains = any(b.pretrains for b in baselines)
    pretrain_iters = settings.pretrain_iterations or max(1, max(r.iteration for r in loaded))

    exclude: set[Task] = set()
    for run in loaded:
        n_iter = max(run.iteration, pretrain_iters if pretrains else 0)
        exclude.update(training_tasks(run.config, n_iter))
    task_set = held_out_tasks(env_id, settings.num_tasks, settings.seed, exclude)

    out_dir = None if out == "" else Path(out) if out is not None else default_out_dir(runs)
    videos_skipped: str | None = None
    timing: dict[str, float] = {}
    run_entries: list[RunEntry] = []
    baseline_entries: dict[str, BaselineEntry] = {}
    with EvalSamplers(settings.sampler, settings.num_workers) as samplers:
        ctx = EvalContext(
            settings=settings, config=first, env_id=env_id, tasks=task_set.tasks,
            episodes=episodes, fast_lrs=step_learning_rates(schedule, settings.adapt_steps),
            sampler_seeds=sampler_seeds(settings.seed, settings.adapt_steps),
            pretrain_iterations=pretrain_iters, horizon=horizon(first, env_id),
            samplers=samplers, state_dir=out_dir / "baselines" if out_dir is not None else None,
        )  # fmt: skip
        videos = settings.video_tasks > 0 and out_dir is not None
        for run, label in zip(loaded, labels, strict=True):
            t0 = time.perf_counter()
            policy = run.policy()
            curve = ctx.curve(policy, f"evaluate {label}", config=run.config, keep_params=videos)
            timing[label] = time.perf_counter() - t0
            entry: RunEntry = {
                "label": label,
                "path": str(run.path),
                "agent": run.config.agent,
                "iteration": run.iteration,
                "env_steps": run.env_steps,
                "curve": curve.to_dict(),
            }
            if videos and out_dir is not None:
                if videos_skipped is None:
                    t0 = time.perf_counter()
                    entry["videos"] = _videos(ctx, run, label, len(loaded), policy, curve, out_dir)
                    timing[f"{label} videos"] = time.perf_counter() - t0
                    videos_skipped = entry["videos"].get("skipped")
                else:
                    entry["videos"] = {"skipped": videos_skipped}
            run_entries.append(entry)
        for baseline in baselines:
            t0 = time.perf_counter()
            baseline_entries[baseline.name] = baseline.run(ctx)
            timing[baseline.name] = time.perf_counter() - t0

    result: EvalResult = {
        "schema_version": SCHEMA_VERSION,
        "maml_rl_version": maml_rl.__version__,
        "env_id": env_id,
        "settings": {
            "num_tasks": len(ctx.tasks),
            "adapt_steps": settings.adapt_steps,
            "episodes_per_step": episodes,
            "fast_lr_schedule": list(schedule),
            "step_fast_lr": ctx.fast_lrs,
            "seed": settings.seed,
            "baselines": list(settings.baselines),
            "confidence": CONFIDENCE,
            "horizon": ctx.horizon,
            "sampler": settings.sampler or first.sampler.backend,
            "pretrain_iterations": pretrain_iters if pretrains else None,
            "sb3_multipliers": (
                list(settings.sb3_multipliers) if "sb3_ppo" in settings.baselines else None
            ),
        },
        "task_set": task_set.to_dict(),
        "tasks": [t.to_dict() for t in ctx.tasks],
        "runs": run_entries,
        "baselines": baseline_entries,
        "timing_s": timing,
    }
    if out_dir is not None:
        write_outputs(result, out_dir)
    return result


def _videos(
    ctx: EvalContext,
    run: LoadedRun,
    label: str,
    num_runs: int,
    policy: Policy,
    curve: Curve,
    out: Path,
) -> VideoEntry:
    """Render, write and log the videos of one run; on :class:`RenderUnavailable` say why in
    one line on stderr and go on without them."""
    from maml_rl.evaluation.video import (
        RenderUnavailable,
        log_step_videos,
        render_adaptation,
        write_task_videos,
    )
    from maml_rl.logger import TensorBoardLogger

    if curve.params is None:
        raise ValueError("the curve kept no parameters (keep_params=True is needed)")
    indices = list(range(min(ctx.settings.video_tasks, len(ctx.tasks))))
    try:
        videos = render_adaptation(
            ctx.env_id, run.config.env.kwargs, ctx.horizon, policy, curve.params, ctx.tasks,
            indices, ctx.sampler_seeds,
        )  # fmt: skip
    except RenderUnavailable as exc:
        print(f"maml-rl: no videos: {exc}", file=sys.stderr, flush=True)
        return {"skipped": str(exc)}
    folder = out / "videos" if num_runs == 1 else out / "videos" / label
    files = write_task_videos(videos, folder)
    logger = TensorBoardLogger(out / "tensorboard" / label)
    try:
        tags = log_step_videos(videos, logger, run.env_steps)
    finally:
        logger.close()
    return {
        "tasks": indices,
        "files": [str(f.relative_to(out)) for f in files],
        "returns": [v.returns for v in videos],
        "tensorboard_tags": tags,
    }
