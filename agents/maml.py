"""The MAML inner loop: one policy-gradient step per task, for all tasks at once.

For task ``i`` with its training episodes, the inner step is

    θ'_i = θ − α ∇_θ L_i(θ)

where ``L_i`` is one of three *inner objectives* (:data:`INNER_OBJECTIVES`). All three
have the same value of the gradient ``∇L_i`` at the policy that sampled the episodes
(so the adapted parameters, and the rollouts they drive, are the same); they differ in
their higher derivatives — the curvature term ``−α ∇²L_i`` of the meta-gradient that an
outer loss on ``θ'`` picks up by differentiating through the step (Rothfuss et al.,
"ProMP", ICLR 2019, Sec. 4–5):

``reinforce`` (Finn et al., 2017, Alg. 3)
    ``L = − mean_valid[ log π_θ(a|s) · A ]``. Its Hessian lacks the
    ``∇log π ∇log πᵀ`` terms of the true Hessian of the expected return: a biased
    curvature estimate (ProMP, Sec. 4).
``lvc`` (ProMP's low-variance curvature)
    ``L = − mean_valid[ π_θ(a|s) / π_old(a|s) · A ]``, with ``π_old`` the pre-update
    policy that sampled the episodes (a constant). At ``θ = θ_old`` its gradient is
    REINFORCE's; its Hessian adds the per-step ``∇log π ∇log πᵀ · A`` term (the
    causal cross-step terms are dropped: biased, low variance). Away from ``θ_old`` the
    ratio importance-weights the episodes (as ProMP's code does).
``dice`` (Foerster et al., 2018, "DiCE")
    ``L = − Σ_t □(Σ_{t'≤t} log π_θ(a_t'|s_t')) · δ_t``, the magic box
    ``□(x) = exp(x − ⊥x)`` over each step's causal past, weighted like the REINFORCE
    loss. The per-step weights are ``δ_t = A_t − A_{t+1}`` (``A`` after the episode's
    end is 0), the "rewards" whose reward-to-go is our advantage ``A_t`` — so DiCE's
    first-order gradient is *exactly* REINFORCE's with the same baseline and
    normalisation, and all its higher-order terms are the unbiased DiCE ones (ProMP's
    code instead weights the box with discounted rewards minus a fitted per-step reward
    baseline). Here too ``⊥x`` is the value at the sampling policy, making
    ``□ = Π_{t'≤t} π_θ/π_old`` the per-decision importance weight away from it.

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
from typing import Literal, get_args

import torch
from torch.distributions import Categorical, Distribution, Independent, Normal

from maml_rl.agents.policies import Params, Policy, stack_params
from maml_rl.baseline import compute_advantages
from maml_rl.batch import EpisodeBatch
from maml_rl.validation import Validated, bounded

__all__ = [
    "INNER_OBJECTIVES",
    "InnerLoop",
    "InnerObjective",
    "InnerStep",
    "MAMLConfig",
    "TaskSamples",
    "adapt_chain",
    "check_inner_objective",
    "check_meta_batches",
    "detach_distribution",
    "distribution_like",
    "distribution_tensors",
    "inner_losses",
    "inner_objective_losses",
    "inner_step",
    "stack_for_tasks",
]

InnerObjective = Literal["reinforce", "dice", "lvc"]
#: The inner objectives (see the module docstring).
INNER_OBJECTIVES: tuple[str, ...] = get_args(InnerObjective)


@dataclasses.dataclass(frozen=True)
class MAMLConfig(Validated):
    """The meta-learning loop shared by every agent."""

    meta_batch_size: int = bounded(20, ge=1)
    """Tasks sampled per meta-iteration."""

    fast_batch_size: int = bounded(20, ge=1)
    """Episodes per task for each inner step and for the post-adaptation (validation) batch."""

    num_adapt_steps: int = bounded(1, ge=1)
    """Inner policy-gradient steps per task."""

    fast_lr: float = bounded(0.1, gt=0.0)
    """Inner-step learning rate α (the MAML paper: 0.1)."""

    first_order: bool = False
    """Drop the second-order terms (no graph through the inner step): first-order MAML."""

    gamma: float = bounded(0.99, ge=0.0, le=1.0)
    """Discount factor."""

    gae_lambda: float = bounded(1.0, ge=0.0, le=1.0)
    """GAE λ (1.0: Monte-Carlo returns minus the baseline, as in the MAML paper)."""

    normalize_advantages: bool = True
    """Normalise the advantages of each task to zero mean, unit std (pytorch-maml-rl does)."""

    inner_objective: InnerObjective = "reinforce"
    """Inner loss: ``reinforce`` (the MAML paper), ``lvc`` (ProMP's low-variance curvature) or
    ``dice`` (DiCE). Same inner gradient at the sampling policy, different meta-gradient
    curvature (see ``maml_rl.agents.maml``)."""


def check_inner_objective(objective: str) -> InnerObjective:
    """``objective`` if it names an inner objective.

    Raises:
        ValueError: naming the valid objectives.
    """
    if objective not in INNER_OBJECTIVES:
        raise ValueError(
            f"inner_objective must be one of {', '.join(INNER_OBJECTIVES)}, got {objective!r}"
        )
    return objective  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class TaskSamples:
    """An :class:`EpisodeBatch` flattened per task, with its advantages, for PG losses.

    ``M = T · E`` samples per task, time-major: sample ``t · E + e`` is step ``t`` of
    episode ``e``. Padded steps carry weight 0 and advantage 0.

    Attributes:
        observations: ``[N, M, obs_dim]``.
        actions: ``[N, M, act_dim]`` (continuous) or ``[N, M]`` (discrete).
        advantages: ``[N, M]``, from :func:`~maml_rl.baseline.compute_advantages`.
        weights: ``[N, M]``, ``mask / (valid steps of the task)``: a per-task masked
            mean of ``x`` is ``(weights * x).sum(1)``.
        episodes_per_task: ``E`` (DiCE needs the episodes' time axis back).
    """

    observations: torch.Tensor
    actions: torch.Tensor
    advantages: torch.Tensor
    weights: torch.Tensor
    episodes_per_task: int

    @property
    def num_tasks(self) -> int:
        return int(self.observations.shape[0])

    def head(self, k: int) -> TaskSamples:
        """The samples of the first ``k`` tasks."""
        return TaskSamples(
            self.observations[:k],
            self.actions[:k],
            self.advantages[:k],
            self.weights[:k],
            self.episodes_per_task,
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
        return cls(obs, actions, adv.reshape(n, t * e), weights, e)


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


def inner_objective_losses(
    log_probs: torch.Tensor,
    samples: TaskSamples,
    objective: InnerObjective = "reinforce",
    old_log_probs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-task inner losses from the log-probabilities of the sampled actions.

    Args:
        log_probs: ``[N, M]`` log-probabilities under the pre-update policy being adapted
            (carrying the graph to its parameters).
        samples: the task samples.
        objective: ``"reinforce"``, ``"lvc"`` or ``"dice"`` (see the module docstring).
        old_log_probs: ``[N, M]`` log-probabilities under the policy that sampled the
            episodes (a constant). ``None``: the current ones, detached — right whenever
            the loss is taken at the sampling policy. Unused by ``reinforce``.

    Returns:
        ``[N]`` losses.
    """
    if objective == "reinforce":
        return -(log_probs * samples.advantages * samples.weights).sum(dim=1)
    old = log_probs.detach() if old_log_probs is None else old_log_probs
    if objective == "lvc":
        ratio = torch.exp(log_probs - old)
        return -(ratio * samples.advantages * samples.weights).sum(dim=1)
    if objective != "dice":
        check_inner_objective(objective)
    n, m = log_probs.shape
    e = samples.episodes_per_task
    valid = (samples.weights > 0).view(n, m // e, e)
    # The cumulative log-ratio of each step's causal past, summed as a difference (not
    # as a difference of two long sums, whose rounding would not cancel in float32).
    log_ratio = torch.where(valid, (log_probs - old).view(n, m // e, e), 0.0)
    magic_box = torch.exp(torch.cumsum(log_ratio, dim=1))
    # δ_t = A_t − A_{t+1}: the reward-to-go of δ from step t is A_t.
    adv = samples.advantages.view(n, m // e, e) * valid
    next_adv = torch.cat([adv[:, 1:], torch.zeros_like(adv[:, :1])], dim=1)
    weights = samples.weights.view(n, m // e, e)
    return -(magic_box * (adv - next_adv) * weights).sum(dim=(1, 2))


def inner_losses(
    policy: Policy,
    params: Mapping[str, torch.Tensor],
    samples: TaskSamples,
    *,
    objective: InnerObjective = "reinforce",
    old_log_probs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-task inner losses of the stacked ``params`` (REINFORCE by default).

    Args:
        policy: the policy.
        params: stacked ``[N, ...]`` parameters.
        samples: the task samples.
        objective: the inner objective.
        old_log_probs: see :func:`inner_objective_losses`.

    Returns:
        ``[N]`` losses.
    """
    log_probs = policy(samples.observations, params).log_prob(samples.actions)
    return inner_objective_losses(log_probs, samples, objective, old_log_probs)


@dataclasses.dataclass(frozen=True)
class InnerStep:
    """One adaptation step ``θ_out = θ_in − α g``, with what a meta-learner reuses.

    Attributes:
        params_in: stacked ``[N, ...]`` parameters the step started from.
        grads: stacked per-task gradients ``g_i = ∇L_i(θ_in)``; with a second-order
            step they carry the graph of the gradient (for Hessian-vector products).
        params_out: stacked adapted parameters.
        losses: ``[N]`` inner losses at ``params_in`` (detached).
        dist: the action distribution of ``params_in`` on the step's observations
            (``[N, M]`` batch shape); differentiable w.r.t. ``params_in`` when the step
            keeps its graph, detached otherwise.
        log_probs: ``[N, M]`` ``dist.log_prob`` of the sampled actions (same graph rule).
    """

    params_in: Params
    grads: Params
    params_out: Params
    losses: torch.Tensor
    dist: Distribution
    log_probs: torch.Tensor


def inner_step(
    policy: Policy,
    params: Mapping[str, torch.Tensor],
    samples: TaskSamples,
    fast_lr: float,
    *,
    second_order: bool,
    keep_graph: bool,
    objective: InnerObjective = "reinforce",
    old_log_probs: torch.Tensor | None = None,
) -> InnerStep:
    """One inner policy-gradient step for all tasks at once.

    Args:
        policy: the policy.
        params: unstacked ``θ`` (shared by every task) or stacked ``[N, ...]``.
        samples: the tasks' training samples.
        fast_lr: inner step size ``α``.
        second_order: build the gradient with ``create_graph=True`` so that
            ``params_out`` is differentiable to second order w.r.t. ``params``.
        keep_graph: if False, ``params_out`` is detached (for sampling); if True it
            depends on ``params`` (through ``−α g`` too when ``second_order``).
        objective: the inner objective (see the module docstring).
        old_log_probs: ``[N, M]`` log-probabilities of the sampled actions under the
            policy that sampled them, for ``lvc``/``dice`` away from that policy
            (``None``: the step is taken at the sampling policy).

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
        dist = policy(samples.observations, stacked)
        log_probs = dist.log_prob(samples.actions)
        losses = inner_objective_losses(log_probs, samples, objective, old_log_probs)
        # Tasks are independent, so d(Σ_i L_i)/dθ_i = ∇L_i: one call, all tasks.
        grads = torch.autograd.grad(
            losses.sum(), list(stacked.values()), create_graph=create_graph,
            retain_graph=keep_graph,
        )  # fmt: skip
        grad_dict = dict(zip(stacked, grads, strict=True))
        out = {k: stacked[k] - fast_lr * grad_dict[k] for k in stacked}
    if not keep_graph:
        out = {k: v.detach() for k, v in out.items()}
        dist, log_probs = detach_distribution(dist), log_probs.detach()
    return InnerStep(stacked, grad_dict, out, losses.detach(), dist, log_probs)


def adapt_chain(
    policy: Policy,
    theta: Mapping[str, torch.Tensor],
    train: Sequence[TaskSamples],
    fast_lr: float,
    *,
    second_order: bool,
    keep_graph: bool,
    objective: InnerObjective = "reinforce",
    old_log_probs: Sequence[torch.Tensor] | None = None,
) -> list[InnerStep]:
    """``len(train)`` inner steps from ``theta``, step ``k`` on ``train[k]``.

    Args:
        policy: the policy.
        theta: unstacked (or stacked) parameters to start from.
        train: the training samples of each inner step.
        fast_lr: inner step size ``α``.
        second_order: see :func:`inner_step`.
        keep_graph: see :func:`inner_step`.
        objective: the inner objective.
        old_log_probs: per step, the sampling policy's ``[N, M]`` log-probabilities
            (``None``: every step is at its sampling policy).

    Returns:
        The :class:`InnerStep` of each step; ``[-1].params_out`` is the adapted ``θ'``.
    """
    if old_log_probs is not None and len(old_log_probs) != len(train):
        raise ValueError(
            f"need one old log-probability tensor per inner step ({len(train)}), "
            f"got {len(old_log_probs)}"
        )
    steps: list[InnerStep] = []
    params: Mapping[str, torch.Tensor] = theta
    for k, samples in enumerate(train):
        step = inner_step(
            policy, params, samples, fast_lr, second_order=second_order,
            keep_graph=keep_graph, objective=objective,
            old_log_probs=None if old_log_probs is None else old_log_probs[k],
        )  # fmt: skip
        steps.append(step)
        params = step.params_out
    return steps


def check_meta_batches(
    train_batches: Sequence[EpisodeBatch], valid: EpisodeBatch, num_adapt_steps: int
) -> None:
    """Check the batches of a meta-update: one train batch per inner step, same tasks.

    Raises:
        ValueError: saying which rule was broken and what was given.
    """
    if isinstance(train_batches, EpisodeBatch):
        raise ValueError("train_batches must be a list of EpisodeBatch (one per inner step)")
    if len(train_batches) != num_adapt_steps:
        raise ValueError(
            f"step needs one train batch per inner step (num_adapt_steps="
            f"{num_adapt_steps}), got {len(train_batches)}"
        )
    counts = {b.num_tasks for b in train_batches} | {valid.num_tasks}
    if len(counts) != 1:
        raise ValueError(f"train and valid batches must have the same task count, got {counts}")


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


class InnerLoop:
    """The inner-loop half shared by every meta-learner (MAML-TRPO, MAML-PPO).

    Holds the policy (moved to ``device``, where the meta-update runs) and the loop's
    settings, ``maml`` (their one home; the attributes below read them), and gives the
    batch preparation and the (autograd) adaptation.

    Args:
        policy: the policy whose parameters are the meta-parameters ``θ``.
        maml: the inner loop's settings (``fast_lr``, ``num_adapt_steps``, ...).
        device: a torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
    """

    def __init__(self, policy: Policy, maml: MAMLConfig, device: str | torch.device) -> None:
        self.maml = maml
        self.device = torch.device(device)
        self.policy = policy.to(self.device)

    def samples(self, batch: EpisodeBatch) -> TaskSamples:
        """The batch on the learner's device, with advantages (baseline fitted here)."""
        dtype = next(self.policy.parameters()).dtype
        return TaskSamples.from_batch(
            batch, self.maml.gamma, self.maml.gae_lambda, device=self.device, dtype=dtype,
            normalize=self.maml.normalize_advantages,
        )  # fmt: skip

    def adapt(
        self,
        params: Mapping[str, torch.Tensor],
        batch: EpisodeBatch,
        *,
        create_graph: bool = False,
    ) -> Params:
        """One inner policy-gradient step for every task of ``batch``.

        Args:
            params: ``θ`` (unstacked, shared by all tasks) or stacked ``[N, ...]``
                parameters from a previous step.
            batch: episodes sampled with ``params``, ``N`` tasks.
            create_graph: keep the result differentiable w.r.t. ``params`` (to second
                order unless ``first_order``); False returns detached parameters, for
                sampling.

        Returns:
            Stacked adapted parameters ``[N, ...]`` on the learner's device.
        """
        params = {k: v.to(self.device) for k, v in params.items()}
        return self._inner_step(params, batch, create_graph)

    def _inner_step(
        self, params: Mapping[str, torch.Tensor], batch: EpisodeBatch, create_graph: bool
    ) -> Params:
        """One autograd inner step of every task of ``batch`` from ``params``."""
        step = inner_step(
            self.policy, params, self.samples(batch), self.maml.fast_lr,
            second_order=not self.maml.first_order, keep_graph=create_graph,
            objective=self.maml.inner_objective,
        )  # fmt: skip
        return step.params_out

    def _adapt_chain(
        self,
        theta: Mapping[str, torch.Tensor],
        train: Sequence[TaskSamples],
        keep_graph: bool,
        old_log_probs: Sequence[torch.Tensor] | None = None,
    ) -> list[InnerStep]:
        """The whole adaptation from ``theta``, one inner step per training batch."""
        return adapt_chain(
            self.policy, theta, train, self.maml.fast_lr, second_order=not self.maml.first_order,
            keep_graph=keep_graph, objective=self.maml.inner_objective, old_log_probs=old_log_probs,
        )  # fmt: skip
