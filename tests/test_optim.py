"""The TRPO step and its pieces (maml_rl.optim): conjugate gradient, line search, step."""

from __future__ import annotations

import math

import pytest
import torch

from maml_rl.optim import (
    TrustRegionResult,
    backtracking_line_search,
    conjugate_gradient,
    flatten,
    trust_region_step,
    unflatten,
)

# -- conjugate gradient and line search --------------------------------------------------------


def test_conjugate_gradient_solves_spd_system() -> None:
    g = torch.Generator().manual_seed(0)
    m = torch.randn(6, 6, generator=g, dtype=torch.float64)
    a = m @ m.T + 0.5 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    calls = []

    def matvec(v: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return a @ v

    res = conjugate_gradient(matvec, b, iters=6)
    torch.testing.assert_close(res.x, torch.linalg.solve(a, b))
    assert res.xAx == pytest.approx((res.x @ a @ res.x).item(), rel=1e-9)
    assert len(calls) == res.iterations <= 6
    # Fewer iterations than the dimension: not solved, but xAx is still exact.
    short = conjugate_gradient(matvec, b, iters=2)
    assert short.iterations == 2 and short.residual_norm > 1e-6
    assert short.xAx == pytest.approx((short.x @ a @ short.x).item(), rel=1e-9)


def test_conjugate_gradient_flags_an_indefinite_matrix() -> None:
    res = conjugate_gradient(lambda v: -v, torch.ones(3, dtype=torch.float64), iters=3)
    assert not torch.isfinite(res.x).all()


def test_line_search_accepts_first_fraction_that_improves_within_kl() -> None:
    # KL grows like 0.05·f²; with max_kl 0.01 the fractions 1 and 0.5 are too long.
    res = backtracking_line_search(lambda f: (-f, 0.05 * f * f), 0.0, 0.01, 10, 0.5)
    assert res.accepted and res.fraction == 0.25 and res.steps == 3
    assert res.loss == -0.25 and res.kl == pytest.approx(0.003125)


@pytest.mark.parametrize(
    "outcome",
    [(1.0, 0.0), (-1.0, 0.02), (float("nan"), 0.0), (-1.0, float("nan")), (-float("inf"), 0.0)],
    ids=["loss-up", "kl-too-big", "nan-loss", "nan-kl", "inf-loss"],
)
def test_line_search_rejects(outcome: tuple[float, float]) -> None:
    tried = []

    def evaluate(fraction: float) -> tuple[float, float]:
        tried.append(fraction)
        return outcome

    res = backtracking_line_search(evaluate, 0.0, 0.01, 4, 0.5)
    assert not res.accepted and res.fraction == 0.0 and res.loss == 0.0
    assert tried == [1.0, 0.5, 0.25, 0.125] and res.steps == 4


# -- the trust-region step ---------------------------------------------------------------------

MAX_KL = 0.01


def quadratic_problem() -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Parameters ``x = (w [2, 2], b [2])`` at ``x0``, a gradient ``g`` and an SPD ``A``."""
    gen = torch.Generator().manual_seed(0)
    m = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    a = m @ m.T + 0.5 * torch.eye(6, dtype=torch.float64)
    g = torch.randn(6, generator=gen, dtype=torch.float64)
    params = {
        "w": torch.nn.Parameter(torch.randn(2, 2, generator=gen, dtype=torch.float64)),
        "b": torch.nn.Parameter(torch.randn(2, generator=gen, dtype=torch.float64)),
    }
    return params, g, a


def run_step(
    params: dict[str, torch.Tensor],
    g: torch.Tensor,
    a: torch.Tensor,
    kl_scale: float = 0.9,
    loss_before: float = 0.0,
    calls: list[str] | None = None,
    evaluate_override: tuple[float, float] | None = None,
) -> TrustRegionResult:
    """A linear loss ``gᵀd`` and a KL ``kl_scale · ½ dᵀAd`` of the step ``d = x − x0``."""
    x0 = flatten([p.detach().clone() for p in params.values()])
    log = [] if calls is None else calls

    def hvp(v: torch.Tensor) -> torch.Tensor:
        log.append("hvp")
        return a @ v

    def evaluate(candidate: dict[str, torch.Tensor]) -> tuple[float, float]:
        log.append("evaluate")
        if evaluate_override is not None:
            return evaluate_override
        d = flatten(list(candidate.values())) - x0
        return (g @ d).item(), (kl_scale * 0.5 * d @ a @ d).item()

    return trust_region_step(
        params, loss_before, g, hvp, evaluate, max_kl=MAX_KL, damping=0.0, cg_iters=6,
        ls_max_steps=5, ls_backtrack_ratio=0.5,
    )  # fmt: skip


def test_trust_region_step_takes_the_scaled_natural_gradient_step() -> None:
    params, g, a = quadratic_problem()
    x0 = flatten([p.detach().clone() for p in params.values()])
    calls: list[str] = []
    result = run_step(params, g, a, calls=calls)
    # The natural-gradient direction A⁻¹g, scaled so that ½ sᵀAs = max_kl.
    s = torch.linalg.solve(a, g)
    full = -math.sqrt(2 * MAX_KL / (s @ a @ s).item()) * s
    x = flatten([p.detach() for p in params.values()])
    torch.testing.assert_close(x, x0 + full)
    assert result.accepted and result.line_search_steps == 1
    assert result.loss == pytest.approx((g @ full).item()) and result.loss < 0
    assert result.kl == pytest.approx(0.9 * MAX_KL)
    assert result.step_norm == pytest.approx(full.norm().item())
    assert result.grad_norm == pytest.approx(g.norm().item())
    assert result.cg_iterations == 6 and result.cg_residual < 1e-6
    # Every product comes before the first candidate.
    assert calls == ["hvp"] * 6 + ["evaluate"]


def test_trust_region_step_shrinks_a_step_that_leaves_the_region() -> None:
    params, g, a = quadratic_problem()
    x0 = flatten([p.detach().clone() for p in params.values()])
    # The KL is 10x its quadratic model: fractions 1 and 0.5 violate it, 0.25 does not.
    result = run_step(params, g, a, kl_scale=10.0)
    s = torch.linalg.solve(a, g)
    full = -math.sqrt(2 * MAX_KL / (s @ a @ s).item()) * s
    assert result.accepted and result.line_search_steps == 3
    torch.testing.assert_close(flatten([p.detach() for p in params.values()]), x0 + 0.25 * full)
    assert result.kl == pytest.approx(10.0 * 0.25**2 * MAX_KL)


@pytest.mark.parametrize(
    "outcome",
    [(float("nan"), 0.0), (-1.0, float("inf")), (-1.0, 2 * MAX_KL), (1.0, 0.0)],
    ids=["nan-loss", "inf-kl", "kl-too-big", "loss-up"],
)
def test_trust_region_step_rejects_and_restores(outcome: tuple[float, float]) -> None:
    params, g, a = quadratic_problem()
    before = {k: p.detach().clone() for k, p in params.items()}
    result = run_step(params, g, a, evaluate_override=outcome)
    assert not result.accepted and result.line_search_steps == 5
    assert result.loss == 0.0 and result.kl == 0.0 and result.step_norm == 0.0
    assert all(torch.equal(params[k].detach(), before[k]) for k in before)


@pytest.mark.parametrize("case", ["nan-loss", "nan-grad", "indefinite"])
def test_trust_region_step_without_a_direction_does_not_search(case: str) -> None:
    params, g, a = quadratic_problem()
    before = {k: p.detach().clone() for k, p in params.items()}
    calls: list[str] = []
    if case == "nan-grad":
        g = torch.full_like(g, float("nan"))
    if case == "indefinite":
        a = -a
    result = run_step(
        params, g, a, loss_before=math.nan if case == "nan-loss" else 0.0, calls=calls
    )
    assert not result.accepted and result.line_search_steps == 0
    assert "evaluate" not in calls
    assert (calls == []) == (case != "indefinite")  # nothing to solve for without a gradient
    assert all(torch.equal(params[k].detach(), before[k]) for k in before)


def test_flatten_and_unflatten_are_inverse() -> None:
    like = {"a": torch.zeros(2, 3), "b": torch.zeros(4)}
    vec = torch.arange(10.0)
    parts = unflatten(vec, like)
    assert parts["a"].shape == (2, 3) and parts["b"].shape == (4,)
    assert torch.equal(flatten(list(parts.values())), vec)
