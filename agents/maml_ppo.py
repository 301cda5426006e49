"""MAML-PPO and ProMP: a clipped-surrogate meta-update with Adam.

The outer objective is PPO's clipped surrogate (Schulman et al., 2017) on the
post-adaptation (validation) episodes, as a function of the meta-parameters ``θ``
*through* the adaptation::

    θ'_i(θ) = adapt(θ, train episodes of task i)                     (agents.maml)
    r_i(θ)  = π_θ'_i(a|s) / π_old,i(a|s)
    L(θ)    = − 1/N Σ_i mean_valid[ min(r_i A_i, clip(r_i, 1 − ε, 1 + ε) A_i) ]
              + 1/K Σ_k η_k · KL_k(θ)                                  (optional)

``π_old,i`` is the adapted policy that sampled the validation episodes; it is fixed at
the start of :meth:`MAMLPPO.step` (computed from the ``θ`` the trainer sampled with).
Each of the ``ppo_epochs`` epochs re-runs the adaptation *from the current* ``θ``, with
the graph (second order unless ``first_order``), and takes one Adam step on the full
batch of tasks — after the first epoch ``θ`` has moved, so ``θ'_i(θ)``, the ratio and
the meta-gradient all change, which is what makes several epochs per batch sound.

**ProMP** (Rothfuss et al., ICLR 2019) is this update with the ``lvc`` inner objective
and a KL penalty on the *pre-update* policies: ``KL_k`` is the mean
``KL(π_old^(k) ‖ π^(k)_θ)`` over the train states of inner step ``k``, between the
policy that sampled them (fixed at the start of the step) and the current pre-update
policy of that step (``θ`` itself for ``k = 1``). The clipping keeps the adapted
policies near the ones that sampled the validation episodes; the penalty does the same
for the pre-update policies, whose samples the LVC ratio reweights (ProMP's code,
``meta_algos/pro_mp.py``: the "inner KL"). With ``adaptive_inner_kl`` each ``η_k`` is
halved when ``KL_k`` after the step is below ``target / 1.5`` and doubled above
``1.5 · target`` (ProMP's and PPO-penalty's rule).

Early stopping: with ``target_kl`` set, an epoch whose mean ``KL(π_old ‖ π_θ')`` on the
validation states exceeds it stops the update before its step. The KL is the exact one
of the action distributions (as MAML-TRPO's ``max_kl`` constrains), not PPO's sample
estimate: both distributions are at hand.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.distributions import Distribution, kl_divergence

from maml_rl.agents.maml import (
    InnerLoop,
    MAMLConfig,
    TaskSamples,
    check_meta_batches,
    detach_distribution,
)
from maml_rl.agents.policies import Policy
from maml_rl.batch import EpisodeBatch
from maml_rl.divergence import REJECTION_TAG, StepRejection, all_finite
from maml_rl.validation import Validated, bounded

__all__ = ["MAMLPPO", "PPOConfig", "clipped_surrogate", "update_kl_coefficient"]


def clipped_surrogate(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate loss, per-task masked means averaged over tasks.

    Args:
        log_probs: ``[N, M]`` log-probabilities of the actions under the current
            (adapted) policies, with the graph.
        old_log_probs: ``[N, M]`` the same under the sampling policies (constants).
        advantages: ``[N, M]``.
        weights: ``[N, M]`` per-task averaging weights (``mask / count``).
        clip_range: ``ε``.

    Returns:
        ``(loss, ratio, clip_fraction)``: the scalar loss
        ``−mean_i Σ_m w·min(r A, clip(r, 1 − ε, 1 + ε) A)``, the ``[N, M]`` ratios
        (with the graph) and the (detached) weighted fraction of samples with
        ``|r − 1| > ε``.
    """
    ratio = torch.exp(log_probs - old_log_probs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range) * advantages
    loss = -(torch.minimum(unclipped, clipped) * weights).sum(1).mean()
    outside = ((ratio.detach() - 1.0).abs() > clip_range).to(weights.dtype)
    clip_fraction = (outside * weights).sum(1).mean()
    return loss, ratio, clip_fraction


def update_kl_coefficient(coef: float, kl: float, target: float) -> float:
    """ProMP's adaptive penalty rule: halve below ``target / 1.5``, double above ``1.5 ·
    target``, else keep."""
    if kl < target / 1.5:
        return coef / 2.0
    if kl > target * 1.5:
        return coef * 2.0
    return coef


def _mean_kl(old: Distribution, new: Distribution, weights: torch.Tensor) -> torch.Tensor:
    """Mean over tasks of the per-task masked mean of ``KL(old ‖ new)``."""
    return (kl_divergence(old, new) * weights).sum(1).mean()


@dataclasses.dataclass(frozen=True)
class PPOConfig(Validated):
    """The MAML-PPO outer step (used when ``agent: maml_ppo``)."""

    clip_range: float = bounded(0.2, gt=0.0, lt=1.0)
    """PPO ratio clipping ε (the surrogate clips π_θ'/π_old to [1 − ε, 1 + ε])."""

    ppo_epochs: int = bounded(5, ge=1)
    """Outer optimisation epochs per meta-iteration (adaptation recomputed in each)."""

    meta_lr: float = bounded(3e-4, gt=0.0)
    """Adam learning rate of the outer step."""

    meta_lr_decay_iterations: int | None = bounded(None, ge=1)
    """Decay Adam's rate linearly from ``meta_lr`` to 0 over this many meta-iterations (then
    0), usually ``num_batches``; ``null``: constant. The count is the agent's and travels in
    checkpoints, so a resumed run keeps the schedule."""

    max_grad_norm: float | None = bounded(None, gt=0.0)
    """Clip the meta-gradient's global norm to this before each Adam step; ``null``: no
    clipping (as ProMP)."""

    target_kl: float | None = bounded(None, gt=0.0)
    """Stop the epochs of an iteration early once the mean KL of the adapted policies from
    the sampling ones exceeds this; ``null``: always run ``ppo_epochs``."""

    inner_kl_penalty: float = bounded(0.0, ge=0.0)
    """Initial coefficient η of ProMP's KL penalty on the pre-update policies (each inner
    step's sampling policy vs. its current one); 0 disables it (ProMP: 5e-4)."""

    adaptive_inner_kl: bool = False
    """Halve/double η after each iteration when the pre-update KL is below/above
    ``inner_kl_target`` (÷/× 1.5 tolerance), as ProMP's adaptive option."""

    inner_kl_target: float = bounded(0.01, gt=0.0)
    """Target pre-update KL of the adaptive penalty (ProMP: 0.01)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.adaptive_inner_kl and self.inner_kl_penalty == 0:
            raise ValueError(
                "ppo.adaptive_inner_kl only rescales the penalty, and ppo.inner_kl_penalty is "
                "0; set ppo.inner_kl_penalty > 0 (ProMP: 5e-4) or drop ppo.adaptive_inner_kl"
            )


class MAMLPPO(InnerLoop):
    """Model-agnostic meta-learning with a PPO (clipped surrogate, Adam) meta-update.

    ``ppo_epochs`` outer Adam steps per meta-batch, each with the adaptation recomputed
    from the current ``θ``; with ``inner_kl_penalty`` > 0 and the ``lvc`` inner objective
    (:mod:`maml_rl.agents.maml`) this is ProMP.

    Args:
        policy: the policy whose parameters are the meta-parameters ``θ``; moved to
            ``device``; :meth:`step` updates its parameters in place.
        maml: the inner loop (``fast_lr``, ``num_adapt_steps``, ``inner_objective``, ...).
        ppo: the outer step (:class:`PPOConfig`).
        device: where the meta-update runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
    """

    def __init__(
        self,
        policy: Policy,
        maml: MAMLConfig | None = None,
        ppo: PPOConfig | None = None,
        *,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(policy, maml or MAMLConfig(), device)
        self.ppo = ppo or PPOConfig()
        self.updates = 0  # calls of step() so far: the position in the rate schedule
        # One coefficient per inner step, as ProMP (each step's KL adapts its own).
        self.inner_kl_coefs = [self.ppo.inner_kl_penalty] * self.maml.num_adapt_steps
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.ppo.meta_lr)

    def current_meta_lr(self) -> float:
        """Adam's rate for the next :meth:`step` (``meta_lr``, or its linear decay)."""
        if self.ppo.meta_lr_decay_iterations is None:
            return self.ppo.meta_lr
        return self.ppo.meta_lr * max(0.0, 1.0 - self.updates / self.ppo.meta_lr_decay_iterations)

    @property
    def _penalized(self) -> bool:
        return any(c > 0 for c in self.inner_kl_coefs)

    # -- outer update ----------------------------------------------------------------
    def step(
        self, train_batches: Sequence[EpisodeBatch], valid_batch: EpisodeBatch
    ) -> dict[str, float]:
        """``ppo_epochs`` Adam steps of the meta-parameters (in place) on one meta-batch.

        Args:
            train_batches: one batch per inner step; batch ``k`` was sampled with the
                parameters after ``k`` inner steps from the current ``θ``.
            valid_batch: episodes sampled with the fully adapted parameters.

        Returns:
            Metrics: ``train/surrogate_loss`` (the clipped surrogate before the update)
            and ``train/surrogate_loss_after``; ``train/kl`` (mean KL of the adapted
            policies after the update from the sampling ones); ``train/clip_fraction``
            (share of validation samples whose ratio lies outside the clip range after
            the update); ``train/grad_norm`` (mean pre-clipping meta-gradient norm over
            the epochs run); ``train/step_norm`` (norm of the change of ``θ``);
            ``train/inner_loss`` (mean pre-adaptation inner loss);
            ``train/ppo_epochs_run`` (Adam steps kept: fewer than ``ppo_epochs`` after
            an early stop on ``target_kl``, 0 after a rejection);
            ``train/step_accepted`` (1/0) and ``train/step_rejected_reason`` (a
            :class:`~maml_rl.divergence.StepRejection` code, 0 if accepted): a
            non-finite loss, gradient or updated policy in any epoch rejects the whole
            update, leaving ``θ`` and Adam's state as they were; ``train/inner_kl``
            (mean pre-update KL after the update) and, with the penalty,
            ``train/inner_kl_coef`` (mean ``η`` used in this step); ``train/meta_lr``
            (Adam's rate in this step); ``time/ppo_epoch_s`` (seconds per Adam step).
        """
        check_meta_batches(train_batches, valid_batch, self.maml.num_adapt_steps)
        train = [self.samples(b) for b in train_batches]
        valid = self.samples(valid_batch)
        params = list(self.policy.parameters())
        theta_before = [p.detach().clone() for p in params]
        adam_before = copy.deepcopy(self.optimizer.state_dict())
        coefs_used = list(self.inner_kl_coefs)
        meta_lr = self.current_meta_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = meta_lr

        # Fixed at the start: the sampling policies (the current θ's adaptation).
        old_log_probs: torch.Tensor | None = None
        old_dist: Distribution | None = None
        inner_old_log_probs: list[torch.Tensor] | None = None
        inner_old_dists: list[Distribution] = []
        loss_before = inner_loss = math.nan
        grad_norms: list[float] = []  # one per Adam step
        rejected = StepRejection.NONE
        t0 = time.perf_counter()
        for epoch in range(self.ppo.ppo_epochs):
            with torch.enable_grad():  # also under a caller's torch.no_grad()
                steps = self._adapt_chain(self.policy.params(), train, True, inner_old_log_probs)
                dist = self.policy(valid.observations, steps[-1].params_out)
                log_probs = dist.log_prob(valid.actions)
                if epoch == 0:
                    old_log_probs, old_dist = log_probs.detach(), detach_distribution(dist)
                    inner_old_log_probs = [s.log_probs.detach() for s in steps]
                    inner_old_dists = [detach_distribution(s.dist) for s in steps]
                    inner_loss = steps[0].losses.mean().item()
                assert old_log_probs is not None and old_dist is not None  # set at epoch 0
                loss, _, _ = clipped_surrogate(
                    log_probs, old_log_probs, valid.advantages, valid.weights, self.ppo.clip_range
                )
                if epoch == 0:
                    loss_before = loss.item()
                elif self.ppo.target_kl is not None:
                    kl = _mean_kl(old_dist, dist, valid.weights).item()
                    if kl > self.ppo.target_kl:
                        break
                if self._penalized:
                    # At epoch 0 every KL is 0 with zero gradient; it bites from epoch 1.
                    kls = [
                        _mean_kl(old, s.dist, tr.weights)
                        for old, s, tr in zip(inner_old_dists, steps, train, strict=True)
                    ]
                    penalty = sum(c * kl for c, kl in zip(self.inner_kl_coefs, kls, strict=True))
                    loss = loss + penalty / self.maml.num_adapt_steps
                if not math.isfinite(loss.item()):
                    # After a step, the loss is that of the updated policy.
                    rejected = StepRejection.LOSS if epoch == 0 else StepRejection.UPDATE
                    break
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
            del steps, dist, log_probs
            max_norm = math.inf if self.ppo.max_grad_norm is None else self.ppo.max_grad_norm
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm).item()
            if not math.isfinite(norm):
                rejected = StepRejection.GRADIENT
                break
            if epoch == 0 and norm == 0.0:
                # At θ itself the clipped surrogate is unclipped: a zero gradient there
                # means no task's episodes told anything apart (later epochs may see
                # zero gradients where every ratio is clipped, which is PPO working).
                rejected = StepRejection.ZERO_GRADIENT
                break
            grad_norms.append(norm)
            self.optimizer.step()
            if not all_finite(params):
                rejected = StepRejection.UPDATE
                break
        self.optimizer.zero_grad(set_to_none=True)
        t1 = time.perf_counter()

        metrics, inner_kls = self._after_update_metrics(
            train, valid, old_log_probs, old_dist, inner_old_log_probs, inner_old_dists
        )
        after = (metrics["train/surrogate_loss_after"], metrics["train/kl"])
        if rejected == StepRejection.NONE and not all(math.isfinite(v) for v in after):
            rejected = StepRejection.UPDATE
        if rejected != StepRejection.NONE:
            # Nothing non-finite becomes θ: undo every epoch's step, Adam's moments too.
            with torch.no_grad():
                for p, before in zip(params, theta_before, strict=True):
                    p.copy_(before)
            self.optimizer.load_state_dict(adam_before)
            metrics, inner_kls = self._after_update_metrics(
                train, valid, old_log_probs, old_dist, inner_old_log_probs, inner_old_dists
            )
        elif self.ppo.adaptive_inner_kl:
            self.inner_kl_coefs = [
                update_kl_coefficient(c, kl, self.ppo.inner_kl_target)
                for c, kl in zip(self.inner_kl_coefs, inner_kls, strict=True)
            ]
        deltas = [p.detach() - b for p, b in zip(params, theta_before, strict=True)]
        step_norm = math.sqrt(sum(float(d.pow(2).sum()) for d in deltas))
        metrics.update(
            {
                "train/surrogate_loss": loss_before,
                "train/grad_norm": sum(grad_norms) / len(grad_norms) if grad_norms else math.nan,
                "train/step_norm": step_norm,
                "train/inner_loss": inner_loss,
                "train/ppo_epochs_run": float(
                    len(grad_norms) if rejected == StepRejection.NONE else 0
                ),
                "train/step_accepted": float(rejected == StepRejection.NONE),
                REJECTION_TAG: float(rejected),
                "train/meta_lr": meta_lr,
                "time/ppo_epoch_s": (t1 - t0) / max(len(grad_norms), 1),
            }
        )
        self.updates += 1
        if any(c > 0 for c in coefs_used):
            metrics["train/inner_kl_coef"] = sum(coefs_used) / len(coefs_used)
        return metrics

    def _after_update_metrics(
        self,
        train: Sequence[TaskSamples],
        valid: TaskSamples,
        old_log_probs: torch.Tensor | None,
        old_dist: Distribution | None,
        inner_old_log_probs: Sequence[torch.Tensor] | None,
        inner_old_dists: Sequence[Distribution],
    ) -> tuple[dict[str, float], list[float]]:
        """Surrogate, KL and clip fraction at the updated ``θ`` (re-adapted, no graph),
        and the pre-update KL of each inner step."""
        if old_log_probs is None or old_dist is None:  # pragma: no cover - epoch 0 always runs
            raise RuntimeError("the first PPO epoch did not run")
        with torch.no_grad():
            steps = self._adapt_chain(self.policy.params(), train, False, inner_old_log_probs)
            dist = self.policy(valid.observations, steps[-1].params_out)
            loss, _, clip_fraction = clipped_surrogate(
                dist.log_prob(valid.actions), old_log_probs, valid.advantages, valid.weights,
                self.ppo.clip_range,
            )  # fmt: skip
            kl = _mean_kl(old_dist, dist, valid.weights)
            inner_kls = [
                _mean_kl(old, s.dist, tr.weights).item()
                for old, s, tr in zip(inner_old_dists, steps, train, strict=True)
            ]
        metrics = {
            "train/surrogate_loss_after": loss.item(),
            "train/kl": kl.item(),
            "train/clip_fraction": clip_fraction.item(),
            "train/inner_kl": sum(inner_kls) / len(inner_kls),
        }
        return metrics, inner_kls

    # -- checkpointing -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The policy, Adam's state, the inner-KL coefficients and the update count."""
        return {
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "inner_kl_coefs": list(self.inner_kl_coefs),
            "updates": self.updates,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        expected = {"policy", "optimizer", "inner_kl_coefs", "updates"}
        # "updates" (the rate schedule's position) is absent from checkpoints written
        # before the schedule existed: they were constant-rate runs.
        if set(state) not in (expected, expected - {"updates"}):
            raise ValueError(
                f"MAMLPPO state must have exactly the keys {sorted(expected)}, got {sorted(state)}"
            )
        coefs = [float(c) for c in state["inner_kl_coefs"]]
        if len(coefs) != self.maml.num_adapt_steps:
            raise ValueError(
                f"MAMLPPO state has {len(coefs)} inner-KL coefficients, this agent "
                f"num_adapt_steps={self.maml.num_adapt_steps}"
            )
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.inner_kl_coefs = coefs
        self.updates = int(state.get("updates", 0))
