"""The adaptation curve: sample, adapt, sample again, from a policy's own parameters; the
samplers and progress bars of an evaluation."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from maml_rl.agents.maml import TaskSamples, inner_step
from maml_rl.agents.policies import Params, Policy
from maml_rl.batch import EpisodeBatch
from maml_rl.config import Config
from maml_rl.evaluation.report import CurveEntry, SuccessEntry
from maml_rl.evaluation.stats import CONFIDENCE, mean_confidence_interval
from maml_rl.samplers import Sampler, make_sampler
from maml_rl.tasks import Task

__all__ = ["Curve", "EvalSamplers", "Progress", "adapt", "adaptation_curve"]


@dataclasses.dataclass(frozen=True)
class Curve:
    """Returns of ``N`` tasks after ``0..K`` adaptation steps.

    Attributes:
        returns: ``[K + 1, N, E]`` undiscounted episode returns.
        fast_lr: the ``K`` step sizes used.
        env_steps: ``[K + 1]`` cumulative environment steps per task, up to and
            including the episodes of each step.
        success: ``[K + 1, N, E]`` 1 for an episode that succeeded at any step, for
            families that report ``info["success"]``; else ``None``.
        params: ``[K + 1]`` parameters of the sample calls (θ, shared by the tasks, then
            the adapted ones stacked ``[N, ...]``), kept only when asked for (videos).
    """

    returns: np.ndarray
    fast_lr: list[float]
    env_steps: list[float]
    success: np.ndarray | None = None
    params: list[Params] | None = None

    def to_dict(self, confidence: float = CONFIDENCE) -> CurveEntry:
        """The ``CURVE`` object of ``eval.json`` (:mod:`maml_rl.evaluation.report`)."""
        k1, n, _ = self.returns.shape
        task_means = self.returns.mean(axis=2)  # [K + 1, N]
        means, halves = zip(*(mean_confidence_interval(m, confidence) for m in task_means),
                            strict=True)  # fmt: skip
        per_task_ci = [
            [mean_confidence_interval(self.returns[k, i], confidence)[1] for i in range(n)]
            for k in range(k1)
        ]
        entry: CurveEntry = {
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
        if k1 > 1:
            # Paired over the tasks: step k minus step 0 on the same task and seeds. The
            # tasks differ far more from each other than adaptation changes any one of
            # them, so this interval is the one that says whether the steps help.
            gains = [mean_confidence_interval(m - task_means[0], confidence) for m in task_means]
            entry["gain"] = [g for g, _ in gains]
            entry["gain_ci95"] = [None, *(h for _, h in gains[1:])]
        if self.success is not None:
            entry["success"] = _success_entry(self.success, confidence)
        return entry


def _success_entry(success: np.ndarray, confidence: float) -> SuccessEntry:
    """Success rate after each step: mean over tasks of each task's rate, its interval."""
    rates = success.mean(axis=2)  # [K + 1, N]
    means, halves = zip(*(mean_confidence_interval(r, confidence) for r in rates), strict=True)
    return {"mean": list(means), "ci95": list(halves), "per_task_mean": rates.tolist()}


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
    keep_params: bool = False,
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
        keep_params: keep each sample call's parameters in :attr:`Curve.params`.
    """
    if len(seeds) != len(fast_lrs) + 1:
        raise ValueError(f"need {len(fast_lrs) + 1} sampler seeds, got {len(seeds)}")
    params: Mapping[str, torch.Tensor] = {k: v.detach() for k, v in policy.named_parameters()}
    returns, successes, env_steps, total = [], [], [], 0.0
    kept: list[Params] = []
    for k, seed in enumerate(seeds):
        if keep_params:
            kept.append(dict(params))
        batch = sampler.sample(list(tasks), params, episodes, int(seed))
        returns.append(batch.episode_returns.double().numpy())
        if batch.episode_success is not None:
            successes.append(batch.episode_success.double().numpy())
        total += batch.env_steps / len(tasks)
        env_steps.append(total)
        if progress is not None:
            progress()
        if k < len(fast_lrs) and fast_lrs[k] != 0.0:
            params = adapt(policy, params, batch, fast_lrs[k], gamma=gamma,
                           gae_lambda=gae_lambda)  # fmt: skip
    success = np.stack(successes) if successes else None
    return Curve(np.stack(returns), [float(lr) for lr in fast_lrs], env_steps, success,
                 kept if keep_params else None)  # fmt: skip


class Progress:
    """A tqdm bar on stderr (or nothing, when not ``enabled``) with an ``update()``."""

    def __init__(self, enabled: bool, total: int, desc: str) -> None:
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="step", leave=True, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        if self._bar is not None and n:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EvalSamplers:
    """The samplers of one evaluation, shared by every method with the same env and policy
    architecture (parameters travel with each sample call), so that ``process``/``ray``
    workers start once rather than once per method.

    Args:
        backend: the sampler backend (``None``: each run's own).
        num_workers: its workers (``None``: each run's own).
    """

    def __init__(self, backend: str | None = None, num_workers: int | None = None) -> None:
        self._backend = backend
        self._num_workers = num_workers
        self._samplers: dict[tuple[Any, ...], Sampler] = {}

    def get(self, config: Config, policy: Policy, env_id: str | None = None) -> Sampler:
        """The sampler of ``policy``'s architecture in ``env_id`` (default: the config's)."""
        env_id = env_id or config.env.id
        s = config.sampler
        backend = self._backend or s.backend
        workers = self._num_workers or s.num_workers
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

    def __enter__(self) -> EvalSamplers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
