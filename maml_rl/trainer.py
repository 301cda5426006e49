"""The meta-training loop: sample tasks, adapt, sample again, update, log, checkpoint.

One meta-iteration (DESIGN.md, "One meta-iteration, as data")::

    tasks  = family.sample_tasks(meta_batch_size, rng)
    params = θ
    for k in range(num_adapt_steps):
        train_k = sampler.sample(tasks, params, fast_batch_size, seed_k)
        params  = agent.adapt(params, train_k)          # θ'_i for every task at once
    valid   = sampler.sample(tasks, params, fast_batch_size, seed_K)
    metrics = agent.step([train_1, ..., train_K], valid) # outer update of θ, in place

**Metrics** (one dict per iteration, logged at ``step`` = cumulative env steps):

=================================== ==================================================
``iteration``                       meta-iterations done (a counter, not a curve)
``rollout/return_pre_adapt``        mean episode return of the first train batch (θ)
``rollout/return_adapt_step_<k>``   same after k inner steps (only if K > 1)
``rollout/return_post_adapt``       mean episode return of the valid batch (θ'_i)
``rollout/episode_length``          mean length of all episodes of the iteration
``rollout/success_pre_adapt``       fraction of first-train-batch episodes that
                                    succeeded (families reporting ``info["success"]``)
``rollout/success_post_adapt``      same for the valid batch
``train/...``                       what ``agent.step`` returns (KL, losses, ...)
``time/sample_s``                   seconds in sampler calls
``time/adapt_s``                    seconds in the inner steps between them
``time/update_s``                   seconds in ``agent.step``
``time/iteration_s``                the whole iteration
``time/env_steps_per_s``            env steps of the iteration / ``iteration_s``
=================================== ==================================================

**Videos** (``video_every``): after every ``video_every``-th iteration the policy is
adapted, as ``maml-rl evaluate`` adapts it (its step sizes, ``eval.episodes_per_step``
episodes, its seeds), on the first ``video_tasks`` tasks of the evaluation stream with
``num_adapt_steps`` steps, and the episodes are rendered to TensorBoard as
``eval/video_step_<k>`` (:mod:`maml_rl.evaluation.video`). This draws from the
evaluation's streams only: the training is the same with or without videos.

**Randomness.** Everything derives from one root ``np.random.SeedSequence(seed)``
through explicit spawn keys, never ``seed + i``:

* ``(0,)`` seeds torch before the policy is built (its initialisation);
* ``(1, i)`` is meta-iteration ``i``'s stream, spawned into the task generator, the
  seeds of the ``K + 1`` sample calls and a torch seed for anything random in the
  update.

Iteration ``i``'s randomness is therefore a function of ``(seed, i)`` alone, and
resuming from a checkpoint after iteration ``i`` replays exactly the iterations an
uninterrupted run would have made (the policy and agent state are restored
bit-for-bit).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import datetime
import math
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

import maml_rl
from maml_rl.agents.base import Agent
from maml_rl.batch import EpisodeBatch
from maml_rl.checkpoint import (
    CHECKPOINT_NAME,
    FORMAT_VERSION,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from maml_rl.config import Config, config_from_dict, dump_yaml, load_config
from maml_rl.divergence import REJECTION_TAG, StepRejection, all_finite
from maml_rl.errors import RunStopped, check_writable_folder, os_reason, os_remedy
from maml_rl.factories import build_agent, build_policy, resolve_device
from maml_rl.logger import ConsoleLogger, JsonlLogger, Logger, MultiLogger, TensorBoardLogger
from maml_rl.samplers.base import WorkerDied
from maml_rl.seeding import iteration_seeds
from maml_rl.tasks import TaskFamily, family_class, sample_training_tasks
from maml_rl.threads import torch_threads

__all__ = [
    "RESUMABLE_KEYS",
    "Diverged",
    "Interrupted",
    "Trainer",
    "check_new_run_dir",
    "likely_cause",
    "new_run_dir",
]

#: Config keys a resumed run may change: they only extend the run, or do not alter
#: what is computed (every sampler backend gives identical episodes; another device
#: may change the last bits of the update, not its meaning). The two TRPO curvature
#: knobs are here too: they choose how the Fisher-vector products that set the step's
#: direction are approximated (precision, share of the tasks), not the objective or
#: the trust region, so a long run may switch to the exact products part-way.
RESUMABLE_KEYS = (
    "num_batches",
    "checkpoint_every",
    "keep_checkpoint_every",
    "max_rejected_iterations",
    "video_every",
    "video_tasks",
    "device",
    "update_threads",
    "trpo.hvp_dtype",
    "trpo.hvp_subsample",
    "logdir",
    "run_name",
)
_RESUMABLE_PREFIXES = ("sampler.",)


class Interrupted(KeyboardInterrupt):
    """Training was stopped by Ctrl-C after a checkpoint of the last finished iteration."""

    def __init__(self, run_dir: Path, iteration: int, num_batches: int) -> None:
        super().__init__(
            f"interrupted after iteration {iteration}/{num_batches}; checkpoint in {run_dir}; "
            f"continue with: maml-rl train --resume {run_dir}"
        )
        self.run_dir = run_dir
        self.iteration = iteration


class Diverged(RunStopped):
    """Training stopped after ``max_rejected_iterations`` consecutive meta-steps were
    rejected, some for non-finite values or a zero meta-gradient; the last good state is
    checkpointed."""


def _num(x: float) -> str:
    """``1e6`` rather than ``1e+06``: a value as a user writes it in a config."""
    return re.sub(r"e([+-])0*(\d)", lambda m: f"e{m[1].lstrip('+')}{m[2]}", f"{x:g}")


def likely_cause(reason: StepRejection, config: Config, *, after_a_step: bool = False) -> str:
    """What most likely made the meta-steps non-finite (or the meta-gradient zero), and
    the setting to change.

    Args:
        reason: the most frequent abnormal rejection.
        config: the run's config.
        after_a_step: whether an outer step was taken just before the rejections began
            (then non-finite rollouts of θ come from that step).
    """
    if reason == StepRejection.UPDATE or (reason == StepRejection.POLICY and after_a_step):
        key, value = (
            ("trpo.max_kl", config.trpo.max_kl)
            if config.agent == "maml_trpo"
            else ("ppo.meta_lr", config.ppo.meta_lr)
        )
        return (
            f"the outer step with {key}={_num(value)} makes the policy's outputs non-finite; "
            f"lower {key}"
        )
    what = {
        StepRejection.POLICY: "the policy's actions or rewards",
        StepRejection.ADAPTED: "the adapted policy",
        StepRejection.LOSS: "the outer loss",
        StepRejection.GRADIENT: "the meta-gradient",
        StepRejection.ZERO_GRADIENT: "the meta-gradient",
        StepRejection.DIRECTION: "the step direction",
    }.get(reason, "the meta-step")
    zero = reason == StepRejection.ZERO_GRADIENT
    if config.policy.init_std < 1e-3:  # log-probability gradients scale as 1/σ²
        # a − μ may also round to 0 with σ tiny: then the gradient vanishes instead.
        effect = "vanish" if zero else "non-finite"
        return (
            f"policy.init_std={_num(config.policy.init_std)} makes {what} {effect}; raise "
            "policy.init_std"
        )
    if zero:
        return (
            "within every task the episodes scored alike (a constant reward, a sparse one "
            "no episode reached, or episodes that all end at once), so there is nothing to "
            f"learn from; check {config.env.id}'s reward, or raise max_rejected_iterations "
            "to keep sampling"
        )
    if reason == StepRejection.DIRECTION:
        return (
            f"the KL curvature is degenerate; raise trpo.cg_damping "
            f"(now {_num(config.trpo.cg_damping)})"
        )
    if reason == StepRejection.POLICY:
        return (
            f"{config.env.id} or the policy produce non-finite values; check env.kwargs and "
            "the family's dynamics"
        )
    return f"inner step α={_num(config.maml.fast_lr)} makes {what} non-finite; lower maml.fast_lr"


def new_run_dir(config: Config) -> Path:
    """Create and return a fresh run folder, ``<logdir>/<run_name>`` or
    ``<logdir>/<env>-<agent>-<time>``.

    The folder is claimed with an exclusive ``mkdir``, so two runs started in the same second
    (e.g. two presets launched together) get two folders, never one shared folder.
    """
    check_new_run_dir(config)
    logdir = Path(config.logdir)
    if config.run_name is not None:
        run_dir = logdir / config.run_name
        _mkdir(run_dir, parents=True, exist_ok=True)
        return run_dir
    _mkdir(logdir, parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{config.env_name}-{config.agent}-{stamp}"
    run_dir, n = logdir / base, 1
    while True:
        try:
            _mkdir(run_dir)  # atomic: fails if another run claimed the name first
            return run_dir
        except FileExistsError:
            n += 1
            run_dir = logdir / f"{base}-{n}"


_LOGDIR_FIX = "pass a writable folder with --logdir DIR (or logdir=DIR)"


def check_new_run_dir(config: Config) -> None:
    """Check, creating nothing, that :func:`new_run_dir` can create the run folder.

    Raises:
        ValueError: one line — ``logdir`` is a file or not writable, or the folder
            ``run_name`` names exists and is not empty.
    """
    logdir = Path(config.logdir)
    if config.run_name is None:
        check_writable_folder(logdir, "logdir", _LOGDIR_FIX)
        return
    run_dir = logdir / config.run_name
    check_writable_folder(run_dir, "run folder", _LOGDIR_FIX)
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise ValueError(
            f"run folder {str(run_dir)!r} already exists and is not empty; resume it with "
            f"--resume {run_dir} or choose another run_name"
        )


def _resumable(key: str) -> bool:
    return key in RESUMABLE_KEYS or key.startswith(_RESUMABLE_PREFIXES)


def _config_yaml_edits(run_dir: Path, stored: Config) -> dict[str, tuple[Any, Any]]:
    """``{key: (checkpoint's value, config.yaml's value)}`` for each key of the run's
    ``config.yaml`` edited since the checkpoint; a :class:`ValueError` naming them if any
    of them a resumed run cannot take."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    try:
        edited = load_config(path).flat()
    except ValueError as exc:
        raise ValueError(
            f"{exc} (resuming {run_dir}: fix {path}, or delete it to resume with the "
            "checkpoint's config)"
        ) from None
    old = stored.flat()
    edits = {k: (old[k], v) for k, v in edited.items() if v != old[k]}
    refused = [k for k in edits if not _resumable(k)]
    if refused:
        changes = ", ".join(f"{k} {edits[k][0]!r} → {edits[k][1]!r}" for k in refused)
        may = ", ".join([*RESUMABLE_KEYS, *(f"{p}*" for p in _RESUMABLE_PREFIXES)])
        raise ValueError(
            f"{path} differs from the config in the checkpoint: {changes}; a resumed run "
            f"keeps its config (only {may} may change): undo the edit, or train a new run "
            f"with it: maml-rl train --config {path} run_name=NEW"
        )
    return edits


def _run_folder(path: str | Path) -> Path:
    """The run folder to resume: ``path``, or the folder of ``path/checkpoint.pt``."""
    p = Path(path)
    if not p.is_file():
        return p
    if p.name == CHECKPOINT_NAME:
        return p.parent
    raise ValueError(
        f"resume takes a run folder, and {str(p)!r} is a file: to continue from this "
        f"checkpoint, copy it as {CHECKPOINT_NAME} into a new folder and resume that folder "
        f"(maml-rl evaluate takes the file as it is)"
    )


def _mkdir(folder: Path, **kwargs: bool) -> None:
    """``folder.mkdir(**kwargs)``; a failure is one line (``FileExistsError`` passes)."""
    try:
        folder.mkdir(**kwargs)
    except FileExistsError:
        raise
    except OSError as exc:
        reason = os_reason(exc)
        raise ValueError(f"cannot create {str(folder)!r}: {reason}; {_LOGDIR_FIX}") from None


def _mean_or_nan(values: torch.Tensor | None) -> float:
    return float(values.float().mean()) if values is not None else math.nan


def _mean_return(batch: EpisodeBatch) -> float:
    return float(batch.episode_returns.mean())


def _detached(params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in params.items()}


def _finite_batch(batch: EpisodeBatch) -> bool:
    """Whether the batch's observations, rewards and log-probabilities are finite (a
    non-finite action shows as a non-finite log-probability)."""
    return all_finite([batch.observations, batch.rewards, batch.log_probs])


class Trainer:
    """Runs meta-training for one run folder.

    Build it with a config (a new run) or with :meth:`resume` (continue a run from
    its checkpoint); then :meth:`train`. The run folder holds ``config.yaml``,
    ``metrics.jsonl``, the TensorBoard event files and ``checkpoint.pt``.

    Args:
        config: the run's config.
        run_dir: the run folder (created if needed); ``None``: :func:`new_run_dir`.
        console: print one line per iteration to stdout.
        loggers: extra loggers (e.g. :class:`~maml_rl.logger.InMemoryLogger`) besides
            the run folder's TensorBoard and ``metrics.jsonl``.
        state: a loaded checkpoint to continue from (use :meth:`resume`).
    """

    def __init__(
        self,
        config: Config,
        run_dir: str | Path | None = None,
        *,
        console: bool = True,
        loggers: Sequence[Logger] = (),
        state: Mapping[str, Any] | None = None,
    ) -> None:
        from maml_rl.samplers import make_sampler

        self.config = config
        self.device = resolve_device(config.device)
        # An unknown id fails here, with the closest registered id as a suggestion.
        self.family: type[TaskFamily] = family_class(config.env.id)
        # The output folder is checked before any work, and a new run's folder is only
        # created once the sampler runs: a run that fails to start leaves nothing behind.
        if run_dir is not None:
            check_writable_folder(
                run_dir, "run folder", "make it writable, or copy the run and resume the copy"
            )
        else:
            check_new_run_dir(config)
        self.iteration = 0
        self.env_steps = 0
        #: The iteration of the newest ``checkpoint.pt`` in the run folder (None: none yet).
        self.checkpointed: int | None = None
        #: ``{key: (checkpoint's value, value taken)}``: the edits of ``config.yaml`` that
        #: :meth:`resume` took.
        self.config_edits: dict[str, tuple[Any, Any]] = {}

        sampler = None  # closed again if anything after it fails
        try:
            self.policy = build_policy(config)
            self.sampler = sampler = make_sampler(
                config.env.id,
                self.policy,
                backend=config.sampler.backend,
                num_workers=config.sampler.num_workers,
                ray_address=config.sampler.ray_address,
                env_kwargs=dict(config.env.kwargs),
                max_episode_steps=config.env.max_episode_steps,
                num_threads=config.sampler.num_threads or None,
                restart_workers=config.sampler.restart_workers,
                ray_connect_timeout_s=config.sampler.ray_connect_timeout_s,
            )
            self.agent: Agent = build_agent(config, self.policy, self.device)
            if state is not None:
                self._load_state(state)
                self.checkpointed = self.iteration
            self.run_dir = Path(run_dir) if run_dir is not None else new_run_dir(config)
            try:
                self._open_run_dir(config, state is not None, console, loggers)
            except OSError as exc:
                where = exc.filename or self.run_dir
                raise ValueError(
                    f"cannot write {str(where)!r}: {os_reason(exc)}; {os_remedy(exc)}"
                ) from None
            self._video_off: str | None = None
        except BaseException:
            if sampler is not None:
                sampler.close()
            self._discard_unused_run_dir(run_dir)
            raise
        self._closed = False

    def _open_run_dir(
        self, config: Config, resuming: bool, console: bool, loggers: Sequence[Logger]
    ) -> None:
        """Write ``config.yaml`` and open the loggers (clearing a killed writer's leftovers)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.run_dir)
        (self.run_dir / "config.yaml").write_text(
            f"# maml-rl {maml_rl.__version__}: the resolved config of this run\n"
            + dump_yaml(config.to_dict()),
            encoding="utf-8",
        )
        self._tensorboard = TensorBoardLogger(
            self.run_dir,
            config=config.flat(),
            purge_step=self.env_steps + 1 if resuming else None,
        )
        self.logger: Logger = MultiLogger(
            [
                self._tensorboard,
                JsonlLogger(
                    self.run_dir / "metrics.jsonl",
                    keep_until_iteration=self.iteration if resuming else None,
                ),
                *([ConsoleLogger(config.num_batches)] if console else []),
                *loggers,
            ]
        )

    def _discard_unused_run_dir(self, given: str | Path | None) -> None:
        # A run that never started leaves no empty folder behind (one it was given is kept).
        run_dir: Path | None = getattr(self, "run_dir", None)
        if (
            given is None
            and run_dir is not None
            and run_dir.is_dir()
            and not any(run_dir.iterdir())
        ):
            run_dir.rmdir()

    # -- construction from a checkpoint ------------------------------------------
    @classmethod
    def resume(
        cls,
        run_dir: str | Path,
        overrides: Sequence[str] | Mapping[str, Any] = (),
        **kwargs: Any,
    ) -> Trainer:
        """Continue the run in ``run_dir`` from its checkpoint.

        ``overrides`` may change only :data:`RESUMABLE_KEYS` and ``sampler.*`` (e.g.
        more ``num_batches``, another backend); anything else would make the resumed
        run differ from an uninterrupted one and raises a :class:`ValueError`. The same
        holds for edits of the run's ``config.yaml`` made since the checkpoint: edits of
        those keys are taken (listed in :attr:`config_edits`; ``overrides`` win), any
        other edit is refused, naming each key that differs.
        """
        run_dir = _run_folder(run_dir)
        state = load_checkpoint(run_dir)
        try:
            stored = config_from_dict(state["config"])
        except ValueError as exc:
            raise ValueError(f"checkpoint in {run_dir} holds an invalid config: {exc}") from None
        edits = _config_yaml_edits(run_dir, stored)
        config = stored.replace({k: new for k, (_, new) in edits.items()}) if edits else stored
        config = config.replace(overrides) if overrides else config
        old, new = stored.flat(), config.flat()
        edits = {k: edit for k, edit in edits.items() if new[k] == edit[1]}  # overrides win
        for key in new:
            if new[key] != old[key] and not _resumable(key):
                raise ValueError(
                    f"a resumed run keeps its config, but {key} would change from {old[key]!r} "
                    f"to {new[key]!r}; start a new run to change it"
                )
        if state["iteration"] >= config.num_batches:
            raise ValueError(
                f"the run in {run_dir} already finished {state['iteration']} of "
                f"{config.num_batches} iterations; pass --num-batches N (N > "
                f"{state['iteration']}) to continue it"
            )
        trainer = cls(config, run_dir, state=state, **kwargs)
        trainer.config_edits = edits
        return trainer

    # -- state -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The checkpoint dict of the current state (cloned: later updates don't alter it)."""
        return {
            "format_version": FORMAT_VERSION,
            "maml_rl_version": maml_rl.__version__,
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "config": self.config.to_dict(),
            "policy": {k: v.detach().cpu().clone() for k, v in self.policy.state_dict().items()},
            "agent": copy.deepcopy(self.agent.state_dict()),
            "rng": {"seed": self.config.seed, "torch": torch.get_rng_state()},
        }

    def _load_state(self, state: Mapping[str, Any]) -> None:
        try:
            self.policy.load_state_dict(state["policy"])
            self.agent.load_state_dict(state["agent"])
        except (RuntimeError, KeyError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"checkpoint does not fit this run's policy/agent: {first}") from None
        torch.set_rng_state(state["rng"]["torch"])
        self.iteration = int(state["iteration"])
        self.env_steps = int(state["env_steps"])

    def save_checkpoint(self, state: Mapping[str, Any] | None = None) -> Path:
        """Write ``checkpoint.pt`` (the current state, or a given :meth:`state_dict`).

        Raises:
            RunStopped: the write failed (e.g. a full disk); the previous checkpoint is
                intact and the message says so.
        """
        state = state or self.state_dict()
        with self._writing():
            path = save_checkpoint(self.run_dir / CHECKPOINT_NAME, state)
        self.checkpointed = int(state["iteration"])
        return path

    def kept_checkpoint_path(self, iteration: int) -> Path:
        """Where ``keep_checkpoint_every`` keeps the checkpoint of ``iteration``."""
        return self.run_dir / "checkpoints" / f"iteration_{iteration:06d}.pt"

    # -- the loop --------------------------------------------------------------
    def run_iteration(self) -> dict[str, float]:
        """One meta-iteration (see the module docstring); returns its metrics.

        It runs on ``update_threads`` torch threads (the sampler runs its calls on one).
        """
        with torch_threads(self.config.update_threads):
            return self._run_iteration()

    def _run_iteration(self) -> dict[str, float]:
        cfg = self.config
        num_steps = cfg.maml.num_adapt_steps
        task_rng, sample_seeds, torch_seed = iteration_seeds(
            cfg.seed, self.iteration, num_steps + 1
        )
        torch.manual_seed(torch_seed)
        tasks = sample_training_tasks(self.family, cfg.maml.meta_batch_size, task_rng)

        t_start = time.perf_counter()
        sample_s = adapt_s = 0.0
        params: Mapping[str, torch.Tensor] = _detached(self.policy.params())
        # A non-finite rollout or adapted policy rejects the iteration's step before the
        # agent sees it (nothing is sampled with non-finite parameters).
        rejected = StepRejection.NONE if all_finite(params.values()) else StepRejection.POLICY
        train_batches: list[EpisodeBatch] = []
        for k in range(num_steps):
            if rejected:
                break
            t0 = time.perf_counter()
            batch = self.sampler.sample(tasks, params, cfg.maml.fast_batch_size, sample_seeds[k])
            t1 = time.perf_counter()
            train_batches.append(batch)
            sample_s += t1 - t0
            if not _finite_batch(batch):
                rejected = StepRejection.POLICY if k == 0 else StepRejection.ADAPTED
                break
            # The adapted parameters only drive the next rollouts here; agent.step
            # recomputes the adaptation with the graph it needs.
            params = _detached(self.agent.adapt(params, batch))
            adapt_s += time.perf_counter() - t1
            if not all_finite(params.values()):
                rejected = StepRejection.ADAPTED
        valid: EpisodeBatch | None = None
        t1 = time.perf_counter()
        if not rejected:
            t0 = time.perf_counter()
            valid = self.sampler.sample(tasks, params, cfg.maml.fast_batch_size, sample_seeds[-1])
            t1 = time.perf_counter()
            sample_s += t1 - t0
            if not _finite_batch(valid):
                rejected = StepRejection.ADAPTED
        if valid is None or rejected:
            agent_metrics = {"train/step_accepted": 0.0, REJECTION_TAG: float(rejected)}
        else:
            agent_metrics = self.agent.step(train_batches, valid)
        t_end = time.perf_counter()

        sampled = [*train_batches, *([valid] if valid is not None else [])]
        steps = sum(b.env_steps for b in sampled)
        self.iteration += 1
        self.env_steps += steps
        metrics: dict[str, float] = {"iteration": self.iteration}
        metrics["rollout/return_pre_adapt"] = (
            _mean_return(train_batches[0]) if train_batches else math.nan
        )
        for k, b in enumerate(train_batches[1:], start=1):
            metrics[f"rollout/return_adapt_step_{k}"] = _mean_return(b)
        metrics["rollout/return_post_adapt"] = (
            _mean_return(valid) if valid is not None else math.nan
        )
        # A rejected iteration may lack the post-adaptation episodes: NaN (null in JSON).
        pre_success = train_batches[0].episode_success if train_batches else None
        post_success = valid.episode_success if valid is not None else None
        if pre_success is not None or post_success is not None:
            metrics["rollout/success_pre_adapt"] = _mean_or_nan(pre_success)
            metrics["rollout/success_post_adapt"] = _mean_or_nan(post_success)
        lengths = [b.lengths.flatten() for b in sampled]
        metrics["rollout/episode_length"] = (
            float(torch.cat(lengths).float().mean()) if lengths else math.nan
        )
        metrics.update({k: float(v) for k, v in agent_metrics.items()})
        iteration_s = t_end - t_start
        metrics["time/sample_s"] = sample_s
        metrics["time/adapt_s"] = adapt_s
        metrics["time/update_s"] = t_end - t1
        metrics["time/iteration_s"] = iteration_s
        metrics["time/env_steps_per_s"] = steps / iteration_s if iteration_s > 0 else float("nan")
        return metrics

    def log_video(self) -> list[str]:
        """Render the current policy adapting (see the module docstring) to TensorBoard
        ``eval/video_step_<k>`` at the current env step; the tags written.

        Where frames cannot be rendered (no GL backend for MuJoCo, a family without
        ``rgb_array``) one line says so on stderr, once, and no videos are logged.
        """
        from maml_rl.evaluation.curve import adaptation_curve
        from maml_rl.evaluation.protocol import (
            default_fast_lr_schedule,
            held_out_tasks,
            horizon,
            sampler_seeds,
            step_learning_rates,
        )
        from maml_rl.evaluation.video import RenderUnavailable, log_step_videos, render_adaptation

        if self._video_off is not None:
            return []
        cfg = self.config
        k = cfg.maml.num_adapt_steps
        tasks = held_out_tasks(cfg.env.id, cfg.video_tasks, seed=0).tasks
        schedule = cfg.eval.fast_lr_schedule or default_fast_lr_schedule(cfg.maml.fast_lr)
        seeds = sampler_seeds(0, k)
        # A CPU copy: the learner's policy may live on a GPU, the rollouts do not.
        policy = copy.deepcopy(self.policy).cpu() if self.device.type != "cpu" else self.policy
        with torch_threads(self.config.update_threads):
            curve = adaptation_curve(
                self.sampler, policy, tasks,
                episodes=cfg.eval.episodes_per_step or cfg.maml.fast_batch_size,
                fast_lrs=step_learning_rates(schedule, k), seeds=seeds, gamma=cfg.maml.gamma,
                gae_lambda=cfg.maml.gae_lambda, keep_params=True,
            )  # fmt: skip
        if curve.params is None:
            raise RuntimeError("adaptation_curve kept no parameters")
        try:
            videos = render_adaptation(
                cfg.env.id, cfg.env.kwargs, horizon(cfg, cfg.env.id), policy, curve.params, tasks,
                range(len(tasks)), seeds,
            )  # fmt: skip
        except RenderUnavailable as exc:
            self._video_off = str(exc)
            print(f"maml-rl: no training videos: {exc}", file=sys.stderr, flush=True)
            return []
        return log_step_videos(videos, self._tensorboard, self.env_steps)

    def train(self) -> dict[str, float]:
        """Run the remaining iterations up to ``num_batches``; returns the last metrics.

        Checkpoints every ``checkpoint_every`` iterations and at the end. On Ctrl-C
        (or a console that went away: a closed stdout pipe) the state after the last
        *finished* iteration is checkpointed, the sampler shut down, and
        :class:`Interrupted` raised. After ``max_rejected_iterations``
        consecutive rejected meta-steps (``θ`` unchanged by each), at least one of them
        abnormal (a non-finite value or a zero meta-gradient), the state is checkpointed
        and :class:`Diverged` raised, naming the likely cause.
        """
        cfg = self.config
        metrics: dict[str, float] = {}
        last_done = self.state_dict()
        rejected: list[StepRejection] = []  # why each iteration since the last step failed
        try:
            while self.iteration < cfg.num_batches:
                metrics = self.run_iteration()
                with self._writing():
                    self.logger.write(metrics, step=self.env_steps)
                reason = StepRejection(int(metrics.get(REJECTION_TAG, 0)))
                rejected = [*rejected, reason] if reason != StepRejection.NONE else []
                limit = cfg.max_rejected_iterations
                if limit and len(rejected) >= limit and any(r.abnormal for r in rejected):
                    # θ and the optimiser are still those of the last accepted step.
                    self.save_checkpoint()
                    raise Diverged(self._diverged_message(rejected))
                if cfg.video_every and self.iteration % cfg.video_every == 0:
                    self.log_video()
                every = cfg.checkpoint_every
                # Kept so that Ctrl-C in the middle of an update (which changes θ in
                # place) checkpoints a consistent state.
                last_done = self.state_dict()
                if every and self.iteration % every == 0 and self.iteration < cfg.num_batches:
                    self.save_checkpoint(last_done)
                keep = cfg.keep_checkpoint_every
                if keep and self.iteration % keep == 0:
                    with self._writing():
                        save_checkpoint(self.kept_checkpoint_path(self.iteration), last_done)
            self.save_checkpoint(last_done)
        except WorkerDied as exc:
            self.save_checkpoint(last_done)
            raise RunStopped(
                f"training stopped: {exc.summary}; the checkpoint of iteration "
                f"{last_done['iteration']} is in {self.run_dir}; continue with: maml-rl train "
                f"--resume {self.run_dir} (sampler.restart_workers=true replaces dead workers)"
            ) from None
        except (KeyboardInterrupt, BrokenPipeError):
            self.save_checkpoint(last_done)
            raise Interrupted(self.run_dir, last_done["iteration"], cfg.num_batches) from None
        finally:
            with self._writing():
                self.close()
        return metrics

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A failed write to the run folder (a full disk, a folder made read-only) stops
        training with one line: what failed, the last good checkpoint, how to go on."""
        try:
            yield
        except BrokenPipeError:  # the console went away (`| head`): stopped like Ctrl-C
            raise
        except OSError as exc:
            path = exc.filename or self.run_dir
            if self.checkpointed is None:
                kept = f"no checkpoint was written yet; {os_remedy(exc)} and start the run again"
            else:
                kept = (
                    f"the checkpoint of iteration {self.checkpointed} in {self.run_dir} is "
                    f"intact; {os_remedy(exc)}, then continue with: maml-rl train --resume "
                    f"{self.run_dir}"
                )
            raise RunStopped(
                f"training stopped: cannot write {str(path)!r} ({os_reason(exc)}); {kept}"
            ) from None

    def _diverged_message(self, rejected: Sequence[StepRejection]) -> str:
        counts = collections.Counter(rejected)
        why = ", ".join(f"{r.text} ×{n}" for r, n in counts.items())
        cause = max((r for r in counts if r.abnormal), key=lambda r: counts[r])
        first = self.iteration - len(rejected) + 1
        likely = likely_cause(cause, self.config, after_a_step=first > 1)
        return (
            f"training stopped: the steps of iterations {first}-{self.iteration} were all "
            f"rejected ({why}); likely cause: {likely}; the checkpoint in {self.run_dir} "
            f"holds θ as of iteration {first - 1}"
        )

    def close(self) -> None:
        """Shut down the sampler's workers and close the loggers (idempotent)."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        try:
            self.sampler.close()
        finally:
            self.logger.close()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
