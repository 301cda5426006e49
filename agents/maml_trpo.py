"""MAML-TRPO: the meta-update of Finn et al. (2017) for reinforcement learning.

The outer objective is the TRPO surrogate on the post-adaptation (validation)
episodes, as a function of the meta-parameters ``θ`` *through* the adaptation::

    θ'_i(θ) = adapt(θ, train episodes of task i)                  (agents.maml)
    L(θ)    = − 1/N Σ_i mean_valid[ π_θ'_i(a|s) / π_old,i(a|s) · A_i(s, a) ]
    KL(θ)   =   1/N Σ_i mean_valid[ KL(π_old,i(·|s) ‖ π_θ'_i(·|s)) ]

where ``π_old,i`` is the adapted policy at the current ``θ`` (detached). The step is
the natural-gradient direction ``s = H⁻¹ ∇L`` (conjugate gradient on products with
the KL Hessian ``H`` plus damping), scaled to the trust region
``β = sqrt(2 max_kl / sᵀHs)`` and shrunk by a backtracking line search that accepts
only a lower surrogate with ``KL ≤ max_kl`` (Schulman et al., 2015).

Hessian-vector products — where the time goes. ``H`` is the Hessian of ``KL(θ)`` at
the current ``θ``, where the KL and its gradient vanish. Hence, with
``B_i = ∂θ'_i/∂θ = I − α ∇²L_i^inner`` and ``G_i`` the Hessian of task ``i``'s share
of the KL with respect to its adapted parameters ``θ'_i``::

    H v = Σ_i B_iᵀ G_i B_i v            (exact at the current θ)

because the other chain-rule term, ``Σ ∂KL/∂θ'_i · ∂²θ'_i/∂θ²``, is multiplied by
``∂KL/∂θ'_i = 0``; for the same reason ``G_i = J_iᵀ F_i J_i`` (Gauss-Newton form),
with ``J_i`` the Jacobian of the action distribution's tensors (mean and std, or
logits) w.r.t. ``θ'_i`` and ``F_i`` the KL's Hessian in those tensors. The default
``hvp="gauss_newton"`` computes exactly this, reusing graphs built once per step:

* ``B v``: a vector-Jacobian product through the inner-gradient graph (``∇²L`` is
  symmetric, so it is also the Jacobian-vector product);
* ``J u``: the derivative, w.r.t. a dummy cotangent ``d``, of the cached ``Jᵀd``;
  ``F`` elementwise-cheap; ``Jᵀ`` one backward through the outer network;
* ``Bᵀ``: one backward through the adaptation, summing over tasks.

Only second derivatives of the inner loss appear. For a 2-layer MLP this is ~16
batched matmuls of the hidden layer per product, the count a hand-written
Pearlmutter pass would need. ``hvp="exact"`` double-differentiates ``∇_θ KL(θ)``
through the adaptation as the reference implementations do (third derivatives of
the inner loss); it gives the same products — a test checks — and is kept as the
reference.

For a :class:`~maml_rl.agents.policies.GaussianMLPPolicy` (ReLU or tanh) with the
REINFORCE inner loss — the MAML paper's setting — the gradient, the products, the
line search's candidates and :meth:`MAMLTRPO.adapt` skip autograd: the same
quantities are computed from hand-derived formulas (:mod:`._gaussian_mlp`) with
activations cached once per step and buffers kept across steps (about 23
activation-sized buffers: ~370 MB at the paper's Navigation2D sizes, ~1.5 GB at
HalfCheetah's). They agree with autograd to rounding (tests check); each product
costs about its 16 large matrix products and little else, and a step is 1.5–2×
faster than through autograd. Other policies and inner objectives use autograd.

Two options trade exactness of the curvature (never of the gradient or of the
line search's checks) for speed: ``hvp_subsample`` (curvature of a subset of the
tasks) and ``hvp="first_order"``: ``Σ_i G_i``, the KL Hessian of the adapted policies
w.r.t. their own parameters, i.e. ``B_i`` taken as ``I`` (the curvature FOMAML uses,
while the gradient stays second order). It drops 12 of the 16 large matrix products
of an exact product; how much the curvature changes depends on the size of
``α ∇²L^inner`` next to ``I``.

A third option keeps the curvature's maths and lowers its arithmetic:
``hvp_dtype="bfloat16"`` runs the products on bfloat16 copies of the cached
activations (about 2× faster steps on a CPU with AVX-512 BF16; see
``benchmarks/trpo_update.py``).

The conjugate-gradient solve also returns ``sᵀHs`` (see
:func:`maml_rl.optim.conjugate_gradient`), so a step costs ``cg_iters`` products,
not ``cg_iters + 1``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.distributions import Distribution, Independent, Normal, kl_divergence

from maml_rl.agents import _gaussian_mlp as gm
from maml_rl.agents.maml import (
    InnerLoop,
    InnerObjective,
    InnerStep,
    TaskSamples,
    check_inner_objective,
    check_meta_batches,
    detach_distribution,
    distribution_like,
    distribution_tensors,
    stack_for_tasks,
)
from maml_rl.agents.policies import GaussianMLPPolicy, Params, Policy, stack_params
from maml_rl.batch import EpisodeBatch
from maml_rl.optim import LineSearchResult, backtracking_line_search, conjugate_gradient

__all__ = ["MAMLTRPO"]


@dataclasses.dataclass
class _Linearization:
    """What one TRPO step needs at the current ``θ``: values, gradient, curvature."""

    loss: float
    grad: torch.Tensor  # flat meta-gradient of the surrogate loss
    inner_loss: float
    old_log_probs: torch.Tensor  # [N, M] at the current θ (detached)
    old_dist: Distribution  # the adapted policies at the current θ (detached)
    # Per inner step, [N, M] log-probabilities of its pre-update policy at the current θ
    # (detached): the fixed denominators of the lvc/dice inner losses at other θ.
    inner_old_log_probs: list[torch.Tensor]
    # The buffers the product function reads (hand-derived path), for the next step.
    workspace: gm.Workspace | None = None


_HVP_METHODS = ("gauss_newton", "exact", "first_order")
#: ``None``: the policy's own type (float32, or float64 in tests).
_HVP_DTYPES: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16}


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflat(vec: torch.Tensor, like: Mapping[str, torch.Tensor]) -> Params:
    out: Params = {}
    i = 0
    for name, p in like.items():
        out[name] = vec[i : i + p.numel()].view_as(p)
        i += p.numel()
    return out


class MAMLTRPO(InnerLoop):
    """Model-agnostic meta-learning with a TRPO meta-update.

    Args:
        policy: the policy whose parameters are the meta-parameters ``θ``; moved to
            ``device``; :meth:`step` updates its parameters in place.
        fast_lr: inner step size ``α`` (MAML paper: 0.1).
        num_adapt_steps: inner steps per task (paper: 1 in training).
        first_order: treat the inner gradient as a constant (FOMAML).
        gamma: discount factor for returns and GAE.
        gae_lambda: GAE ``λ`` (pytorch-maml-rl: 1.0).
        max_kl: trust-region radius on the mean KL (paper: 0.01).
        cg_iters: conjugate-gradient iterations, i.e. Hessian-vector products (10).
        cg_damping: ``λ`` in ``(H + λI) v`` (pytorch-maml-rl: 1e-5).
        ls_max_steps: line-search candidates (15).
        ls_backtrack_ratio: step shrink factor per candidate (0.8).
        device: where the meta-update runs: ``"cpu"``, ``"cuda"``, ``"cuda:1"``,
            ``"auto"`` (CUDA if available).
        hvp: ``"gauss_newton"`` (default: exact KL Hessian products, fastest exact way),
            ``"exact"`` (double backward, the reference) or ``"first_order"`` (the KL
            Hessian with the adaptation's Jacobian taken as the identity: ~4× cheaper
            products, approximate curvature; the gradient stays exact); see the module
            docstring.
        hvp_subsample: fraction of the tasks whose KL curvature the Hessian-vector
            products use — the first ``⌈f·N⌉`` (tasks come in random order, so this
            is a random subset). 1.0 (default) is the exact KL Hessian; a smaller
            fraction makes each product proportionally cheaper with an unbiased
            estimate of the curvature (the TRPO paper's subsampled Fisher, rllab's
            ``subsample_factor``). The gradient, and the line search's KL check, always
            use every task.
        hvp_dtype: floating-point type of the Hessian-vector products: ``"float32"``
            (default: the policy's own type) or ``"bfloat16"`` — the same products
            from bfloat16 copies of the cached activations (relative error ≈ 0.5 %,
            about 2.5× faster matrix products on CPUs with AVX-512 BF16 and on
            GPUs; much slower on CPUs without). Only the conjugate-gradient solve
            (the step's direction and scale) sees them; the gradient and the line
            search's surrogate and KL checks stay float32. Needs the hand-derived
            path (Gaussian MLP, ``reinforce``, not ``exact``).
        normalize_advantages: normalise advantages per task (pytorch-maml-rl does).
        inner_objective: ``"reinforce"`` (the MAML paper), ``"lvc"`` or ``"dice"``;
            see :mod:`maml_rl.agents.maml`. During the line search the adaptation at a
            candidate ``θ`` keeps the current policy as ``π_old``, so the surrogate it
            evaluates is the function whose gradient and curvature the step used.
    """

    #: Use the hand-derived derivatives where they apply (tests turn it off to compare).
    _hand_derived = True

    def __init__(
        self,
        policy: Policy,
        *,
        fast_lr: float = 0.1,
        num_adapt_steps: int = 1,
        first_order: bool = False,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        max_kl: float = 0.01,
        cg_iters: int = 10,
        cg_damping: float = 1e-5,
        ls_max_steps: int = 15,
        ls_backtrack_ratio: float = 0.8,
        device: str | torch.device = "cpu",
        hvp: str = "gauss_newton",
        hvp_subsample: float = 1.0,
        hvp_dtype: str = "float32",
        normalize_advantages: bool = True,
        inner_objective: InnerObjective = "reinforce",
    ) -> None:
        checks: list[tuple[str, Any, bool, str]] = [
            ("fast_lr", fast_lr, fast_lr > 0, "> 0"),
            ("num_adapt_steps", num_adapt_steps, num_adapt_steps >= 1, "≥ 1"),
            ("gamma", gamma, 0 <= gamma <= 1, "in [0, 1]"),
            ("gae_lambda", gae_lambda, 0 <= gae_lambda <= 1, "in [0, 1]"),
            ("max_kl", max_kl, max_kl > 0, "> 0"),
            ("cg_iters", cg_iters, cg_iters >= 1, "≥ 1"),
            ("cg_damping", cg_damping, cg_damping >= 0, "≥ 0"),
            ("ls_max_steps", ls_max_steps, ls_max_steps >= 1, "≥ 1"),
            ("ls_backtrack_ratio", ls_backtrack_ratio, 0 < ls_backtrack_ratio < 1, "in (0, 1)"),
            ("hvp_subsample", hvp_subsample, 0 < hvp_subsample <= 1, "in (0, 1]"),
        ]
        for name, value, ok, rule in checks:
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {value}")
        if hvp not in _HVP_METHODS:
            raise ValueError(f"hvp must be one of {_HVP_METHODS}, got {hvp!r}")
        if hvp_dtype not in _HVP_DTYPES:
            raise ValueError(f"hvp_dtype must be one of {tuple(_HVP_DTYPES)}, got {hvp_dtype!r}")
        if str(device) == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.policy = policy.to(self.device)
        self.fast_lr = float(fast_lr)
        self.num_adapt_steps = int(num_adapt_steps)
        self.first_order = bool(first_order)
        self.gamma = float(gamma)
        self.gae_lambda = float(gae_lambda)
        self.max_kl = float(max_kl)
        self.cg_iters = int(cg_iters)
        self.cg_damping = float(cg_damping)
        self.ls_max_steps = int(ls_max_steps)
        self.ls_backtrack_ratio = float(ls_backtrack_ratio)
        self.hvp = hvp
        self.hvp_subsample = float(hvp_subsample)
        self.hvp_dtype = hvp_dtype
        self.normalize_advantages = bool(normalize_advantages)
        self.inner_objective: InnerObjective = check_inner_objective(inner_objective)
        if hvp_dtype != "float32" and not (
            hvp != "exact" and self.inner_objective == "reinforce" and gm.supports(self.policy)
        ):
            raise ValueError(
                f"hvp_dtype={hvp_dtype!r} needs the hand-derived products: a Gaussian MLP "
                "policy (relu or tanh), inner_objective 'reinforce' and hvp 'gauss_newton' or "
                "'first_order'; use hvp_dtype 'float32' otherwise"
            )
        # Buffers of the hand-derived path, kept across steps (see _gaussian_mlp.Workspace):
        # one lent to each linearisation until its step ends, one for the forward-only
        # work (line-search candidates, adapt()).
        self._lin_workspace: gm.Workspace | None = None
        self._eval_workspace = gm.Workspace()

    # -- inner loop --------------------------------------------------------------
    def adapt(
        self,
        params: Mapping[str, torch.Tensor],
        batch: EpisodeBatch,
        *,
        create_graph: bool = False,
    ) -> Params:
        """:meth:`InnerLoop.adapt`; for sampling (``create_graph=False``) through the
        hand-derived forward pass where the policy allows it."""
        params = {k: v.to(self.device) for k, v in params.items()}
        if not create_graph and self._structured():
            with torch.no_grad():
                found = self._adapt_structured(
                    params, [self.samples(batch)], keep=False, ws=self._eval_workspace
                )
            if found is not None:
                return found[0]
        return self._inner_step(params, batch, create_graph)

    # -- outer objective -----------------------------------------------------------
    def _surrogate_and_kl(
        self,
        params: Mapping[str, torch.Tensor],
        valid: TaskSamples,
        old_log_probs: torch.Tensor,
        old_dist: Distribution,
    ) -> tuple[torch.Tensor, torch.Tensor, Distribution]:
        """Surrogate loss and mean KL of the stacked adapted ``params`` on ``valid``."""
        dist = self.policy(valid.observations, params)
        ratio = torch.exp(dist.log_prob(valid.actions) - old_log_probs)
        loss = -(ratio * valid.advantages * valid.weights).sum(1).mean()
        kl = (kl_divergence(old_dist, dist) * valid.weights).sum(1).mean()
        return loss, kl, dist

    def _check_batches(self, train_batches: Sequence[EpisodeBatch], valid: EpisodeBatch) -> None:
        check_meta_batches(train_batches, valid, self.num_adapt_steps)

    def _linearize(
        self, train: Sequence[TaskSamples], valid: TaskSamples
    ) -> tuple[_Linearization, Callable[[torch.Tensor], torch.Tensor]]:
        """Surrogate, meta-gradient, and ``v ↦ (H + damping) v`` at the current ``θ``.

        The product function holds the graphs it needs; drop it to free them.
        """
        if self._structured():
            with torch.no_grad():
                found = self._linearize_structured(train, valid)
            if found is not None:
                return found
        with torch.enable_grad():  # also under a caller's torch.no_grad()
            return self._linearize_with_grad(train, valid)

    def _structured(self) -> bool:
        """Whether the hand-derived products of :mod:`._gaussian_mlp` apply."""
        return (
            self._hand_derived
            and self.hvp != "exact"
            and self.inner_objective == "reinforce"
            and gm.supports(self.policy)
        )

    def _linearize_with_grad(
        self, train: Sequence[TaskSamples], valid: TaskSamples
    ) -> tuple[_Linearization, Callable[[torch.Tensor], torch.Tensor]]:
        theta = dict(self.policy.named_parameters())
        n = valid.num_tasks
        num_curv = max(1, math.ceil(self.hvp_subsample * n - 1e-9))
        full_curvature = num_curv == n
        # 1. Adaptation from θ, with the graph, shared by surrogate, KL and HVPs.
        steps = self._adapt_chain(theta, train, keep_graph=True)
        adapted = steps[-1].params_out
        inner_old_log_probs = [s.log_probs.detach() for s in steps]
        inner_loss = steps[0].losses.mean().item()  # all tasks (steps may be replaced below)
        # 2. The outer network at a detached copy of θ': its graph is separate from the
        #    adaptation's, so each is reused by every CG iteration.
        leaf = {k: v.detach().requires_grad_() for k, v in adapted.items()}
        dist = self.policy(valid.observations, leaf)
        log_probs = dist.log_prob(valid.actions)
        old_log_probs = log_probs.detach()
        old_dist = detach_distribution(dist)
        ratio = torch.exp(log_probs - old_log_probs)
        loss = -(ratio * valid.advantages * valid.weights).sum(1).mean()
        # 3. Meta-gradient: outer backward to θ', then through the adaptation to θ.
        grad_out = torch.autograd.grad(loss, list(leaf.values()), retain_graph=full_curvature)
        grads = torch.autograd.grad(
            list(adapted.values()), list(theta.values()), grad_outputs=grad_out,
            retain_graph=full_curvature,
        )  # fmt: skip
        # 4. Curvature: on these graphs, or on separate, smaller ones for the first tasks
        #    (a product through the full graphs would cost the full batch even with zero
        #    rows for the other tasks).
        curv_valid, curv_old_dist = valid, old_dist
        if not full_curvature:
            del steps, adapted, leaf, dist
            curv_valid = valid.head(num_curv)
            steps = self._adapt_chain(theta, [s.head(num_curv) for s in train], keep_graph=True)
            adapted = steps[-1].params_out
            leaf = {k: v.detach().requires_grad_() for k, v in adapted.items()}
            dist = self.policy(curv_valid.observations, leaf)
            curv_old_dist = detach_distribution(dist)
        if self.hvp != "exact":
            hvp = self._gauss_newton_hvp(theta, steps, leaf, dist, curv_old_dist, curv_valid)
        else:
            hvp = self._exact_hvp(theta, adapted, curv_old_dist, curv_valid)
        lin = _Linearization(
            loss=loss.item(),
            grad=_flat(grads),
            inner_loss=inner_loss,
            old_log_probs=old_log_probs,
            old_dist=old_dist,
            inner_old_log_probs=inner_old_log_probs,
        )
        return lin, hvp

    def _evaluate(
        self,
        theta: Params,
        train: Sequence[TaskSamples],
        valid: TaskSamples,
        old_log_probs: torch.Tensor,
        old_dist: Distribution,
        inner_old_log_probs: Sequence[torch.Tensor] | None = None,
    ) -> tuple[float, float]:
        """Surrogate loss and mean KL at meta-parameters ``theta`` (re-adapted; no graph).

        ``inner_old_log_probs``: the pre-update log-probabilities of each inner step at
        the linearisation point (for the lvc/dice inner losses; ``None``: at ``theta``).
        """
        if self._structured():
            with torch.no_grad():
                found = self._evaluate_structured(theta, train, valid, old_log_probs, old_dist)
            if found is not None:
                return found
        with torch.no_grad():
            steps = self._adapt_chain(theta, train, False, inner_old_log_probs)
            params = steps[-1].params_out
            loss, kl, _ = self._surrogate_and_kl(params, valid, old_log_probs, old_dist)
        return loss.item(), kl.item()

    def step(
        self, train_batches: Sequence[EpisodeBatch], valid_batch: EpisodeBatch
    ) -> dict[str, float]:
        """One TRPO meta-update of the policy's parameters (in place).

        A non-finite loss, gradient or step direction, or a line search that finds
        no acceptable step, leaves the parameters untouched
        (``train/step_accepted = 0``).

        Args:
            train_batches: one batch per inner step; batch ``k`` was sampled with the
                parameters after ``k`` inner steps.
            valid_batch: episodes sampled with the fully adapted parameters.

        Returns:
            Metrics: ``train/surrogate_loss`` (before the step),
            ``train/surrogate_loss_after``, ``train/kl`` (of the applied step, 0 if
            none), ``train/line_search_steps`` (candidates tried, 0 if the search did
            not run), ``train/step_accepted`` (1/0), ``train/inner_loss`` (mean
            pre-adaptation inner loss), ``train/grad_norm`` (meta-gradient norm),
            ``train/step_norm`` (norm of the applied step), ``train/cg_residual``
            (relative residual of the CG solve), ``train/cg_iterations`` (Hessian-vector
            products made), and the seconds spent in each phase:
            ``time/trpo_gradient_s`` (advantages, adaptation with graph, surrogate,
            meta-gradient), ``time/trpo_cg_s`` (the ``cg_iters`` Hessian-vector
            products), ``time/trpo_line_search_s``.
        """
        self._check_batches(train_batches, valid_batch)
        t0 = time.perf_counter()
        train = [self.samples(b) for b in train_batches]
        valid = self.samples(valid_batch)
        lin, hvp = self._linearize(train, valid)
        g = lin.grad
        grad_norm = g.norm().item()
        t1 = time.perf_counter()

        full_step: torch.Tensor | None = None
        cg_residual, cg_iterations = math.nan, 0
        if math.isfinite(lin.loss) and math.isfinite(grad_norm):
            cg = conjugate_gradient(hvp, g, self.cg_iters)
            cg_residual = cg.residual_norm / max(grad_norm, 1e-30)
            cg_iterations = cg.iterations
            if cg.xAx > 0 and math.isfinite(cg.xAx) and bool(torch.isfinite(cg.x).all()):
                # The largest step along −H⁻¹g with ½ sᵀHs = max_kl (quadratic KL model).
                full_step = -math.sqrt(2.0 * self.max_kl / cg.xAx) * cg.x
        del hvp  # release the graphs before the line search
        t2 = time.perf_counter()

        theta = dict(self.policy.named_parameters())
        theta_old = _flat([p.detach() for p in theta.values()])
        result = LineSearchResult(False, 0.0, 0, lin.loss, 0.0)
        if full_step is not None:
            step = full_step

            def evaluate(fraction: float) -> tuple[float, float]:
                candidate = _unflat(theta_old + fraction * step, theta)
                return self._evaluate(
                    candidate, train, valid, lin.old_log_probs, lin.old_dist,
                    lin.inner_old_log_probs,
                )  # fmt: skip

            result = backtracking_line_search(
                evaluate, lin.loss, self.max_kl, self.ls_max_steps, self.ls_backtrack_ratio
            )
        step_norm = 0.0
        if result.accepted and full_step is not None:
            new = _unflat(theta_old + result.fraction * full_step, theta)
            with torch.no_grad():
                for name, p in theta.items():
                    p.copy_(new[name])
            step_norm = result.fraction * full_step.norm().item()
        if lin.workspace is not None:  # the product function is gone: reuse its buffers
            self._lin_workspace = lin.workspace
        t3 = time.perf_counter()
        return {
            "train/surrogate_loss": lin.loss,
            "train/surrogate_loss_after": result.loss,
            "train/kl": result.kl,
            "train/line_search_steps": float(result.steps),
            "train/step_accepted": float(result.accepted),
            "train/inner_loss": lin.inner_loss,
            "train/grad_norm": grad_norm,
            "train/step_norm": step_norm,
            "train/cg_residual": cg_residual,
            "train/cg_iterations": float(cg_iterations),
            "time/trpo_gradient_s": t1 - t0,
            "time/trpo_cg_s": t2 - t1,
            "time/trpo_line_search_s": t3 - t2,
        }

    # -- Hessian-vector products of the KL through the adaptation --------------------
    def _gauss_newton_hvp(
        self,
        theta: Params,
        steps: list[InnerStep],
        leaf: Params,
        dist: Distribution,
        old_dist: Distribution,
        valid: TaskSamples,
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``v ↦ (Σ_i B_iᵀ J_iᵀ F_i J_i B_i + damping) v`` (see the module docstring).

        ``J u`` reuses the graph of a vector-Jacobian product that is linear in a
        dummy cotangent ``d``: ``J u = ∂(Jᵀd · u)/∂d`` — no forward pass is repeated.
        """
        leaves = list(leaf.values())
        outs = distribution_tensors(dist)
        with torch.enable_grad():
            dummies = [torch.zeros_like(o, requires_grad=True) for o in outs]
            jt_dummy = torch.autograd.grad(outs, leaves, grad_outputs=dummies, create_graph=True)
            out_leaves = [o.detach().requires_grad_() for o in outs]
            new_dist = distribution_like(dist, out_leaves)
            kl = (kl_divergence(old_dist, new_dist) * valid.weights).sum(1).mean()
            grad_kl_out = torch.autograd.grad(kl, out_leaves, create_graph=True)
        n = valid.num_tasks
        adapted = list(steps[-1].params_out.values())
        params = list(theta.values())
        # B = I under FOMAML, and taken as I by the first-order curvature.
        through_adaptation = not (self.first_order or self.hvp == "first_order")

        def grad(outputs: Sequence[torch.Tensor], inputs: Sequence[torch.Tensor],
                 cotangents: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:  # fmt: skip
            return torch.autograd.grad(
                outputs, inputs, grad_outputs=cotangents, retain_graph=True,
                allow_unused=True, materialize_grads=True,
            )  # fmt: skip

        def hvp(v: torch.Tensor) -> torch.Tensor:
            # B v: push v forward through each inner step, u ← u − α ∇²L_k u.
            u = [t.unsqueeze(0).expand(n, *t.shape) for t in _unflat(v, theta).values()]
            if through_adaptation:
                for step in steps:
                    hu = grad(list(step.grads.values()), list(step.params_in.values()), u)
                    u = [a - self.fast_lr * b for a, b in zip(u, hu, strict=True)]
            # G (B v) = Jᵀ F J u on the outer network at θ'_i, per task.
            ju = grad(jt_dummy, dummies, u)
            fju = grad(grad_kl_out, out_leaves, ju)
            gu = grad(outs, leaves, fju)
            # Bᵀ (G B v), summed over tasks: one backward through the adaptation.
            if through_adaptation:
                return _flat(grad(adapted, params, gu)) + self.cg_damping * v
            return _flat([t.sum(0) for t in gu]) + self.cg_damping * v

        return hvp

    def _exact_hvp(
        self,
        theta: Params,
        adapted: Params,
        old_dist: Distribution,
        valid: TaskSamples,
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``v ↦ (∇²_θ KL + damping) v`` by double backward through the adaptation."""
        params = list(theta.values())
        with torch.enable_grad():
            dist = self.policy(valid.observations, adapted)
            kl = (kl_divergence(old_dist, dist) * valid.weights).sum(1).mean()
            # The graph of ∇_θ KL is built once and reused by every product.
            flat_grad_kl = _flat(torch.autograd.grad(kl, params, create_graph=True))

        def hvp(v: torch.Tensor) -> torch.Tensor:
            hv = torch.autograd.grad(flat_grad_kl, params, grad_outputs=v, retain_graph=True)
            return _flat(hv) + self.cg_damping * v

        return hvp

    # -- hand-derived products for Gaussian MLP policies (see agents._gaussian_mlp) ------
    def _adapt_structured(
        self,
        theta: Mapping[str, torch.Tensor],
        train: Sequence[TaskSamples],
        keep: bool,
        ws: gm.Workspace,
    ) -> tuple[Params, list[gm.InnerCurvature], list[torch.Tensor], float] | None:
        """REINFORCE adaptation from ``theta`` (unstacked or stacked), hand-differentiated.

        Returns the adapted stacked parameters, each step's inner curvature (if
        ``keep`` and second order; its buffers in ``ws``), each step's pre-update
        log-probabilities and the mean first inner loss; ``None`` where a log-std is at
        the policy's floor.
        """
        policy = self.policy
        assert isinstance(policy, GaussianMLPPolicy)
        scratch = ws.scope("scratch")  # temporaries of the products: one set suffices
        params = stack_for_tasks(theta, policy, train[0].num_tasks)
        curvatures: list[gm.InnerCurvature] = []
        log_probs: list[torch.Tensor] = []
        first_loss = math.nan
        keep = keep and not self.first_order
        for k, samples in enumerate(train):
            # Kept caches need a scope per step; otherwise each step's are dead by the next.
            step_ws = ws.scope(f"step{k}") if keep else ws
            fw = gm.forward(policy, params, samples.observations, ws=step_ws)
            if fw is None:
                return None
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
            new = gm.axpy((layers, log_std), -self.fast_lr, (bp.grads, grad_log_std))
            params = gm.to_params(policy, *new)
        return params, curvatures, log_probs, first_loss

    def _linearize_structured(
        self, train: Sequence[TaskSamples], valid: TaskSamples
    ) -> tuple[_Linearization, Callable[[torch.Tensor], torch.Tensor]] | None:
        """:meth:`_linearize` for Gaussian MLP policies and the REINFORCE inner loss.

        The same quantities as the autograd path (tests compare them), computed
        from forward passes and backpropagations cached once per step.
        """
        policy = self.policy
        assert isinstance(policy, GaussianMLPPolicy)
        theta = {k: p.detach() for k, p in policy.named_parameters()}
        n = valid.num_tasks
        # The workspace is lent to this linearisation: its product function reads it.
        ws = self._lin_workspace if self._lin_workspace is not None else gm.Workspace()
        self._lin_workspace = None
        adapted = self._adapt_structured(theta, train, keep=True, ws=ws)
        if adapted is None:
            return None
        params, curvatures, inner_log_probs, inner_loss = adapted
        fw = gm.forward(policy, params, valid.observations, ws=ws.scope("outer"))
        if fw is None:
            return None
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
                y = gm.axpy(y, -self.fast_lr, curv(y))
            return y

        def task_sum(y: gm.Vector) -> torch.Tensor:
            return _flat([t.sum(0) for t in gm.to_params(policy, *y).values()])

        grad = task_sum(pull_back(grad_out, curvatures))

        # Curvature on the first k tasks (all of them by default): views of the caches.
        k = max(1, math.ceil(self.hvp_subsample * n - 1e-9))
        curv_fw = fw if k == n else fw.head(k)
        curvs = [
            cv if k == n else cv.head(k, ws.scope(f"step{i}_head"), scratch)
            for i, cv in enumerate(curvatures)
        ]
        if self.hvp == "first_order":
            curvs = []
        w = valid.weights[:k]
        # KL Hessian in (μ, s) at π_old = π: w/σ² in μ, 2 w in s, no cross term
        # (averaged over the k tasks, like the KL itself).
        f_mean = (w / k).unsqueeze(-1) / curv_fw.std.square()
        f_log_std = (2.0 / k) * w.sum(1, keepdim=True)
        dtype = _HVP_DTYPES[self.hvp_dtype] or f_mean.dtype
        if dtype != f_mean.dtype:
            # Low-precision copies of the caches, for the products only (own buffers).
            low = ws.scope(self.hvp_dtype)
            scratch = low.scope("scratch")
            curv_fw, f_mean, f_log_std = curv_fw.to(dtype), f_mean.to(dtype), f_log_std.to(dtype)
            curvs = [cv.to(dtype, low.scope(f"step{i}"), scratch) for i, cv in enumerate(curvs)]

        def hvp(v: torch.Tensor) -> torch.Tensor:
            u_dict = stack_params(_unflat(v.to(dtype), theta), k)
            u = gm.to_layers(policy, u_dict)
            for curv in curvs:  # B v, first step first
                u = gm.axpy(u, -self.fast_lr, curv(u))
            tg = gm.tangent(curv_fw, u[0], scratch)
            jt = gm.backprop(curv_fw, f_mean * tg.mean, scratch, keep=False)
            hv = gm.cast(pull_back((jt.grads, f_log_std * u[1]), curvs), v.dtype)
            return task_sum(hv) + self.cg_damping * v

        mean, std = fw.mean, fw.std.expand_as(fw.mean)
        lin = _Linearization(
            loss=loss.item(),
            grad=grad,
            inner_loss=inner_loss,
            old_log_probs=log_probs,
            old_dist=Independent(Normal(mean, std, validate_args=False), 1),
            inner_old_log_probs=inner_log_probs,
            workspace=ws,
        )
        return lin, hvp

    def _evaluate_structured(
        self,
        theta: Params,
        train: Sequence[TaskSamples],
        valid: TaskSamples,
        old_log_probs: torch.Tensor,
        old_dist: Distribution,
    ) -> tuple[float, float] | None:
        """:meth:`_evaluate` for Gaussian MLP policies (``None``: not applicable)."""
        policy = self.policy
        assert isinstance(policy, GaussianMLPPolicy)
        ws = self._eval_workspace  # each step's buffers are dead by the next, and here
        adapted = self._adapt_structured(theta, train, keep=False, ws=ws)
        if adapted is None:
            return None
        fw = gm.forward(policy, adapted[0], valid.observations, derivatives=False, ws=ws)
        if fw is None:
            return None
        log_probs, _ = fw.log_prob(valid.actions)
        ratio = torch.exp(log_probs - old_log_probs)
        loss = -(ratio * valid.advantages * valid.weights).sum(1).mean()
        dist = Independent(Normal(fw.mean, fw.std.expand_as(fw.mean), validate_args=False), 1)
        kl = (kl_divergence(old_dist, dist) * valid.weights).sum(1).mean()
        return loss.item(), kl.item()

    # -- checkpointing -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The policy's state (TRPO itself keeps no optimiser state between steps)."""
        return {"policy": self.policy.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if set(state) != {"policy"}:
            raise ValueError(
                f"MAMLTRPO state must have exactly the key 'policy', got {sorted(state)}"
            )
        self.policy.load_state_dict(state["policy"])
