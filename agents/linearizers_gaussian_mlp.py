"""The MAML-TRPO linearisation of a Gaussian MLP policy, from hand-derived derivatives.

For a :class:`~maml_rl.agents.policies.GaussianMLPPolicy` (ReLU or tanh) with the
REINFORCE inner loss — the MAML paper's setting — :class:`GaussianMLPLinearizer`
computes what :class:`~maml_rl.agents.linearizers.AutogradLinearizer` computes (the
products of :mod:`maml_rl.agents.linearizers`' docstring), without autograd: forward
passes, backpropagations and their derivatives along a direction are written out in
:mod:`maml_rl.agents._gaussian_mlp` (Pearlmutter's method), with the activations and
activation derivatives cached once per step and reused by every product, and the
``[N, M, hidden]`` buffers kept across steps (:class:`~maml_rl.agents._gaussian_mlp.Workspace`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import torch
from torch.distributions import Independent, Normal

from maml_rl.agents import _gaussian_mlp as gm
from maml_rl.agents.linearizers import (
    HVP_DTYPES,
    AutogradLinearizer,
    Linearization,
    Linearizer,
    LinearizerSettings,
    surrogate_and_kl,
)
from maml_rl.agents.maml import TaskSamples, stack_for_tasks
from maml_rl.agents.policies import GaussianMLPPolicy, Params, Policy, stack_params
from maml_rl.optim import flatten, unflatten

__all__ = ["GaussianMLPLinearizer"]


@dataclasses.dataclass
class _Adaptation:
    """The REINFORCE adaptation from some ``θ``, hand-differentiated."""

    params: Params  # the adapted stacked parameters
    curvatures: list[gm.InnerCurvature]  # each step's inner curvature (if kept)
    log_probs: list[torch.Tensor]  # each step's [N, M] pre-update log-probabilities
    first_loss: float  # the mean first inner loss


class GaussianMLPLinearizer(Linearizer):
    """:class:`~maml_rl.agents.linearizers.Linearizer` of a Gaussian MLP policy.

    The same quantities as the autograd linearizer (tests compare them), for the
    policies and settings where :meth:`applies`. Where a log-std reaches the policy's
    floor (the policy's clamp makes it constant there, which the hand-derived formulas
    do not model), that computation is done by an
    :class:`~maml_rl.agents.linearizers.AutogradLinearizer` instead, in the policy's
    own floating-point type.

    Raises:
        ValueError: if it does not apply to ``policy`` and ``settings``.
    """

    @staticmethod
    def applies(policy: Policy, settings: LinearizerSettings) -> bool:
        """Whether the hand-derived derivatives cover ``policy`` and ``settings``."""
        return (
            settings.hvp != "exact"
            and settings.inner_objective == "reinforce"
            and gm.supports(policy)
        )

    def __init__(self, policy: Policy, settings: LinearizerSettings) -> None:
        if not self.applies(policy, settings):
            raise ValueError(
                "the hand-derived linearisation needs a Gaussian MLP policy (relu or tanh), "
                f"inner_objective 'reinforce' and hvp 'gauss_newton' or 'first_order', got "
                f"{type(policy).__name__}, {settings.inner_objective!r}, {settings.hvp!r}"
            )
        super().__init__(policy, settings)
        self._autograd = AutogradLinearizer(
            policy, dataclasses.replace(settings, hvp_dtype="float32")
        )
        # Buffers kept across steps (see _gaussian_mlp.Workspace): one lent to each
        # linearisation until it is released (its product function reads it), one for
        # the forward-only work (line-search candidates, adapt()).
        self._idle_workspace: gm.Workspace | None = None
        self._eval_workspace = gm.Workspace()

    @property
    def _policy(self) -> GaussianMLPPolicy:
        assert isinstance(self.policy, GaussianMLPPolicy)
        return self.policy

    # -- the interface -------------------------------------------------------------------
    def adapt(self, params: Mapping[str, torch.Tensor], samples: TaskSamples) -> Params:
        try:
            with torch.no_grad():
                return self._adapt(params, [samples], keep=False, ws=self._eval_workspace).params
        except gm.LogStdAtFloor:
            return self._autograd.adapt(params, samples)

    def linearize(self, train: Sequence[TaskSamples], valid: TaskSamples) -> Linearization:
        ws = self._idle_workspace if self._idle_workspace is not None else gm.Workspace()
        self._idle_workspace = None
        try:
            with torch.no_grad():
                return self._linearize(train, valid, ws)
        except gm.LogStdAtFloor:
            return self._autograd.linearize(train, valid)

    def evaluate(
        self, theta: Params, train: Sequence[TaskSamples], valid: TaskSamples, lin: Linearization
    ) -> tuple[float, float]:
        ws = self._eval_workspace  # each step's buffers are dead by the next, and here
        try:
            with torch.no_grad():
                adapted = self._adapt(theta, train, keep=False, ws=ws).params
                fw = gm.forward(self._policy, adapted, valid.observations, derivatives=False, ws=ws)
                std = fw.std.expand_as(fw.mean)
                dist = Independent(Normal(fw.mean, std, validate_args=False), 1)
                return surrogate_and_kl(fw.log_prob(valid.actions)[0], dist, valid, lin)
        except gm.LogStdAtFloor:
            return self._autograd.evaluate(theta, train, valid, lin)

    # -- the computations ------------------------------------------------------------------
    def _adapt(
        self,
        theta: Mapping[str, torch.Tensor],
        train: Sequence[TaskSamples],
        keep: bool,
        ws: gm.Workspace,
    ) -> _Adaptation:
        """REINFORCE adaptation from ``theta`` (unstacked or stacked).

        ``keep``: also return each step's inner curvature (if second order; its
        buffers in ``ws``).
        """
        policy = self._policy
        fast_lr = self.settings.fast_lr
        scratch = ws.scope("scratch")  # temporaries of the products: one set suffices
        params = stack_for_tasks(theta, policy, train[0].num_tasks)
        curvatures: list[gm.InnerCurvature] = []
        log_probs: list[torch.Tensor] = []
        first_loss = math.nan
        keep = keep and not self.settings.first_order
        for k, samples in enumerate(train):
            # Kept caches need a scope per step; otherwise each step's are dead by the next.
            step_ws = ws.scope(f"step{k}") if keep else ws
            fw = gm.forward(policy, params, samples.observations, ws=step_ws)
            logp, r = fw.log_prob(samples.actions)
            coef = samples.advantages * samples.weights
            if not log_probs:
                first_loss = -(logp * coef).sum(1).mean().item()
            log_probs.append(logp)
            # ∂ℓ/∂μ = −c r/σ, ∂ℓ/∂s = −c (r² − 1) for ℓ = −c log π (see agents._gaussian_mlp).
            c = coef.unsqueeze(-1)
            bp = gm.backprop(fw, -c * r / fw.std, step_ws, keep=keep)
            grad_log_std = -(c * (r.square() - 1.0)).sum(1)
            if keep:
                curvatures.append(gm.InnerCurvature(fw, bp, coef, r, step_ws, scratch))
            layers, log_std = gm.to_layers(policy, params)
            new = gm.axpy((layers, log_std), -fast_lr, (bp.grads, grad_log_std))
            params = gm.to_params(policy, *new)
        return _Adaptation(params, curvatures, log_probs, first_loss)

    def _linearize(
        self, train: Sequence[TaskSamples], valid: TaskSamples, ws: gm.Workspace
    ) -> Linearization:
        """:meth:`linearize`, with its caches in ``ws`` (lent until the release)."""
        policy = self._policy
        settings = self.settings
        fast_lr = settings.fast_lr
        theta = {k: p.detach() for k, p in policy.named_parameters()}
        n = valid.num_tasks
        adaptation = self._adapt(theta, train, keep=True, ws=ws)
        curvatures = adaptation.curvatures
        fw = gm.forward(policy, adaptation.params, valid.observations, ws=ws.scope("outer"))
        log_probs, r = fw.log_prob(valid.actions)
        adv_w = valid.advantages * valid.weights
        # The surrogate at the current θ, where every ratio is 1.
        loss = -(torch.exp(log_probs - log_probs) * adv_w).sum(1).mean()
        # Its gradient w.r.t. θ'_i: c = A w / N in the REINFORCE formulas.
        c = (adv_w / n).unsqueeze(-1)
        scratch = ws.scope("scratch")
        bp = gm.backprop(fw, -c * r / fw.std, scratch, keep=False)
        grad_out: gm.Vector = (bp.grads, -(c * (r.square() - 1.0)).sum(1))

        def pull_back(y: gm.Vector, curvs: Sequence[gm.InnerCurvature]) -> gm.Vector:
            # Bᵀ y = y − α ∇²L_k y per step, last step first (each ∇²L_k is symmetric).
            for curv in reversed(curvs):
                y = gm.axpy(y, -fast_lr, curv(y))
            return y

        def task_sum(y: gm.Vector) -> torch.Tensor:
            return flatten([t.sum(0) for t in gm.to_params(policy, *y).values()])

        grad = task_sum(pull_back(grad_out, curvatures))

        # Curvature on the first k tasks (all of them by default): views of the caches.
        k = settings.curvature_tasks(n)
        curv_fw = fw if k == n else fw.head(k)
        curvs = [
            cv if k == n else cv.head(k, ws.scope(f"step{i}_head"), scratch)
            for i, cv in enumerate(curvatures)
        ]
        if settings.hvp == "first_order":
            curvs = []
        w = valid.weights[:k]
        # KL Hessian in (μ, s) at π_old = π: w/σ² in μ, 2 w in s, no cross term
        # (averaged over the k tasks, like the KL itself).
        f_mean = (w / k).unsqueeze(-1) / curv_fw.std.square()
        f_log_std = (2.0 / k) * w.sum(1, keepdim=True)
        dtype = HVP_DTYPES[settings.hvp_dtype] or f_mean.dtype
        if dtype != f_mean.dtype:
            # Low-precision copies of the caches, for the products only (own buffers).
            low = ws.scope(settings.hvp_dtype)
            scratch = low.scope("scratch")
            curv_fw, f_mean, f_log_std = curv_fw.to(dtype), f_mean.to(dtype), f_log_std.to(dtype)
            curvs = [cv.to(dtype, low.scope(f"step{i}"), scratch) for i, cv in enumerate(curvs)]

        def hvp(v: torch.Tensor) -> torch.Tensor:
            u_dict = stack_params(unflatten(v.to(dtype), theta), k)
            u = gm.to_layers(policy, u_dict)
            for curv in curvs:  # B v, first step first
                u = gm.axpy(u, -fast_lr, curv(u))
            tg = gm.tangent(curv_fw, u[0], scratch)
            jt = gm.backprop(curv_fw, f_mean * tg.mean, scratch, keep=False)
            return task_sum(gm.cast(pull_back((jt.grads, f_log_std * u[1]), curvs), v.dtype))

        def release() -> None:  # the product function is done with the buffers
            self._idle_workspace = ws

        mean, std = fw.mean, fw.std.expand_as(fw.mean)
        return Linearization(
            loss=loss.item(),
            grad=grad,
            hvp=hvp,
            inner_loss=adaptation.first_loss,
            old_log_probs=log_probs,
            old_dist=Independent(Normal(mean, std, validate_args=False), 1),
            inner_old_log_probs=adaptation.log_probs,
            on_release=release,
        )
