"""What one MAML-TRPO step needs at the current ``θ``, behind one interface.

A TRPO step (:mod:`maml_rl.agents.maml_trpo`) needs, at the current meta-parameters
``θ``: the surrogate ``L(θ)`` and its gradient through the adaptation, products
``v ↦ H v`` with the Hessian of the mean KL ``KL(θ)``, and, for the line search, the
surrogate and KL at candidate parameters. A :class:`Linearizer` computes them; two
implementations give the same numbers (up to rounding; tests compare them):

* :class:`AutogradLinearizer`: any policy, any inner objective, every ``hvp`` method;
* :class:`~maml_rl.agents.linearizers_gaussian_mlp.GaussianMLPLinearizer`: a
  Gaussian MLP policy with the REINFORCE inner loss (the MAML paper's setting), from
  hand-derived derivatives (:mod:`maml_rl.agents._gaussian_mlp`) with activations
  cached once per step.

Hessian-vector products. ``H`` is the Hessian of ``KL(θ)`` at the current ``θ``,
where the KL and its gradient vanish. Hence, with ``B_i = ∂θ'_i/∂θ = I − α ∇²L_i^inner``
and ``G_i`` the Hessian of task ``i``'s share of the KL with respect to its adapted
parameters ``θ'_i``::

    H v = Σ_i B_iᵀ G_i B_i v            (exact at the current θ)

because the other chain-rule term, ``Σ ∂KL/∂θ'_i · ∂²θ'_i/∂θ²``, is multiplied by
``∂KL/∂θ'_i = 0``; for the same reason ``G_i = J_iᵀ F_i J_i`` (Gauss-Newton form),
with ``J_i`` the Jacobian of the action distribution's tensors (mean and std, or
logits) w.r.t. ``θ'_i`` and ``F_i`` the KL's Hessian in those tensors. With several
inner steps ``B_i`` is the product of one such factor per step. The default
``hvp="gauss_newton"`` computes exactly this, reusing graphs built once per step:

* ``B v``: a vector-Jacobian product through the inner-gradient graph (``∇²L`` is
  symmetric, so it is also the Jacobian-vector product);
* ``J u``: the derivative, w.r.t. a dummy cotangent ``d``, of the cached ``Jᵀd``;
  ``F`` elementwise; ``Jᵀ`` one backward through the outer network;
* ``Bᵀ``: one backward through the adaptation, summing over tasks.

Only second derivatives of the inner loss appear; for an MLP this is the count of
large matrix products a hand-written Pearlmutter pass needs (which is what the
Gaussian-MLP linearizer does). ``hvp="exact"`` double-differentiates ``∇_θ KL(θ)``
through the adaptation as the reference implementations do (third derivatives of the
inner loss); it gives the same products — a test checks — and is kept as the
reference.

Three options trade exactness or precision of the curvature (never of the gradient or
of the line search's checks) for speed:

* ``hvp_subsample = f``: the curvature of the first ``⌈f·N⌉`` tasks (tasks come in
  random order, so a random subset: the TRPO paper's subsampled Fisher);
* ``hvp="first_order"``: ``Σ_i G_i``, the KL Hessian of the adapted policies w.r.t.
  their own parameters, i.e. ``B_i`` taken as ``I`` (the curvature FOMAML uses, while
  the gradient stays second order). How much the curvature changes depends on the
  size of ``α ∇²L^inner`` next to ``I``;
* ``hvp_dtype="bfloat16"``: the same products on bfloat16 copies of the cached
  activations (Gaussian-MLP linearizer only).

The products exclude the conjugate-gradient damping, which the trust-region step adds
(:func:`maml_rl.optim.trust_region_step`).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch.distributions import Distribution, kl_divergence

from maml_rl.agents.maml import (
    InnerObjective,
    InnerStep,
    TaskSamples,
    adapt_chain,
    detach_distribution,
    distribution_like,
    distribution_tensors,
)
from maml_rl.agents.policies import Params, Policy
from maml_rl.optim import flatten, unflatten

__all__ = [
    "HVP_DTYPES",
    "HVP_METHODS",
    "AutogradLinearizer",
    "Linearization",
    "Linearizer",
    "LinearizerSettings",
    "surrogate_and_kl",
]

HVP_METHODS = ("gauss_newton", "exact", "first_order")
#: ``None``: the policy's own type (float32, or float64 in tests).
HVP_DTYPES: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16}


@dataclasses.dataclass(frozen=True)
class LinearizerSettings:
    """What is linearised: the adaptation and the curvature's options.

    Attributes:
        fast_lr: inner step size ``α``.
        first_order: treat the inner gradient as a constant (FOMAML).
        inner_objective: ``"reinforce"``, ``"lvc"`` or ``"dice"``.
        hvp: one of :data:`HVP_METHODS` (see the module docstring).
        hvp_subsample: fraction of the tasks whose curvature the products use.
        hvp_dtype: one of :data:`HVP_DTYPES`, the products' floating-point type.
    """

    fast_lr: float
    first_order: bool
    inner_objective: InnerObjective = "reinforce"
    hvp: str = "gauss_newton"
    hvp_subsample: float = 1.0
    hvp_dtype: str = "float32"

    def curvature_tasks(self, num_tasks: int) -> int:
        """How many of ``num_tasks`` tasks (the first ones) the curvature uses."""
        return max(1, math.ceil(self.hvp_subsample * num_tasks - 1e-9))


def _nothing() -> None:
    return None


@dataclasses.dataclass
class Linearization:
    """The TRPO objective at the current ``θ``: values, gradient, curvature.

    Attributes:
        loss: the surrogate ``L(θ)``.
        grad: its flat gradient ``∇_θ L``.
        hvp: ``v ↦ H v`` for flat ``v``, the KL Hessian at ``θ`` (no damping). It holds
            the graphs or buffers it reads: drop the linearisation to free them.
        inner_loss: the mean first inner loss.
        old_log_probs: ``[N, M]`` log-probabilities of the valid actions under the
            adapted policies at ``θ`` (detached): the surrogate's denominators.
        old_dist: those adapted policies' action distributions (detached): the KL's
            first argument.
        inner_old_log_probs: per inner step, ``[N, M]`` log-probabilities of its
            pre-update policy at ``θ`` (detached): the fixed denominators of the
            lvc/dice inner losses at other ``θ``.
        on_release: called by :meth:`release`.
    """

    loss: float
    grad: torch.Tensor
    hvp: Callable[[torch.Tensor], torch.Tensor]
    inner_loss: float
    old_log_probs: torch.Tensor
    old_dist: Distribution
    inner_old_log_probs: list[torch.Tensor]
    on_release: Callable[[], None] = _nothing

    def release(self) -> None:
        """The step is over: :attr:`hvp` is not called again, its buffers may be reused."""
        self.on_release()


class Linearizer(abc.ABC):
    """Computes what a MAML-TRPO step needs at the current ``θ`` (see the module).

    Args:
        policy: the policy; its parameters are ``θ``.
        settings: the adaptation and curvature options.
    """

    def __init__(self, policy: Policy, settings: LinearizerSettings) -> None:
        self.policy = policy
        self.settings = settings

    @abc.abstractmethod
    def adapt(self, params: Mapping[str, torch.Tensor], samples: TaskSamples) -> Params:
        """One inner step of every task from ``params`` (unstacked or stacked), detached.

        The sampling-time adaptation (:meth:`maml_rl.agents.maml.InnerLoop.adapt`
        without ``create_graph``).
        """

    @abc.abstractmethod
    def linearize(self, train: Sequence[TaskSamples], valid: TaskSamples) -> Linearization:
        """The surrogate, its gradient and the KL curvature at the policy's ``θ``.

        Args:
            train: the training samples of each inner step.
            valid: the samples of the adapted policies.
        """

    @abc.abstractmethod
    def evaluate(
        self, theta: Params, train: Sequence[TaskSamples], valid: TaskSamples, lin: Linearization
    ) -> tuple[float, float]:
        """Surrogate and mean KL (from ``lin``'s policies) at candidate ``theta``.

        The adaptation is recomputed from ``theta``; no graph is kept.
        """


def surrogate_and_kl(
    log_probs: torch.Tensor, dist: Distribution, valid: TaskSamples, lin: Linearization
) -> tuple[float, float]:
    """Surrogate loss and mean KL (from ``lin``'s policies) of adapted policies ``dist``.

    ``log_probs``: ``[N, M]`` their log-probabilities of the valid actions.
    """
    ratio = torch.exp(log_probs - lin.old_log_probs)
    loss = -(ratio * valid.advantages * valid.weights).sum(1).mean()
    kl = (kl_divergence(lin.old_dist, dist) * valid.weights).sum(1).mean()
    return loss.item(), kl.item()


class AutogradLinearizer(Linearizer):
    """The linearisation through autograd: any policy, inner objective and ``hvp``.

    The products only come in the policy's own floating-point type
    (``hvp_dtype="float32"``).
    """

    def __init__(self, policy: Policy, settings: LinearizerSettings) -> None:
        if settings.hvp_dtype != "float32":
            raise ValueError(
                f"hvp_dtype={settings.hvp_dtype!r} needs the hand-derived products: a "
                "Gaussian MLP policy (relu or tanh), inner_objective 'reinforce' and hvp "
                "'gauss_newton' or 'first_order'; use hvp_dtype 'float32' otherwise"
            )
        super().__init__(policy, settings)

    def _adapt_chain(
        self, theta: Mapping[str, torch.Tensor], train: Sequence[TaskSamples], keep_graph: bool,
        old_log_probs: Sequence[torch.Tensor] | None = None,
    ) -> list[InnerStep]:  # fmt: skip
        s = self.settings
        return adapt_chain(
            self.policy, theta, train, s.fast_lr, second_order=not s.first_order,
            keep_graph=keep_graph, objective=s.inner_objective, old_log_probs=old_log_probs,
        )  # fmt: skip

    def adapt(self, params: Mapping[str, torch.Tensor], samples: TaskSamples) -> Params:
        return self._adapt_chain(params, [samples], keep_graph=False)[-1].params_out

    def linearize(self, train: Sequence[TaskSamples], valid: TaskSamples) -> Linearization:
        with torch.enable_grad():  # also under a caller's torch.no_grad()
            return self._linearize(train, valid)

    def _linearize(self, train: Sequence[TaskSamples], valid: TaskSamples) -> Linearization:
        theta = dict(self.policy.named_parameters())
        n = valid.num_tasks
        num_curv = self.settings.curvature_tasks(n)
        full_curvature = num_curv == n
        # 1. Adaptation from θ, with the graph, shared by surrogate, KL and products.
        steps = self._adapt_chain(theta, train, keep_graph=True)
        adapted = steps[-1].params_out
        inner_old_log_probs = [s.log_probs.detach() for s in steps]
        inner_loss = steps[0].losses.mean().item()  # all tasks (steps may be replaced below)
        # 2. The outer network at a detached copy of θ': its graph is separate from the
        #    adaptation's, so each is reused by every conjugate-gradient iteration.
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
        if self.settings.hvp != "exact":
            hvp = self._gauss_newton_hvp(theta, steps, leaf, dist, curv_old_dist, curv_valid)
        else:
            hvp = self._exact_hvp(theta, adapted, curv_old_dist, curv_valid)
        return Linearization(
            loss=loss.item(),
            grad=flatten(grads),
            hvp=hvp,
            inner_loss=inner_loss,
            old_log_probs=old_log_probs,
            old_dist=old_dist,
            inner_old_log_probs=inner_old_log_probs,
        )

    def evaluate(
        self, theta: Params, train: Sequence[TaskSamples], valid: TaskSamples, lin: Linearization
    ) -> tuple[float, float]:
        with torch.no_grad():
            steps = self._adapt_chain(theta, train, False, lin.inner_old_log_probs)
            dist = self.policy(valid.observations, steps[-1].params_out)
            return surrogate_and_kl(dist.log_prob(valid.actions), dist, valid, lin)

    def _gauss_newton_hvp(
        self,
        theta: Params,
        steps: list[InnerStep],
        leaf: Params,
        dist: Distribution,
        old_dist: Distribution,
        valid: TaskSamples,
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``v ↦ Σ_i B_iᵀ J_iᵀ F_i J_i B_i v`` (see the module docstring).

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
        fast_lr = self.settings.fast_lr
        # B = I under FOMAML, and taken as I by the first-order curvature.
        through_adaptation = not (self.settings.first_order or self.settings.hvp == "first_order")

        def grad(outputs: Sequence[torch.Tensor], inputs: Sequence[torch.Tensor],
                 cotangents: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:  # fmt: skip
            return torch.autograd.grad(
                outputs, inputs, grad_outputs=cotangents, retain_graph=True,
                allow_unused=True, materialize_grads=True,
            )  # fmt: skip

        def hvp(v: torch.Tensor) -> torch.Tensor:
            # B v: push v forward through each inner step, u ← u − α ∇²L_k u.
            u = [t.unsqueeze(0).expand(n, *t.shape) for t in unflatten(v, theta).values()]
            if through_adaptation:
                for step in steps:
                    hu = grad(list(step.grads.values()), list(step.params_in.values()), u)
                    u = [a - fast_lr * b for a, b in zip(u, hu, strict=True)]
            # G (B v) = Jᵀ F J u on the outer network at θ'_i, per task.
            ju = grad(jt_dummy, dummies, u)
            fju = grad(grad_kl_out, out_leaves, ju)
            gu = grad(outs, leaves, fju)
            # Bᵀ (G B v), summed over tasks: one backward through the adaptation.
            if through_adaptation:
                return flatten(grad(adapted, params, gu))
            return flatten([t.sum(0) for t in gu])

        return hvp

    def _exact_hvp(
        self,
        theta: Params,
        adapted: Params,
        old_dist: Distribution,
        valid: TaskSamples,
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``v ↦ ∇²_θ KL v`` by double backward through the adaptation."""
        params = list(theta.values())
        with torch.enable_grad():
            dist = self.policy(valid.observations, adapted)
            kl = (kl_divergence(old_dist, dist) * valid.weights).sum(1).mean()
            # The graph of ∇_θ KL is built once and reused by every product.
            flat_grad_kl = flatten(torch.autograd.grad(kl, params, create_graph=True))

        def hvp(v: torch.Tensor) -> torch.Tensor:
            return flatten(
                torch.autograd.grad(flat_grad_kl, params, grad_outputs=v, retain_graph=True)
            )

        return hvp
