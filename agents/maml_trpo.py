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

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from maml_rl.agents.linearizers import (
    HVP_DTYPES,
    HVP_METHODS,
    AutogradLinearizer,
    Linearizer,
    LinearizerSettings,
)
from maml_rl.agents.linearizers_gaussian_mlp import GaussianMLPLinearizer
from maml_rl.agents.maml import InnerLoop, InnerObjective, check_inner_objective, check_meta_batches
from maml_rl.agents.policies import Params, Policy
from maml_rl.batch import EpisodeBatch
from maml_rl.optim import trust_region_step

__all__ = ["MAMLTRPO"]


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
        hvp: ``"gauss_newton"`` (default: exact KL Hessian products), ``"exact"``
            (double backward, the reference) or ``"first_order"`` (the KL Hessian with
            the adaptation's Jacobian taken as the identity: cheaper products,
            approximate curvature; the gradient stays exact); see
            :mod:`maml_rl.agents.linearizers`.
        hvp_subsample: fraction of the tasks whose KL curvature the Hessian-vector
            products use — the first ``⌈f·N⌉`` (tasks come in random order, so this
            is a random subset). 1.0 (default) is the exact KL Hessian; a smaller
            fraction makes each product proportionally cheaper with an unbiased
            estimate of the curvature (the TRPO paper's subsampled Fisher, rllab's
            ``subsample_factor``). The gradient, and the line search's KL check, always
            use every task.
        hvp_dtype: floating-point type of the Hessian-vector products: ``"float32"``
            (default: the policy's own type) or ``"bfloat16"`` — the same products
            from bfloat16 copies of the cached activations (8 significant bits; fast
            where the hardware has bfloat16 matrix products, slow elsewhere; see
            ``benchmarks/trpo_update.py``). Only the conjugate-gradient solve (the
            step's direction and scale) sees them; the gradient and the line search's
            surrogate and KL checks stay float32. Needs the hand-derived linearizer
            (Gaussian MLP, ``reinforce``, not ``exact``).
        normalize_advantages: normalise advantages per task (pytorch-maml-rl does).
        inner_objective: ``"reinforce"`` (the MAML paper), ``"lvc"`` or ``"dice"``;
            see :mod:`maml_rl.agents.maml`. During the line search the adaptation at a
            candidate ``θ`` keeps the current policy as ``π_old``, so the surrogate it
            evaluates is the function whose gradient and curvature the step used.
    """

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
        if hvp not in HVP_METHODS:
            raise ValueError(f"hvp must be one of {HVP_METHODS}, got {hvp!r}")
        if hvp_dtype not in HVP_DTYPES:
            raise ValueError(f"hvp_dtype must be one of {tuple(HVP_DTYPES)}, got {hvp_dtype!r}")
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
        settings = LinearizerSettings(
            fast_lr=self.fast_lr,
            first_order=self.first_order,
            inner_objective=self.inner_objective,
            hvp=hvp,
            hvp_subsample=self.hvp_subsample,
            hvp_dtype=hvp_dtype,
        )
        hand_derived = GaussianMLPLinearizer.applies(self.policy, settings)
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
        check_meta_batches(train_batches, valid_batch, self.num_adapt_steps)
        t0 = time.perf_counter()
        train = [self.samples(b) for b in train_batches]
        valid = self.samples(valid_batch)
        lin = self.linearizer.linearize(train, valid)
        t1 = time.perf_counter()

        def evaluate(candidate: Params) -> tuple[float, float]:
            return self.linearizer.evaluate(candidate, train, valid, lin)

        result = trust_region_step(
            dict(self.policy.named_parameters()), lin.loss, lin.grad, lin.hvp, evaluate,
            max_kl=self.max_kl, damping=self.cg_damping, cg_iters=self.cg_iters,
            ls_max_steps=self.ls_max_steps, ls_backtrack_ratio=self.ls_backtrack_ratio,
        )  # fmt: skip
        lin.release()
        return {
            "train/surrogate_loss": lin.loss,
            "train/surrogate_loss_after": result.loss,
            "train/kl": result.kl,
            "train/line_search_steps": float(result.line_search_steps),
            "train/step_accepted": float(result.accepted),
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
