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

import copy
import datetime
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

import maml_rl
from maml_rl.agents.base import Agent
from maml_rl.batch import EpisodeBatch
from maml_rl.checkpoint import CHECKPOINT_NAME, FORMAT_VERSION, load_checkpoint, save_checkpoint
from maml_rl.config import Config, config_from_dict, dump_yaml
from maml_rl.factories import build_agent, build_policy, resolve_device
from maml_rl.logger import ConsoleLogger, JsonlLogger, Logger, MultiLogger, TensorBoardLogger
from maml_rl.seeding import iteration_seeds
from maml_rl.tasks import TaskFamily, family_class, sample_training_tasks
from maml_rl.threads import torch_threads

__all__ = [
    "RESUMABLE_KEYS",
    "Interrupted",
    "Trainer",
    "new_run_dir",
]

#: Config keys a resumed run may change: they only extend the run, or do not alter
#: what is computed (every sampler backend gives identical episodes; another device
#: may change the last bits of the update, not its meaning).
RESUMABLE_KEYS = (
    "num_batches",
    "checkpoint_every",
    "keep_checkpoint_every",
    "video_every",
    "video_tasks",
    "device",
    "update_threads",
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


def new_run_dir(config: Config) -> Path:
    """Create and return a fresh run folder, ``<logdir>/<run_name>`` or
    ``<logdir>/<env>-<agent>-<time>``.

    The folder is claimed with an exclusive ``mkdir``, so two runs started in the same second
    (e.g. two presets launched together) get two folders, never one shared folder.
    """
    logdir = Path(config.logdir)
    if config.run_name is not None:
        run_dir = logdir / config.run_name
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ValueError(
                f"run folder {str(run_dir)!r} already exists and is not empty; resume it with "
                f"--resume {run_dir} or choose another run_name"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    logdir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{config.env_name}-{config.agent}-{stamp}"
    run_dir, n = logdir / base, 1
    while True:
        try:
            run_dir.mkdir()  # atomic: fails if another run claimed the name first
            return run_dir
        except FileExistsError:
            n += 1
            run_dir = logdir / f"{base}-{n}"


def _mean_return(batch: EpisodeBatch) -> float:
    return float(batch.episode_returns.mean())


def _detached(params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in params.items()}


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
        self.run_dir = Path(run_dir) if run_dir is not None else new_run_dir(config)
        self.iteration = 0
        self.env_steps = 0

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
            )
            self.agent: Agent = build_agent(config, self.policy, self.device)
            if state is not None:
                self._load_state(state)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(
                f"# maml-rl {maml_rl.__version__}: the resolved config of this run\n"
                + dump_yaml(config.to_dict()),
                encoding="utf-8",
            )
            resuming = state is not None
            self._tensorboard = TensorBoardLogger(
                self.run_dir,
                config=config.flat(),
                purge_step=self.env_steps + 1 if resuming else None,
            )
            self._video_off: str | None = None
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
        except BaseException:
            if sampler is not None:
                sampler.close()
            self._discard_unused_run_dir(run_dir)
            raise
        self._closed = False

    def _discard_unused_run_dir(self, given: str | Path | None) -> None:
        # A run that never started leaves no empty folder behind (one it was given is kept).
        if given is None and self.run_dir.is_dir() and not any(self.run_dir.iterdir()):
            self.run_dir.rmdir()

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
        run differ from an uninterrupted one and raises a :class:`ValueError`.
        """
        state = load_checkpoint(run_dir)
        try:
            stored = config_from_dict(state["config"])
        except ValueError as exc:
            raise ValueError(f"checkpoint in {run_dir} holds an invalid config: {exc}") from None
        config = stored.replace(overrides) if overrides else stored
        old, new = stored.flat(), config.flat()
        for key in new:
            if new[key] != old[key] and not (
                key in RESUMABLE_KEYS or key.startswith(_RESUMABLE_PREFIXES)
            ):
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
        return cls(config, run_dir, state=state, **kwargs)

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
        """Write ``checkpoint.pt`` (the current state, or a given :meth:`state_dict`)."""
        return save_checkpoint(self.run_dir / CHECKPOINT_NAME, state or self.state_dict())

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
        train_batches: list[EpisodeBatch] = []
        for k in range(num_steps):
            t0 = time.perf_counter()
            batch = self.sampler.sample(tasks, params, cfg.maml.fast_batch_size, sample_seeds[k])
            t1 = time.perf_counter()
            # The adapted parameters only drive the next rollouts here; agent.step
            # recomputes the adaptation with the graph it needs.
            params = _detached(self.agent.adapt(params, batch))
            sample_s += t1 - t0
            adapt_s += time.perf_counter() - t1
            train_batches.append(batch)
        t0 = time.perf_counter()
        valid = self.sampler.sample(tasks, params, cfg.maml.fast_batch_size, sample_seeds[-1])
        t1 = time.perf_counter()
        sample_s += t1 - t0
        agent_metrics = self.agent.step(train_batches, valid)
        t_end = time.perf_counter()

        steps = sum(b.env_steps for b in train_batches) + valid.env_steps
        self.iteration += 1
        self.env_steps += steps
        lengths = torch.cat([b.lengths.flatten() for b in (*train_batches, valid)])
        metrics: dict[str, float] = {"iteration": self.iteration}
        metrics["rollout/return_pre_adapt"] = _mean_return(train_batches[0])
        for k, b in enumerate(train_batches[1:], start=1):
            metrics[f"rollout/return_adapt_step_{k}"] = _mean_return(b)
        metrics["rollout/return_post_adapt"] = _mean_return(valid)
        pre_success, post_success = train_batches[0].episode_success, valid.episode_success
        if pre_success is not None and post_success is not None:
            metrics["rollout/success_pre_adapt"] = float(pre_success.mean())
            metrics["rollout/success_post_adapt"] = float(post_success.mean())
        metrics["rollout/episode_length"] = float(lengths.float().mean())
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
        the state after the last *finished* iteration is checkpointed, the sampler
        shut down, and :class:`Interrupted` raised.
        """
        cfg = self.config
        metrics: dict[str, float] = {}
        last_done = self.state_dict()
        try:
            while self.iteration < cfg.num_batches:
                metrics = self.run_iteration()
                self.logger.write(metrics, step=self.env_steps)
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
                    save_checkpoint(self.kept_checkpoint_path(self.iteration), last_done)
            self.save_checkpoint(last_done)
        except KeyboardInterrupt:
            self.save_checkpoint(last_done)
            raise Interrupted(self.run_dir, last_done["iteration"], cfg.num_batches) from None
        finally:
            self.close()
        return metrics

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
