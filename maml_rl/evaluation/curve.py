"""The adaptation curve: sample, adapt, sample again, from a policy's own parameters."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from maml_rl.agents.maml import TaskSamples, inner_step
from maml_rl.agents.policies import Params, Policy
from maml_rl.batch import EpisodeBatch
from maml_rl.evaluation.report import CurveEntry
from maml_rl.evaluation.stats import CONFIDENCE, mean_confidence_interval
from maml_rl.samplers import Sampler
from maml_rl.tasks import Task

__all__ = ["Curve", "Progress", "adapt", "adaptation_curve"]


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


class Progress:
    """A tqdm bar on stderr (or nothing, when not ``enabled``) with an ``update()``."""

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

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
