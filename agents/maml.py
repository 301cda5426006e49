"""The MAML inner loop: one REINFORCE step per task, for all tasks at once.

For task ``i`` with its training episodes, the inner loss is the policy-gradient
surrogate with baseline advantages (Finn et al., 2017, Alg. 3; REINFORCE with the
linear feature baseline)::

    L_i(θ) = − mean over valid steps of  log π_θ(a|s) · A(s, a)
    θ'_i   = θ − α ∇_θ L_i(θ)

All ``N`` tasks are adapted together. ``θ`` is broadcast to *stacked* parameters
``[N, ...]`` (``expand``: no copy, and gradients flow back to the shared ``θ``), the
policy runs once on ``observations [N, T·E, obs_dim]`` (one batched matmul per layer),
and a single ``torch.autograd.grad`` of ``Σ_i L_i`` with respect to the stacked
parameters yields every task's own gradient in row ``i`` — the tasks share no
computation, so the sum separates. There is no Python loop over tasks.

With ``second_order=True`` the gradient is built with ``create_graph=True``, so an
outer loss on ``θ'`` differentiates through the inner step (the ``−α ∇²L_i`` term of
the meta-gradient); the first-order variant treats ``∇L_i`` as a constant.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from torch.distributions import Categorical, Distribution, Independent, Normal

from maml_rl.agents.policies import Params, Policy, stack_params
from maml_rl.baseline import compute_advantages
from maml_rl.batch import EpisodeBatch

__all__ = [
    "InnerStep",
    "TaskSamples",
    "detach_distribution",
    "distribution_like",
    "distribution_tensors",
    "inner_losses",
    "inner_step",
    "stack_for_tasks",
]


@dataclasses.dataclass(frozen=True)
class TaskSamples:
    """An :class:`EpisodeBatch` flattened per task, with its advantages, for PG losses.

    ``M = T · E`` samples per task; padded steps carry weight 0.

    Attributes:
        observations: ``[N, M, obs_dim]``.
        actions: ``[N, M, act_dim]`` (continuous) or ``[N, M]`` (discrete).
        advantages: ``[N, M]``, from :func:`~maml_rl.baseline.compute_advantages`.
        weights: ``[N, M]``, ``mask / (valid steps of the task)``: a per-task masked
            mean of ``x`` is ``(weights * x).sum(1)``.
    """

    observations: torch.Tensor
    actions: torch.Tensor
    advantages: torch.Tensor
    weights: torch.Tensor

    @property
    def num_tasks(self) -> int:
        return int(self.observations.shape[0])

    def head(self, k: int) -> TaskSamples:
        """The samples of the first ``k`` tasks."""
        return TaskSamples(
            self.observations[:k], self.actions[:k], self.advantages[:k], self.weights[:k]
        )

    @classmethod
    def from_batch(
        cls,
        batch: EpisodeBatch,
        gamma: float,
        gae_lambda: float,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        normalize: bool = True,
    ) -> TaskSamples:
        """Fit the per-task baseline, compute advantages and flatten the batch.

        Args:
            batch: ``[N, T, E, ...]`` episodes.
            gamma: discount factor.
            gae_lambda: GAE ``λ``.
            device: where the tensors go (default: where the batch is).
            dtype: floating dtype of observations/advantages (default: the batch's).
            normalize: per-task advantage normalisation.
        """
        if device is not None:
            batch = batch.to(device)
        n, t, e = batch.rewards.shape
        adv = compute_advantages(batch, gamma, gae_lambda, normalize=normalize)
        mask = batch.mask
        count = mask.sum(dim=(1, 2), keepdim=True).clamp(min=1.0)
        weights = (mask / count).reshape(n, t * e)
        obs = batch.observations.reshape(n, t * e, -1)
        actions = batch.actions.reshape(n, t * e, *batch.actions.shape[3:])
        if dtype is not None:
            obs, adv, weights = obs.to(dtype), adv.to(dtype), weights.to(dtype)
            if actions.is_floating_point():
                actions = actions.to(dtype)
        return cls(obs, actions, adv.reshape(n, t * e), weights)


def stack_for_tasks(params: Mapping[str, torch.Tensor], policy: Policy, n: int) -> Params:
    """``params`` as stacked ``[N, ...]`` parameters (broadcast if unstacked).

    Raises:
        ValueError: if stacked parameters are for a different number of tasks.
    """
    if policy.is_stacked(params):
        got = next(iter(params.values())).shape[0]
        if got != n:
            raise ValueError(f"stacked parameters are for {got} tasks, the batch has {n}")
        return dict(params)
    return stack_params(params, n)


def inner_losses(
    policy: Policy, params: Mapping[str, torch.Tensor], samples: TaskSamples
) -> torch.Tensor:
    """Per-task REINFORCE losses ``−mean_valid(log π(a|s) · A)``.

    Args:
        policy: the policy.
        params: stacked ``[N, ...]`` parameters.
        samples: the task samples.

    Returns:
        ``[N]`` losses.
    """
    log_probs = policy(samples.observations, params).log_prob(samples.actions)
    return -(log_probs * samples.advantages * samples.weights).sum(dim=1)


@dataclasses.dataclass(frozen=True)
class InnerStep:
    """One adaptation step ``θ_out = θ_in − α g``, with what a meta-learner reuses.

    Attributes:
        params_in: stacked ``[N, ...]`` parameters the step started from.
        grads: stacked per-task gradients ``g_i = ∇L_i(θ_in)``; with a second-order
            step they carry the graph of the gradient (for Hessian-vector products).
        params_out: stacked adapted parameters.
        losses: ``[N]`` inner losses at ``params_in`` (detached).
    """

    params_in: Params
    grads: Params
    params_out: Params
    losses: torch.Tensor


def inner_step(
    policy: Policy,
    params: Mapping[str, torch.Tensor],
    samples: TaskSamples,
    fast_lr: float,
    *,
    second_order: bool,
    keep_graph: bool,
) -> InnerStep:
    """One REINFORCE step for all tasks at once.

    Args:
        policy: the policy.
        params: unstacked ``θ`` (shared by every task) or stacked ``[N, ...]``.
        samples: the tasks' training samples.
        fast_lr: inner step size ``α``.
        second_order: build the gradient with ``create_graph=True`` so that
            ``params_out`` is differentiable to second order w.r.t. ``params``.
        keep_graph: if False, ``params_out`` is detached (for sampling); if True it
            depends on ``params`` (through ``−α g`` too when ``second_order``).

    Returns:
        An :class:`InnerStep`.
    """
    create_graph = second_order and keep_graph
    # Grad mode on throughout: callers may sit under torch.no_grad() (samplers, line
    # searches), and the broadcast of θ must be recorded for the graph to reach θ.
    with torch.enable_grad():
        stacked = stack_for_tasks(params, policy, samples.num_tasks)
        # Detached inputs (e.g. during sampling) get a fresh leaf so the gradient exists.
        stacked = {
            k: v if v.requires_grad else v.detach().requires_grad_() for k, v in stacked.items()
        }
        losses = inner_losses(policy, stacked, samples)
        # Tasks are independent, so d(Σ_i L_i)/dθ_i = ∇L_i: one call, all tasks.
        grads = torch.autograd.grad(losses.sum(), list(stacked.values()), create_graph=create_graph)
        grad_dict = dict(zip(stacked, grads, strict=True))
        out = {k: stacked[k] - fast_lr * grad_dict[k] for k in stacked}
    if not keep_graph:
        out = {k: v.detach() for k, v in out.items()}
    return InnerStep(stacked, grad_dict, out, losses.detach())


def distribution_tensors(dist: Distribution) -> list[torch.Tensor]:
    """The tensors that parametrise a policy's action distribution.

    ``[loc, scale]`` for an ``Independent`` ``Normal``, ``[logits]`` for a
    ``Categorical`` — the distributions of :mod:`maml_rl.agents.policies`.
    """
    base = dist.base_dist if isinstance(dist, Independent) else dist
    if isinstance(base, Normal):
        return [base.loc, base.scale]
    if isinstance(base, Categorical):
        return [base.logits]
    raise TypeError(
        f"unsupported action distribution {type(base).__name__}; add a case to "
        "distribution_tensors/distribution_like"
    )


def distribution_like(dist: Distribution, tensors: Sequence[torch.Tensor]) -> Distribution:
    """A distribution of the same kind as ``dist`` built from ``tensors``.

    The inverse of :func:`distribution_tensors`.
    """
    if isinstance(dist, Independent):
        return Independent(
            distribution_like(dist.base_dist, tensors), dist.reinterpreted_batch_ndims
        )
    if isinstance(dist, Normal):
        loc, scale = tensors
        return Normal(loc, scale, validate_args=False)
    if isinstance(dist, Categorical):
        (logits,) = tensors
        return Categorical(logits=logits, validate_args=False)
    raise TypeError(f"unsupported action distribution {type(dist).__name__}")


def detach_distribution(dist: Distribution) -> Distribution:
    """A copy of a policy's action distribution with its parameters detached."""
    return distribution_like(dist, [t.detach() for t in distribution_tensors(dist)])
