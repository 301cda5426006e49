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
only a lower surrogate with ``KL ≤ max_kl`` (Schulman et al., 2015;
:func:`maml_rl.optim.trust_region_step`).

The surrogate, its gradient through the adaptation, the products with ``H`` and the
line search's candidates come from a :class:`~maml_rl.agents.linearizers.Linearizer`,
chosen once in the constructor: the hand-derived
:class:`~maml_rl.agents.linearizers_gaussian_mlp.GaussianMLPLinearizer` for a
Gaussian MLP policy with the REINFORCE inner loss (unless ``hvp="exact"``), the
:class:`~maml_rl.agents.linearizers.AutogradLinearizer` otherwise. How the products
are computed, and what the ``hvp``, ``hvp_subsample`` and ``hvp_dtype`` options
change, is in :mod:`maml_rl.agents.linearizers`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from maml_rl.agents.linearizers import (
    AutogradLinearizer,
    Linearizer,
    LinearizerSettings,
)
from maml_rl.agents.linearizers_gaussian_mlp import GaussianMLPLinearizer
from maml_rl.agents.maml import InnerLoop, MAMLConfig, check_meta_batches
from maml_rl.agents.policies import Params, Policy
from maml_rl.batch import EpisodeBatch
from maml_rl.divergence import REJECTION_TAG
from maml_rl.optim import trust_region_step
from maml_rl.validation import Validated, bounded

__all__ = ["MAMLTRPO", "TRPOConfig", "native_bfloat16"]


@dataclasses.dataclass(frozen=True)
class TRPOConfig(Validated):
    """The MAML-TRPO outer step (used when ``agent: maml_trpo``)."""

    max_kl: float = bounded(0.01, gt=0.0)
    """Trust region: largest mean KL(π_θ_old ‖ π_θ) of the post-adaptation policies."""

    cg_iters: int = bounded(10, ge=1)
    """Conjugate-gradient iterations for the natural-gradient direction."""

    cg_damping: float = bounded(1e-5, ge=0.0)
    """Damping added to the Fisher-vector products (``(F + damping·I) v``)."""

    ls_max_steps: int = bounded(15, ge=1)
    """Backtracking line-search steps before the update is rejected."""

    ls_backtrack_ratio: float = bounded(0.8, gt=0.0, lt=1.0)
    """Step shrink factor per line-search step."""

    hvp: Literal["gauss_newton", "exact", "first_order"] = "gauss_newton"
    """KL Hessian-vector products: ``gauss_newton`` (exact, fastest), ``exact`` (double
    differentiation; the reference) or ``first_order`` (the KL curvature with the
    adaptation's Jacobian taken as the identity: ~4x cheaper products, approximate
    curvature; the meta-gradient stays second order)."""

    hvp_subsample: float = bounded(1.0, gt=0.0, le=1.0)
    """Fraction of the tasks whose KL curvature the Hessian-vector products use (1.0:
    all; smaller is proportionally cheaper and unbiased, as rllab's ``subsample_factor``)."""

    hvp_dtype: Literal["float32", "bfloat16", "auto"] = "float32"
    """Floating-point type of the Hessian-vector products: ``bfloat16`` computes them
    from bfloat16 copies of the cached activations (fast on CPUs with AVX-512 BF16 or AMX
    and on GPUs, slow on other CPUs); the gradient and the line search stay float32. Needs a
    Gaussian MLP policy, the ``reinforce`` inner objective and ``hvp`` other than
    ``exact``. ``auto``: bfloat16 where it is native (a CUDA device with bfloat16, a CPU
    with AVX-512 BF16 or AMX) and the hand-derived products apply, float32 otherwise."""


def native_bfloat16(device: torch.device) -> bool:
    """Whether bfloat16 products are native on ``device``: a CUDA device that supports
    bfloat16, or a CPU with AVX-512 BF16 or AMX (read from ``/proc/cpuinfo``; other
    systems: no)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class MAMLTRPO(InnerLoop):
    """Model-agnostic meta-learning with a TRPO meta-update.

    Args:
        policy: the policy whose parameters are the meta-parameters ``θ``; moved to
            ``device``; :meth:`step` updates its parameters in place.
        maml: the inner loop (``fast_lr``, ``num_adapt_steps``, ``first_order``,
            ``gamma``, ``gae_lambda``, ``normalize_advantages``, ``inner_objective``);
            default: the MAML paper's.
        trpo: the outer step (:class:`TRPOConfig`); default: the MAML paper's. During
            the line search the adaptation at a candidate ``θ`` keeps the current
            policy as ``π_old``, so the surrogate it evaluates is the function whose
            gradient and curvature the step used.
        device: where the meta-update runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).

    Raises:
        ValueError: ``trpo.hvp_dtype`` other than float32 for a policy or inner
            objective the hand-derived linearizer does not cover.
    """

    def __init__(
        self,
        policy: Policy,
        maml: MAMLConfig | None = None,
        trpo: TRPOConfig | None = None,
        *,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(policy, maml or MAMLConfig(), device)
        self.trpo = trpo or TRPOConfig()
        auto = self.trpo.hvp_dtype == "auto"
        settings = LinearizerSettings(
            fast_lr=self.maml.fast_lr,
            first_order=self.maml.first_order,
            inner_objective=self.maml.inner_objective,
            hvp=self.trpo.hvp,
            hvp_subsample=self.trpo.hvp_subsample,
            hvp_dtype="float32" if auto else self.trpo.hvp_dtype,
        )
        hand_derived = GaussianMLPLinearizer.applies(self.policy, settings)
        if auto and hand_derived and native_bfloat16(self.device):
            settings = dataclasses.replace(settings, hvp_dtype="bfloat16")
        #: The products' floating-point type in use (``trpo.hvp_dtype`` with ``auto`` resolved).
        self.hvp_dtype = settings.hvp_dtype
        linearizer = GaussianMLPLinearizer if hand_derived else AutogradLinearizer
        self.linearizer: Linearizer = linearizer(self.policy, settings)

    # -- inner loop --------------------------------------------------------------------
    def adapt(
        self,
        params: Mapping[str, torch.Tensor],
        batch: EpisodeBatch,
        *,
        create_graph: bool = False,
    ) -> Params:
        """:meth:`InnerLoop.adapt`; for sampling (``create_graph=False``) by the linearizer."""
        params = {k: v.to(self.device) for k, v in params.items()}
        if create_graph:
            return self._inner_step(params, batch, create_graph)
        return self.linearizer.adapt(params, self.samples(batch))

    # -- outer step ----------------------------------------------------------------------
    def step(
        self, train_batches: Sequence[EpisodeBatch], valid_batch: EpisodeBatch
    ) -> dict[str, float]:
        """One TRPO meta-update of the policy's parameters (in place).

        A non-finite loss, gradient or step direction, a line search whose candidates
        are all non-finite, or one that finds no acceptable step, leaves the parameters
        untouched (``train/step_accepted = 0``, and ``train/step_rejected_reason`` says
        why: a :class:`~maml_rl.divergence.StepRejection` code).

        Args:
            train_batches: one batch per inner step; batch ``k`` was sampled with the
                parameters after ``k`` inner steps.
            valid_batch: episodes sampled with the fully adapted parameters.

        Returns:
            Metrics: ``train/surrogate_loss`` (before the step),
            ``train/surrogate_loss_after``, ``train/kl`` (of the applied step, 0 if
            none), ``train/line_search_steps`` (candidates tried, 0 if the search did
            not run), ``train/step_accepted`` (1/0), ``train/step_rejected_reason``
            (0 if accepted), ``train/inner_loss`` (mean
            pre-adaptation inner loss), ``train/grad_norm`` (meta-gradient norm),
            ``train/step_norm`` (norm of the applied step), ``train/cg_residual``
            (relative residual of the CG solve), ``train/cg_iterations`` (Hessian-vector
            products made), and the seconds spent in each phase:
            ``time/trpo_gradient_s`` (advantages, adaptation with graph, surrogate,
            meta-gradient), ``time/trpo_cg_s`` (the ``cg_iters`` Hessian-vector
            products), ``time/trpo_line_search_s``.
        """
        check_meta_batches(train_batches, valid_batch, self.maml.num_adapt_steps)
        t0 = time.perf_counter()
        train = [self.samples(b) for b in train_batches]
        valid = self.samples(valid_batch)
        lin = self.linearizer.linearize(train, valid)
        t1 = time.perf_counter()

        def evaluate(candidate: Params) -> tuple[float, float]:
            return self.linearizer.evaluate(candidate, train, valid, lin)

        result = trust_region_step(
            dict(self.policy.named_parameters()), lin.loss, lin.grad, lin.hvp, evaluate,
            max_kl=self.trpo.max_kl, damping=self.trpo.cg_damping, cg_iters=self.trpo.cg_iters,
            ls_max_steps=self.trpo.ls_max_steps, ls_backtrack_ratio=self.trpo.ls_backtrack_ratio,
        )  # fmt: skip
        lin.release()
        return {
            "train/surrogate_loss": lin.loss,
            "train/surrogate_loss_after": result.loss,
            "train/kl": result.kl,
            "train/line_search_steps": float(result.line_search_steps),
            "train/step_accepted": float(result.accepted),
            REJECTION_TAG: float(result.rejected),
            "train/inner_loss": lin.inner_loss,
            "train/grad_norm": result.grad_norm,
            "train/step_norm": result.step_norm,
            "train/cg_residual": result.cg_residual,
            "train/cg_iterations": float(result.cg_iterations),
            "time/trpo_gradient_s": t1 - t0,
            "time/trpo_cg_s": result.cg_s,
            "time/trpo_line_search_s": result.line_search_s,
        }

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
