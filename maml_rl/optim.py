"""The two numerical pieces of a TRPO step, as small pure functions.

* :func:`conjugate_gradient` solves ``A x = b`` for a symmetric positive-definite
  ``A`` known only through products ``v ↦ A v`` (here: Hessian-vector products of
  the KL), and returns ``xᵀ A x`` for free.
* :func:`backtracking_line_search` shrinks a proposed step until it improves the
  objective and satisfies the trust-region constraint, or gives up.

Both follow Schulman et al. (2015), "Trust Region Policy Optimization", App. C.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

__all__ = ["CGResult", "LineSearchResult", "backtracking_line_search", "conjugate_gradient"]


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
    """

    accepted: bool
    fraction: float
    steps: int
    loss: float
    kl: float


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
    for step in range(1, max_steps + 1):
        loss, kl = evaluate(fraction)
        if math.isfinite(loss) and math.isfinite(kl) and loss < loss_before and kl <= max_kl:
            return LineSearchResult(True, fraction, step, loss, kl)
        fraction *= backtrack_ratio
    return LineSearchResult(False, 0.0, max_steps, loss_before, 0.0)
