"""Plain (non-meta) TRPO for one policy shared by many tasks.

The learner of the MAML paper's *pretrained* and *oracle* baselines (see
:mod:`maml_rl.evaluation.baselines`): one policy trained on the training tasks,
resampled every iteration, with no adaptation in the loop. The step is
:func:`maml_rl.optim.trust_region_step`, as in MAML-TRPO.

The conjugate gradient's products with the KL's Hessian: for a Gaussian MLP policy
(the MAML paper's), the hand-derived Gauss-Newton products ``Jᵀ F J v`` of
:mod:`maml_rl.agents._gaussian_mlp` — exact here, where the KL and its gradient vanish,
and a step about 3× faster than with ``∇KL`` differentiated a second time (``python
benchmarks/pretrain_step.py``); for any other policy, that double backward. The
hand-derived products keep their output buffers across the conjugate gradient's
iterations and the steps (:class:`~maml_rl.agents._gaussian_mlp.Workspace`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch.distributions import Distribution, kl_divergence

from maml_rl.agents import _gaussian_mlp as gm
from maml_rl.agents.maml import TaskSamples, detach_distribution
from maml_rl.agents.policies import Params, Policy, stack_params
from maml_rl.batch import EpisodeBatch
from maml_rl.divergence import REJECTION_TAG
from maml_rl.optim import flatten, trust_region_step, unflatten

__all__ = ["MultiTaskTRPO"]


class MultiTaskTRPO:
    """TRPO for one policy shared by many tasks, without adaptation.

    The pretrained and oracle baselines: every iteration the caller samples fresh
    training tasks, plays the *shared* parameters ``θ`` on all of them, and calls
    :meth:`step`. The surrogate and the KL are averaged over tasks exactly as in
    MAML-TRPO's outer step (per-task masked means), with ``θ`` in place of the
    adapted ``θ'_i``; the same linear baseline and advantage normalisation are used.

    Args:
        policy: the policy; :meth:`step` updates its parameters in place.
        gamma: discount factor.
        gae_lambda: GAE ``λ``.
        max_kl: trust-region radius on the mean KL.
        cg_iters: conjugate-gradient iterations.
        cg_damping: damping added to the Fisher-vector products.
        ls_max_steps: backtracking line-search candidates.
        ls_backtrack_ratio: step shrink factor per candidate.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        max_kl: float = 0.01,
        cg_iters: int = 10,
        cg_damping: float = 1e-5,
        ls_max_steps: int = 15,
        ls_backtrack_ratio: float = 0.8,
    ) -> None:
        self.policy = policy
        self.gamma = gamma
        self.gae_lambda = gae_lambda
        self.max_kl = max_kl
        self.cg_iters = cg_iters
        self.cg_damping = cg_damping
        self.ls_max_steps = ls_max_steps
        self.ls_backtrack_ratio = ls_backtrack_ratio
        self._workspace = gm.Workspace()

    def step(self, batch: EpisodeBatch) -> dict[str, float]:
        """One TRPO update on ``batch`` (sampled with the policy's own parameters).

        Returns:
            ``train/surrogate_loss`` (before), ``train/surrogate_loss_after``,
            ``train/kl`` (of the applied step; 0 if none), ``train/line_search_steps``,
            ``train/step_accepted`` (1/0), ``train/step_rejected_reason`` (0 if
            accepted), ``train/grad_norm``.
        """
        dtype = next(self.policy.parameters()).dtype
        samples = TaskSamples.from_batch(batch, self.gamma, self.gae_lambda, dtype=dtype)
        theta = dict(self.policy.named_parameters())
        params = list(theta.values())

        # θ is shared by every task, so the policy runs unstacked on [N, M, obs_dim]: one
        # plain matmul per layer for all tasks.
        def surrogate(log_prob: torch.Tensor, old_lp: torch.Tensor) -> torch.Tensor:
            ratio = torch.exp(log_prob - old_lp)
            return -(ratio * samples.advantages * samples.weights).sum(1).mean()

        with torch.enable_grad():
            dist = self.policy(samples.observations, theta)
            log_prob = dist.log_prob(samples.actions)
            old_lp = log_prob.detach()
            old_dist = detach_distribution(dist)
            loss = surrogate(log_prob, old_lp)
            g = flatten(torch.autograd.grad(loss, params, retain_graph=True))
        fisher_vector = self._fisher_vector(samples, theta, old_dist, dist)

        def evaluate(cand: Mapping[str, torch.Tensor]) -> tuple[float, float]:
            with torch.no_grad():
                new_dist = self.policy(samples.observations, cand)
                kl_c = (kl_divergence(old_dist, new_dist) * samples.weights).sum(1).mean()
                return surrogate(new_dist.log_prob(samples.actions), old_lp).item(), kl_c.item()

        result = trust_region_step(
            theta, loss.item(), g, fisher_vector, evaluate, max_kl=self.max_kl,
            damping=self.cg_damping, cg_iters=self.cg_iters, ls_max_steps=self.ls_max_steps,
            ls_backtrack_ratio=self.ls_backtrack_ratio,
        )  # fmt: skip
        return {
            "train/surrogate_loss": loss.item(),
            "train/grad_norm": result.grad_norm,
            "train/surrogate_loss_after": result.loss,
            "train/kl": result.kl,
            "train/line_search_steps": float(result.line_search_steps),
            "train/step_accepted": float(result.accepted),
            REJECTION_TAG: float(result.rejected),
        }

    def _fisher_vector(
        self, samples: TaskSamples, theta: Params, old_dist: Distribution, dist: Distribution
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``v ↦ ∇²KL v`` at ``θ`` (the mean KL over tasks, ``dist`` being ``π_θ``)."""
        if gm.supports(self.policy):
            try:
                return self._gauss_newton(samples, theta)
            except gm.LogStdAtFloor:  # the clamp makes the log-std constant: autograd
                pass
        params = list(theta.values())
        with torch.enable_grad():
            kl = (kl_divergence(old_dist, dist) * samples.weights).sum(1).mean()
            grad_kl = flatten(torch.autograd.grad(kl, params, create_graph=True))

        def double_backward(v: torch.Tensor) -> torch.Tensor:
            return flatten(torch.autograd.grad(grad_kl, params, grad_outputs=v, retain_graph=True))

        return double_backward

    def _gauss_newton(
        self, samples: TaskSamples, theta: Params
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``v ↦ Jᵀ F J v`` by the Gaussian MLP's hand-derived passes, θ broadcast to the
        tasks (views: the module's stacked layout)."""
        policy = self.policy
        n = samples.num_tasks
        detached = {k: p.detach() for k, p in theta.items()}
        fw = gm.forward(policy, stack_params(detached, n), samples.observations)
        w = samples.weights
        # KL Hessian in (μ, s) at π_old = π: w/σ² in μ, 2 w in s, no cross term.
        f_mean = (w / n).unsqueeze(-1) / fw.std.square()
        f_log_std = (2.0 / n) * w.sum(1, keepdim=True)
        ws = self._workspace  # one product alive at a time: the buffers are reused

        def gauss_newton(v: torch.Tensor) -> torch.Tensor:
            u = gm.to_layers(policy, stack_params(unflatten(v, theta), n))
            tg = gm.tangent(fw, u[0], ws)
            jt = gm.backprop(fw, f_mean * tg.mean, ws, keep=False)
            per_task = gm.to_params(policy, jt.grads, f_log_std * u[1])
            return flatten([t.sum(0) for t in per_task.values()])

        return gauss_newton
