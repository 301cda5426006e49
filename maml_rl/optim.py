"""The TRPO step and its two numerical pieces.

* :func:`conjugate_gradient` solves ``A x = b`` for a symmetric positive-definite
  ``A`` known only through products ``v ↦ A v`` (here: Hessian-vector products of
  the KL), and returns ``xᵀ A x`` for free.
* :func:`backtracking_line_search` shrinks a proposed step until it improves the
  objective and satisfies the trust-region constraint, or gives up.
* :func:`trust_region_step` puts them together: the natural-gradient direction,
  scaled to the trust region, shrunk by the line search, applied to the parameters.

All follow Schulman et al. (2015), "Trust Region Policy Optimization", App. C.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence

import torch

from maml_rl.divergence import StepRejection, all_finite

__all__ = [
    "CGResult",
    "LineSearchResult",
    "TrustRegionResult",
    "backtracking_line_search",
    "conjugate_gradient",
    "flatten",
    "trust_region_step",
    "unflatten",
]


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The tensors' entries, concatenated into one 1-D tensor."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vec: torch.Tensor, like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`flatten` for tensors shaped like ``like``'s (views of ``vec``)."""
    out: dict[str, torch.Tensor] = {}
    i = 0
    for name, p in like.items():
        out[name] = vec[i : i + p.numel()].view_as(p)
        i += p.numel()
    return out


@dataclasses.dataclass(frozen=True)
class CGResult:
    """Outcome of :func:`conjugate_gradient`.

    Attributes:
        x: the approximate solution, shaped like ``b``.
        xAx: ``xᵀ A x``, computed from the recurrences without another product.
        residual_norm: ``‖b − A x‖`` by the recurrence.
        iterations: products ``A v`` performed.
    """

    x: torch.Tensor
    xAx: float
    residual_norm: float
    iterations: int


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    iters: int,
    residual_tol: float = 1e-10,
) -> CGResult:
    """Solve ``A x = b`` by conjugate gradient, starting from ``x = 0``.

    ``A`` must be symmetric positive definite (a damped KL Hessian is). Exactly one
    ``matvec`` per iteration; the loop stops early once ``‖r‖² < residual_tol``.

    ``xᵀ A x`` is returned without an extra product: the recurrence keeps
    ``r = b − Σ_j α_j A p_j`` and ``x = Σ_j α_j p_j``, so ``A x = b − r`` by linearity
    alone (no conjugacy needed) and ``xᵀ A x = xᵀ (b − r)``. A TRPO step needs this
    quadratic form to scale the step to the trust region; computing it this way
    saves one of the ``iters + 1`` Hessian-vector products of the usual recipe.

    Args:
        matvec: ``v ↦ A v`` for 1-D tensors shaped like ``b``.
        b: right-hand side, 1-D.
        iters: maximum number of iterations (≥ 1).
        residual_tol: stop when the squared residual norm falls below this.

    Returns:
        A :class:`CGResult`. If ``A`` is found not positive definite along a search
        direction (``pᵀ A p ≤ 0``) or a non-finite value appears, iteration stops and
        the current (possibly non-finite) iterate is returned; the caller checks
        ``x`` and ``xAx`` for finiteness.
    """
    if b.dim() != 1:
        raise ValueError(f"b must be a 1-D tensor, got shape {tuple(b.shape)}")
    if iters < 1:
        raise ValueError(f"iters must be ≥ 1, got {iters}")
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = torch.dot(r, r)
    done = 0
    for _ in range(iters):
        if rr.item() < residual_tol:
            break
        ap = matvec(p)
        done += 1
        pap = torch.dot(p, ap)
        if not (pap.item() > 0 and math.isfinite(pap.item())):
            if done == 1:  # no usable direction at all
                x = torch.full_like(b, float("nan"))
            break
        alpha = rr / pap
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = torch.dot(r, r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    xax = torch.dot(x, b - r).item()
    return CGResult(x=x, xAx=xax, residual_norm=math.sqrt(max(rr.item(), 0.0)), iterations=done)


@dataclasses.dataclass(frozen=True)
class LineSearchResult:
    """Outcome of :func:`backtracking_line_search`.

    Attributes:
        accepted: whether some step fraction satisfied both conditions.
        fraction: the accepted fraction of the full step (0.0 if none).
        steps: candidates evaluated (1 = the full step was accepted).
        loss: objective at the accepted step (``loss_before`` if none).
        kl: constraint value at the accepted step (0.0 if none).
        non_finite: candidates whose objective or KL was not finite.
    """

    accepted: bool
    fraction: float
    steps: int
    loss: float
    kl: float
    non_finite: int = 0


def backtracking_line_search(
    evaluate: Callable[[float], tuple[float, float]],
    loss_before: float,
    max_kl: float,
    max_steps: int,
    backtrack_ratio: float,
) -> LineSearchResult:
    """Try the step fractions ``1, r, r², …`` until one is acceptable.

    A fraction is accepted when its objective is finite and strictly below
    ``loss_before`` and its KL is finite and at most ``max_kl``. A non-finite
    candidate is never accepted (the search just shrinks the step further).

    Args:
        evaluate: ``fraction ↦ (loss, kl)`` at ``θ + fraction · full_step``; pure (it
            must not change the parameters — the caller applies the accepted step).
        loss_before: the objective at the current parameters.
        max_kl: the trust-region radius.
        max_steps: how many fractions to try (≥ 1).
        backtrack_ratio: ``r`` in ``(0, 1)``.

    Returns:
        A :class:`LineSearchResult`; ``accepted=False`` means keep the old parameters.
    """
    if max_steps < 1:
        raise ValueError(f"ls_max_steps must be ≥ 1, got {max_steps}")
    if not 0.0 < backtrack_ratio < 1.0:
        raise ValueError(f"ls_backtrack_ratio must be in (0, 1), got {backtrack_ratio}")
    if not math.isfinite(loss_before):
        return LineSearchResult(False, 0.0, 0, loss_before, 0.0)
    fraction = 1.0
    non_finite = 0
    for step in range(1, max_steps + 1):
        loss, kl = evaluate(fraction)
        if not (math.isfinite(loss) and math.isfinite(kl)):
            non_finite += 1
        elif loss < loss_before and kl <= max_kl:
            return LineSearchResult(True, fraction, step, loss, kl, non_finite)
        fraction *= backtrack_ratio
    return LineSearchResult(False, 0.0, max_steps, loss_before, 0.0, non_finite)


@dataclasses.dataclass(frozen=True)
class TrustRegionResult:
    """Outcome of :func:`trust_region_step`.

    Attributes:
        accepted: whether a step was applied to the parameters.
        loss: the objective after the step (the one before if none was applied).
        kl: the constraint's value at the applied step (0.0 if none).
        line_search_steps: candidates evaluated (0 if the search did not run).
        step_norm: norm of the applied step (0.0 if none).
        grad_norm: norm of the gradient.
        cg_iterations: products ``v ↦ A v`` of the solve (0 if it did not run).
        cg_residual: its residual norm relative to the gradient's (NaN if not run).
        cg_s: seconds spent in the solve.
        line_search_s: seconds spent in the line search and applying the step.
        rejected: why no step was applied (:attr:`StepRejection.NONE` if one was).
    """

    accepted: bool
    loss: float
    kl: float
    line_search_steps: int
    step_norm: float
    grad_norm: float
    cg_iterations: int
    cg_residual: float
    cg_s: float
    line_search_s: float
    rejected: StepRejection = StepRejection.NONE


def trust_region_step(
    params: Mapping[str, torch.Tensor],
    loss: float,
    grad: torch.Tensor,
    hvp: Callable[[torch.Tensor], torch.Tensor],
    evaluate: Callable[[dict[str, torch.Tensor]], tuple[float, float]],
    *,
    max_kl: float,
    damping: float,
    cg_iters: int,
    ls_max_steps: int,
    ls_backtrack_ratio: float,
) -> TrustRegionResult:
    """One TRPO step of ``params``, in place.

    Solves ``(H + damping·I) s = g`` by :func:`conjugate_gradient`, scales ``−s`` to
    the trust region, ``β = sqrt(2 max_kl / sᵀ(H + damping·I)s)`` (the largest step
    with ``½ sᵀHs = max_kl`` under the quadratic model of the KL), and tries the
    fractions ``1, r, r², …`` of ``−β s`` by :func:`backtracking_line_search`. The
    accepted candidate is copied into ``params``; if the loss, the gradient or the
    direction is not finite, or no candidate is accepted, ``params`` are left as they
    are. A candidate with a non-finite entry is never evaluated (it counts as a
    non-finite one), and every accepted one has a finite objective and KL.

    Args:
        params: the parameters (e.g. ``dict(module.named_parameters())``), updated in
            place; ``grad`` and the products are flat in their order.
        loss: the objective at ``params``.
        grad: its flat gradient ``g``.
        hvp: ``v ↦ H v``, the constraint's Hessian at ``params``; only called before
            the first ``evaluate``.
        evaluate: candidate parameters (keyed like ``params``) ``↦ (loss, kl)``; pure.
        max_kl: the trust-region radius.
        damping: added to ``H``'s diagonal in the solve.
        cg_iters: conjugate-gradient iterations.
        ls_max_steps: line-search candidates.
        ls_backtrack_ratio: step shrink factor per candidate, ``r``.

    Returns:
        A :class:`TrustRegionResult`.
    """
    t0 = time.perf_counter()
    grad_norm = grad.norm().item()
    full_step: torch.Tensor | None = None
    cg_residual, cg_iterations = math.nan, 0
    rejected = StepRejection.NONE
    if not math.isfinite(loss):
        rejected = StepRejection.LOSS
    elif not math.isfinite(grad_norm):
        rejected = StepRejection.GRADIENT
    elif grad_norm == 0.0:
        rejected = StepRejection.ZERO_GRADIENT
    else:
        cg = conjugate_gradient(lambda v: hvp(v) + damping * v, grad, cg_iters)
        cg_residual = cg.residual_norm / max(grad_norm, 1e-30)
        cg_iterations = cg.iterations
        if cg.xAx > 0 and math.isfinite(cg.xAx) and all_finite([cg.x]):
            full_step = -math.sqrt(2.0 * max_kl / cg.xAx) * cg.x
            if not all_finite([full_step]):  # 2 max_kl / xAx overflowed
                full_step, rejected = None, StepRejection.UPDATE
        elif math.isfinite(cg.xAx) and all_finite([cg.x]):
            rejected = StepRejection.NO_IMPROVEMENT  # no curvature along the direction
        else:
            rejected = StepRejection.DIRECTION
    t1 = time.perf_counter()

    theta_old = flatten([p.detach() for p in params.values()])
    search = LineSearchResult(False, 0.0, 0, loss, 0.0)
    if full_step is not None:
        step = full_step

        def at(fraction: float) -> tuple[float, float]:
            candidate = theta_old + fraction * step
            if not all_finite([candidate]):
                return math.nan, math.nan
            return evaluate(unflatten(candidate, params))

        search = backtracking_line_search(at, loss, max_kl, ls_max_steps, ls_backtrack_ratio)
        if not search.accepted:
            rejected = (
                StepRejection.UPDATE
                if search.non_finite == search.steps
                else StepRejection.NO_IMPROVEMENT
            )
    step_norm = 0.0
    if search.accepted and full_step is not None:
        new = unflatten(theta_old + search.fraction * full_step, params)
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(new[name])
        step_norm = search.fraction * full_step.norm().item()
    t2 = time.perf_counter()
    return TrustRegionResult(
        accepted=search.accepted,
        loss=search.loss,
        kl=search.kl,
        line_search_steps=search.steps,
        step_norm=step_norm,
        grad_norm=grad_norm,
        cg_iterations=cg_iterations,
        cg_residual=cg_residual,
        cg_s=t1 - t0,
        line_search_s=t2 - t1,
        rejected=rejected,
    )
