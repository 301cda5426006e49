"""MAML-PPO, ProMP and the inner objectives (maml_rl.agents.maml_ppo, maml_rl.agents.maml).

The invariants: the clipped surrogate and its gradient; every PPO epoch re-adapts from
the current θ; the three inner objectives share the inner gradient at the sampling
policy and differ in exactly the curvature terms theory says; MAML-TRPO's line search
evaluates the function whose gradient it used; ProMP's KL penalty and early stopping;
the agent's state survives a checkpoint; presets and the CLI.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeAlias

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from maml_rl.agents.maml import (
    INNER_OBJECTIVES,
    TaskSamples,
    inner_losses,
    inner_objective_losses,
    inner_step,
)
from maml_rl.agents.maml_ppo import MAMLPPO, clipped_surrogate, update_kl_coefficient
from maml_rl.agents.maml_trpo import MAMLTRPO
from maml_rl.agents.policies import CategoricalMLPPolicy, GaussianMLPPolicy, stack_params
from maml_rl.batch import EpisodeBatch
from maml_rl.config import load_config
from maml_rl.envs.navigation import Navigation2DEnv
from maml_rl.factories import build_agent
from maml_rl.logger import InMemoryLogger
from maml_rl.optim import flatten as _flat
from maml_rl.optim import unflatten as _unflat
from maml_rl.samplers import make_sampler
from maml_rl.trainer import Trainer

from conftest import CONFIGS, make_policy, ppo_agent, run_cli, trpo_agent
from conftest import TINY as BASE_TINY

N, E, T = 3, 4, 6
ENV = "MetaRL/Navigation2D-v0"
FAMILIES = ("navigation2d", "halfcheetah_vel", "halfcheetah_dir", "ant_vel", "ant_dir", "ant_goal")
Agent: TypeAlias = MAMLPPO | MAMLTRPO


def make_agent(policy: GaussianMLPPolicy | CategoricalMLPPolicy, **kwargs: object) -> MAMLPPO:
    defaults: dict[str, object] = {"fast_lr": 0.5, "gamma": 0.95, "meta_lr": 0.01}
    return ppo_agent(policy, **{**defaults, **kwargs})


def meta_batches(
    agent: Agent, num_steps: int = 1, seed: int = 0
) -> tuple[list[EpisodeBatch], EpisodeBatch]:
    """Train batches and a valid batch, sampled by the real sampler as the trainer does."""
    policy = agent.policy
    tasks = Navigation2DEnv.sample_tasks(N, np.random.default_rng(seed))
    params: Mapping[str, torch.Tensor] = {k: v.detach() for k, v in policy.params().items()}
    train = []
    with make_sampler(ENV, policy, backend="sync", max_episode_steps=T) as sampler:
        for k in range(num_steps):
            batch = sampler.sample(tasks, params, E, seed=100 * seed + k)
            train.append(batch)
            params = agent.adapt(params, batch)
        valid = sampler.sample(tasks, params, E, seed=100 * seed + 99)
    return train, valid


def spy_on_adam(agent: MAMLPPO) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(θ, gradient)`` (flat) as Adam sees them, recorded before every Adam step."""
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    params = list(agent.policy.parameters())

    def hook(*_: object) -> None:
        assert all(p.grad is not None for p in params)
        calls.append((_flat([p.detach() for p in params]), _flat([p.grad for p in params])))

    agent.optimizer.register_step_pre_hook(hook)
    return calls


# -- the clipped surrogate ------------------------------------------------------------------


def test_clipped_surrogate_value_gradient_and_clip_fraction_on_a_hand_made_batch() -> None:
    eps = 0.2
    # Ratio inside, above and below the clip range, for positive and negative advantages.
    ratio = torch.tensor([[1.1, 1.5, 0.5], [1.5, 0.5, 0.9]], dtype=torch.float64)
    adv = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]], dtype=torch.float64)
    weights = torch.full_like(ratio, 1.0 / 3.0)
    log_probs = ratio.log().requires_grad_()
    old = torch.zeros_like(ratio)
    loss, r, clip_fraction = clipped_surrogate(log_probs, old, adv, weights, eps)
    # Pessimistic: an improvement beyond the range is capped (1.5·1 → 1.2, 0.5·(−1) → 0.8·(−1)),
    # a deterioration is not (0.5·1, 1.5·(−1)).
    objective = torch.tensor([[1.1, 1.2, 0.5], [-1.5, -0.8, -0.9]], dtype=torch.float64)
    assert loss.item() == pytest.approx(-(objective.mean(1)).mean().item(), rel=1e-12)
    torch.testing.assert_close(r, ratio)
    assert clip_fraction.item() == pytest.approx(4 / 6)
    (grad,) = torch.autograd.grad(loss, log_probs)
    # d/dlog r of r·A is r·A where the unclipped term is the minimum, else 0.
    active = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(grad, -active * ratio * adv * weights / 2)


# -- the inner objectives -------------------------------------------------------------------


def real_samples(agent: Agent) -> TaskSamples:
    (batch,), _ = meta_batches(agent)
    return agent.samples(batch)


def test_inner_objectives_take_the_same_step_at_the_sampling_policy() -> None:
    policy = make_policy()
    samples = real_samples(make_agent(policy))
    theta = policy.params()
    ref = inner_step(policy, theta, samples, 0.5, second_order=True, keep_graph=False)
    explicit_old = ref.log_probs  # the sampling policy's log-probs, given explicitly
    for objective in INNER_OBJECTIVES:
        for old in (None, explicit_old):
            step = inner_step(
                policy,
                theta,
                samples,
                0.5,
                second_order=True,
                keep_graph=False,
                objective=objective,
                old_log_probs=old,
            )
            for k in theta:
                torch.testing.assert_close(
                    step.params_out[k], ref.params_out[k], rtol=1e-10, atol=1e-12
                )


def test_lvc_away_from_the_sampling_policy_is_importance_weighted_reinforce() -> None:
    policy = make_policy()
    samples = real_samples(make_agent(policy))
    theta = stack_params({k: v.detach() for k, v in policy.params().items()}, N)
    with torch.no_grad():
        old = policy(samples.observations, theta).log_prob(samples.actions)
    g = torch.Generator().manual_seed(0)
    moved = {
        k: (v + 0.05 * torch.randn(v.shape, generator=g, dtype=v.dtype)).requires_grad_()
        for k, v in theta.items()
    }
    lvc = inner_losses(policy, moved, samples, objective="lvc", old_log_probs=old).sum()
    log_probs = policy(samples.observations, moved).log_prob(samples.actions)
    weighted = -(
        torch.exp(log_probs - old).detach() * log_probs * samples.advantages * samples.weights
    ).sum()
    grad_lvc = _flat(torch.autograd.grad(lvc, list(moved.values())))
    torch.testing.assert_close(grad_lvc, _flat(torch.autograd.grad(weighted, list(moved.values()))))
    # ... and not REINFORCE's gradient there.
    reinforce = inner_losses(policy, moved, samples).sum()
    grad_reinforce = _flat(torch.autograd.grad(reinforce, list(moved.values())))
    assert (grad_lvc - grad_reinforce).norm() > 1e-3 * grad_reinforce.norm()


def hand_made_samples(advantages: torch.Tensor, seed: int = 0) -> TaskSamples:
    """One task, two episodes of up to 3 steps; episode 1 ends after 2 (padded)."""
    g = torch.Generator().manual_seed(seed)
    t, e = 3, 2
    mask = torch.ones(t, e, dtype=torch.float64)
    mask[2, 1] = 0.0
    obs = torch.randn(t, e, 2, generator=g, dtype=torch.float64) * mask[..., None]
    actions = torch.randn(t, e, 2, generator=g, dtype=torch.float64) * mask[..., None]
    weights = mask / mask.sum()
    return TaskSamples(
        obs.reshape(1, t * e, 2),
        actions.reshape(1, t * e, 2),
        (advantages * mask).reshape(1, t * e),
        weights.reshape(1, t * e),
        e,
    )


def _hvp_and_grad(
    loss_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    theta: dict[str, torch.Tensor],
    v: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    loss = loss_fn(theta)
    grads = torch.autograd.grad(loss, list(theta.values()), create_graph=True)
    hv = torch.autograd.grad(_flat(grads) @ v, list(theta.values()))
    return loss.detach(), _flat(grads).detach(), _flat(hv)


@pytest.mark.parametrize("objective", ["lvc", "dice"])
def test_inner_objectives_differ_from_reinforce_by_exactly_the_theoretical_curvature(
    objective: str,
) -> None:
    """At the sampling policy, with ``g_t = ∇log π(a_t|s_t)`` and ``G_t = Σ_{t'≤t} g_t'``:

    * ``∇L`` is the same for all three objectives;
    * ``∇²L_lvc − ∇²L_reinforce = −Σ_t w A_t g_t g_tᵀ`` (ProMP's LVC term);
    * ``∇²L_dice − ∇²L_reinforce = −Σ_t w δ_t G_t G_tᵀ``, ``δ_t = A_t − A_{t+1}``.
    """
    policy = make_policy()
    adv = torch.tensor([[0.7, -1.3], [1.1, 0.4], [-0.6, 0.0]], dtype=torch.float64)
    samples = hand_made_samples(adv)
    theta = {
        k: v.detach().clone().unsqueeze(0).requires_grad_() for k, v in policy.params().items()
    }
    size = sum(p.numel() for p in theta.values())
    v = torch.randn(size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def loss_fn(objective: str) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
        return lambda th: inner_losses(policy, th, samples, objective=objective).sum()

    _, grad_ref, hv_ref = _hvp_and_grad(loss_fn("reinforce"), theta, v)
    _, grad, hv = _hvp_and_grad(loss_fn(objective), theta, v)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-12)

    # Per-step score vectors g_t, by plain autograd one sample at a time.
    log_probs = policy(samples.observations, theta).log_prob(samples.actions)[0]
    scores = torch.stack(
        [
            _flat(torch.autograd.grad(lp, list(theta.values()), retain_graph=True))
            for lp in log_probs
        ]
    ).view(3, 2, size)  # [T, E, P]
    w = samples.weights.view(3, 2)
    a = samples.advantages.view(3, 2)
    valid = w > 0
    if objective == "lvc":
        coef, vectors = a, scores
    else:
        coef = a - torch.cat([a[1:], torch.zeros_like(a[:1])])
        vectors = torch.cumsum(scores * valid[..., None], dim=0)
    expected = -torch.einsum("te,tep,te->p", w * coef, vectors, vectors @ v)
    torch.testing.assert_close(hv - hv_ref, expected, rtol=1e-9, atol=1e-12)
    assert expected.norm() > 1e-3 * hv_ref.norm()  # the term is not negligible here


def test_dice_is_the_textbook_magic_box_objective_when_advantages_are_rewards_to_go() -> None:
    """With ``A_t = Σ_{t'≥t} r_t'`` (γ = 1, no baseline), our DiCE loss is Foerster et
    al.'s ``−Σ_t □(Σ_{t'≤t} log π_t') r_t`` — value, gradient and curvature."""
    policy = make_policy()
    rewards = torch.tensor([[0.3, -1.0], [1.2, 0.5], [-0.4, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    to_go = torch.flip(torch.cumsum(torch.flip(rewards * mask, [0]), 0), [0])
    samples = hand_made_samples(to_go)
    theta = {
        k: v.detach().clone().unsqueeze(0).requires_grad_() for k, v in policy.params().items()
    }
    v = torch.randn(
        sum(p.numel() for p in theta.values()),
        generator=torch.Generator().manual_seed(2),
        dtype=torch.float64,
    )

    def textbook(th: dict[str, torch.Tensor]) -> torch.Tensor:
        lp = policy(samples.observations, th).log_prob(samples.actions).view(3, 2) * mask
        tau = torch.cumsum(lp, 0)
        magic_box = torch.exp(tau - tau.detach())
        return -(magic_box * rewards * samples.weights.view(3, 2)).sum()

    def ours(th: dict[str, torch.Tensor]) -> torch.Tensor:
        return inner_losses(policy, th, samples, objective="dice").sum()

    for a, b in zip(_hvp_and_grad(ours, theta, v), _hvp_and_grad(textbook, theta, v), strict=True):
        torch.testing.assert_close(a, b)


def test_dice_weights_ignore_padding_and_reject_unknown_objectives() -> None:
    samples = hand_made_samples(torch.ones(3, 2, dtype=torch.float64))
    log_probs = torch.zeros(1, 6, dtype=torch.float64)
    # Padding of episode 1 (step 2) must not leak into its last valid step's weight δ.
    poisoned = dataclasses.replace(samples, advantages=samples.advantages.clone())
    poisoned.advantages[0, 5] = 100.0
    a = inner_objective_losses(log_probs, samples, "dice")
    b = inner_objective_losses(log_probs, poisoned, "dice")
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="inner_objective must be one of reinforce, dice, lvc"):
        inner_objective_losses(log_probs, samples, "maml")


def test_meta_gradients_differ_by_inner_objective_unless_first_order() -> None:
    """The curvature terms differ, so do the meta-gradients; first-order MAML keeps only
    the (shared) inner gradient value, so its meta-gradients agree."""
    policy = make_policy()
    train, valid = meta_batches(make_agent(policy))
    for first_order in (False, True):
        grads = {}
        for objective in INNER_OBJECTIVES:
            agent = make_agent(
                make_policy(), ppo_epochs=1, inner_objective=objective, first_order=first_order
            )
            calls = spy_on_adam(agent)
            agent.step(train, valid)
            grads[objective] = calls[0][1]
        ref = grads["reinforce"]
        for objective in ("lvc", "dice"):
            if first_order:
                torch.testing.assert_close(grads[objective], ref, rtol=1e-9, atol=1e-12)
            else:
                assert (grads[objective] - ref).norm() > 1e-3 * ref.norm()
        if not first_order:
            assert (grads["lvc"] - grads["dice"]).norm() > 1e-3 * ref.norm()


@pytest.mark.parametrize("objective", ["lvc", "dice"])
def test_trpo_line_search_evaluates_the_function_whose_gradient_it_used(objective: str) -> None:
    policy = make_policy()
    agent = trpo_agent(policy, fast_lr=0.5, gamma=0.95, inner_objective=objective)
    train_b, valid_b = meta_batches(agent)
    train, valid = [agent.samples(b) for b in train_b], agent.samples(valid_b)
    lin = agent.linearizer.linearize(train, valid)
    theta = {k: v.detach() for k, v in policy.named_parameters()}
    direction = torch.randn(
        lin.grad.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    eps = 1e-6

    def loss_at(sign: float) -> float:
        shifted = _unflat(_flat(list(theta.values())) + sign * eps * direction, theta)
        return agent.linearizer.evaluate(shifted, train, valid, lin)[0]

    fd = (loss_at(1.0) - loss_at(-1.0)) / (2 * eps)
    assert lin.grad @ direction == pytest.approx(fd, rel=1e-5, abs=1e-9)
    metrics = agent.step(train_b, valid_b)
    assert metrics["train/step_accepted"] == 1.0 and 0 < metrics["train/kl"] <= agent.trpo.max_kl


@pytest.mark.parametrize("objective", ["lvc", "dice"])
def test_trpo_gauss_newton_products_equal_exact_ones_for_each_inner_objective(
    objective: str,
) -> None:
    policy = make_policy()
    gn = trpo_agent(policy, fast_lr=0.5, gamma=0.95, inner_objective=objective)
    exact = trpo_agent(policy, fast_lr=0.5, gamma=0.95, inner_objective=objective, hvp="exact")
    train_b, valid_b = meta_batches(gn)
    train, valid = [gn.samples(b) for b in train_b], gn.samples(valid_b)
    v = torch.randn(
        sum(p.numel() for p in policy.parameters()),
        generator=torch.Generator().manual_seed(3),
        dtype=torch.float64,
    )
    torch.testing.assert_close(
        gn.linearizer.linearize(train, valid).hvp(v),
        exact.linearizer.linearize(train, valid).hvp(v),
        rtol=1e-9,
        atol=1e-12,
    )


# -- the PPO update -------------------------------------------------------------------------


def reference_meta_gradient(
    policy: GaussianMLPPolicy,
    theta: torch.Tensor,
    train: Sequence[TaskSamples],
    valid: TaskSamples,
    *,
    fast_lr: float,
    clip_range: float,
    objective: str,
    old: tuple[list[torch.Tensor], torch.Tensor] | None,
) -> tuple[torch.Tensor, tuple[list[torch.Tensor], torch.Tensor]]:
    """The PPO meta-gradient at flat ``theta``, one task at a time with plain autograd.

    ``old``: the sampling policies' log-probabilities ``(per inner step, valid)``;
    ``None``: ``theta`` is the sampling point (they are recorded and returned).
    """
    like = dict(policy.named_parameters())
    params0 = {k: v.clone().requires_grad_() for k, v in _unflat(theta, like).items()}
    inner_lps: list[list[torch.Tensor]] = [[] for _ in train]
    valid_lps = []
    total = torch.zeros((), dtype=theta.dtype)
    for i in range(valid.num_tasks):
        params = params0
        for k, tr in enumerate(train):
            lp = policy(tr.observations[i], params).log_prob(tr.actions[i])
            inner_lps[k].append(lp.detach())
            old_lp = lp.detach() if old is None else old[0][k][i]
            factor = lp if objective == "reinforce" else torch.exp(lp - old_lp)
            inner = -(factor * tr.advantages[i] * tr.weights[i]).sum()
            grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
            params = {
                name: p - fast_lr * g for (name, p), g in zip(params.items(), grads, strict=True)
            }
        lp = policy(valid.observations[i], params).log_prob(valid.actions[i])
        valid_lps.append(lp.detach())
        ratio = torch.exp(lp - (lp.detach() if old is None else old[1][i]))
        adv = valid.advantages[i]
        surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip_range, 1 + clip_range) * adv)
        total = total - (surrogate * valid.weights[i]).sum() / valid.num_tasks
    grad = _flat(torch.autograd.grad(total, list(params0.values())))
    recorded = ([torch.stack(lps) for lps in inner_lps], torch.stack(valid_lps))
    return grad, (recorded if old is None else old)


@pytest.mark.parametrize(("objective", "num_steps"), [("reinforce", 1), ("lvc", 2)])
def test_every_epoch_readapts_from_the_current_theta(objective: str, num_steps: int) -> None:
    policy = make_policy()
    agent = make_agent(
        policy, ppo_epochs=3, num_adapt_steps=num_steps, inner_objective=objective, clip_range=0.2
    )
    train_b, valid_b = meta_batches(agent, num_steps)
    train, valid = [agent.samples(b) for b in train_b], agent.samples(valid_b)
    calls = spy_on_adam(agent)
    metrics = agent.step(train_b, valid_b)
    assert metrics["train/ppo_epochs_run"] == 3.0 and len(calls) == 3

    old = None
    for theta, grad in calls:
        ref, old = reference_meta_gradient(
            policy,
            theta,
            train,
            valid,
            fast_lr=agent.maml.fast_lr,
            clip_range=0.2,
            objective=objective,
            old=old,
        )
        torch.testing.assert_close(grad, ref, rtol=1e-8, atol=1e-12)
    # An adaptation cached from the first epoch would have given its gradient again.
    (_, g0), (theta1, g1) = calls[0], calls[1]
    assert not torch.equal(theta1, calls[0][0])
    assert (g1 - g0).norm() > 1e-3 * g0.norm()


def test_step_improves_the_surrogate_and_reports_its_metrics() -> None:
    policy = make_policy(torch.float32)
    agent = make_agent(policy, ppo_epochs=5, meta_lr=3e-3)
    train, valid = meta_batches(agent)
    before = [p.detach().clone() for p in policy.parameters()]
    metrics = agent.step(train, valid)
    assert metrics["train/surrogate_loss_after"] < metrics["train/surrogate_loss"]
    assert metrics["train/kl"] > 0 and metrics["train/step_norm"] > 0
    assert 0 <= metrics["train/clip_fraction"] <= 1
    assert metrics["train/ppo_epochs_run"] == 5.0
    assert "train/inner_kl_coef" not in metrics  # no penalty configured
    moved = math.sqrt(
        sum(
            float((p.detach() - b).pow(2).sum())
            for p, b in zip(policy.parameters(), before, strict=True)
        )
    )
    assert metrics["train/step_norm"] == pytest.approx(moved, rel=1e-5)
    assert all(math.isfinite(v) for v in metrics.values())


def test_target_kl_stops_the_epochs_early() -> None:
    policy = make_policy()
    train, valid = meta_batches(make_agent(policy))
    runs = {}
    for target in (None, 1e-12):
        agent = make_agent(make_policy(), ppo_epochs=4, target_kl=target)
        runs[target] = agent.step(train, valid)
    assert runs[None]["train/ppo_epochs_run"] == 4.0
    # The first epoch always steps (KL 0); the second finds KL > target and stops.
    assert runs[1e-12]["train/ppo_epochs_run"] == 1.0
    assert runs[1e-12]["train/kl"] > 1e-12


def test_linear_meta_lr_decay_reaches_zero_and_then_leaves_theta_alone() -> None:
    agent = make_agent(make_policy(), ppo_epochs=2, meta_lr=0.01, meta_lr_decay_iterations=2)
    train, valid = meta_batches(agent)
    params = agent.policy.parameters
    rates, moved = [], []
    for _ in range(3):
        before = _flat([p.detach().clone() for p in params()])
        rates.append(agent.step(train, valid)["train/meta_lr"])
        moved.append(bool((_flat([p.detach() for p in params()]) != before).any()))
    assert rates == pytest.approx([0.01, 0.005, 0.0])
    assert moved == [True, True, False]
    # The schedule's position travels with the state (and older states without it load).
    fresh = make_agent(make_policy(), meta_lr=0.01, meta_lr_decay_iterations=4)
    fresh.load_state_dict(agent.state_dict())
    assert fresh.updates == 3 and fresh.current_meta_lr() == pytest.approx(0.0025)
    legacy = {k: v for k, v in agent.state_dict().items() if k != "updates"}
    fresh.load_state_dict(legacy)
    assert fresh.updates == 0 and fresh.current_meta_lr() == pytest.approx(0.01)


def test_max_grad_norm_bounds_the_gradient_adam_sees() -> None:
    policy = make_policy()
    agent = make_agent(policy, ppo_epochs=2, max_grad_norm=1e-3)
    train, valid = meta_batches(agent)
    calls = spy_on_adam(agent)
    metrics = agent.step(train, valid)
    assert metrics["train/grad_norm"] > 1e-3  # reported before clipping
    assert all(g.norm().item() == pytest.approx(1e-3, rel=1e-6) for _, g in calls)


def test_inner_kl_penalty_is_inert_at_the_sampling_policy_and_restrains_later_epochs() -> None:
    train, valid = meta_batches(make_agent(make_policy()))
    params, metrics = {}, {}
    for epochs in (1, 4):
        for eta in (0.0, 100.0):
            agent = make_agent(
                make_policy(), ppo_epochs=epochs, inner_kl_penalty=eta, inner_objective="lvc"
            )
            metrics[epochs, eta] = agent.step(train, valid)
            params[epochs, eta] = _flat([p.detach() for p in agent.policy.parameters()])
    # Epoch 0: the KL to the sampling policy is 0 with zero gradient.
    torch.testing.assert_close(params[1, 0.0], params[1, 100.0])
    assert metrics[1, 100.0]["train/inner_kl_coef"] == 100.0
    # Later epochs: the penalty keeps the pre-update policy closer to the sampling one.
    assert metrics[4, 100.0]["train/inner_kl"] < 0.8 * metrics[4, 0.0]["train/inner_kl"]


def test_adaptive_inner_kl_coefficient_follows_prompts_rule() -> None:
    assert update_kl_coefficient(1.0, 0.001, 0.01) == 0.5  # below target / 1.5: halve
    assert update_kl_coefficient(1.0, 0.1, 0.01) == 2.0  # above 1.5 · target: double
    assert update_kl_coefficient(1.0, 0.01, 0.01) == 1.0
    # A tiny meta-step: both inner steps' KL far below target / 1.5, both coefficients halve.
    agent = make_agent(
        make_policy(),
        num_adapt_steps=2,
        inner_kl_penalty=1e-3,
        meta_lr=1e-5,
        adaptive_inner_kl=True,
        inner_kl_target=1e-2,
        inner_objective="lvc",
    )
    train, valid = meta_batches(agent, num_steps=2)
    metrics = agent.step(train, valid)
    assert metrics["train/inner_kl_coef"] == 1e-3  # the coefficient this step used
    assert 0 < metrics["train/inner_kl"] < 1e-2 / 1.5 / 2
    assert agent.inner_kl_coefs == [5e-4, 5e-4]
    # A large one: KL above 1.5 · target, the coefficient doubles.
    agent = make_agent(
        make_policy(),
        inner_kl_penalty=1e-3,
        meta_lr=3e-2,
        adaptive_inner_kl=True,
        inner_kl_target=1e-2,
        inner_objective="lvc",
    )
    train, valid = meta_batches(agent)
    metrics = agent.step(train, valid)
    assert metrics["train/inner_kl"] > 1.5e-2
    assert agent.inner_kl_coefs == [2e-3]


def test_nonfinite_loss_takes_no_step() -> None:
    policy = make_policy(torch.float32, activation="relu")
    agent = make_agent(policy)
    train, valid = meta_batches(agent)
    # Huge observations: means of ~1e31, log-probabilities overflow, the ratio is NaN.
    broken = dataclasses.replace(valid, observations=valid.observations * 1e30)
    before = [p.detach().clone() for p in policy.parameters()]
    metrics = agent.step(train, broken)
    assert not math.isfinite(metrics["train/surrogate_loss"])
    assert metrics["train/ppo_epochs_run"] == 0.0 and metrics["train/step_norm"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters(), strict=True))


def test_categorical_policy_with_every_inner_objective_and_the_penalty() -> None:
    g = torch.Generator().manual_seed(0)

    def batch(seed: int) -> EpisodeBatch:
        g.manual_seed(seed)
        truncated = torch.zeros(N, T, E, dtype=torch.bool)
        truncated[:, -1] = True
        mask = torch.ones(N, T, E)
        mask[0, 3:, 1] = 0.0  # an episode that ended early
        terminated = torch.zeros_like(truncated)
        terminated[0, 2, 1] = True
        truncated[0, -1, 1] = False
        return EpisodeBatch(
            observations=torch.randn(N, T, E, 3, generator=g) * mask[..., None],
            actions=torch.randint(0, 4, (N, T, E), generator=g) * mask.long(),
            rewards=torch.randn(N, T, E, generator=g) * mask,
            log_probs=torch.zeros(N, T, E),
            terminated=terminated,
            truncated=truncated,
            mask=mask,
            final_observations=torch.randn(N, E, 3, generator=g),
            tasks=Navigation2DEnv.sample_tasks(N, np.random.default_rng(seed)),
        )

    for objective in INNER_OBJECTIVES:
        torch.manual_seed(0)
        policy = CategoricalMLPPolicy(3, 4, hidden_sizes=(8,), activation="tanh").double()
        agent = make_agent(policy, inner_objective=objective, inner_kl_penalty=1e-2)
        metrics = agent.step([batch(1)], batch(2))
        assert all(math.isfinite(v) for v in metrics.values()), (objective, metrics)
        assert metrics["train/ppo_epochs_run"] == 5.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clip_range": 0.0}, "clip_range must be > 0 and < 1"),
        ({"ppo_epochs": 0}, "ppo_epochs must be ≥ 1"),
        ({"meta_lr": -1.0}, "meta_lr must be > 0"),
        ({"meta_lr_decay_iterations": 0}, "meta_lr_decay_iterations must be ≥ 1"),
        ({"max_grad_norm": 0.0}, "max_grad_norm must be > 0"),
        ({"target_kl": 0.0}, "target_kl must be > 0"),
        ({"inner_kl_penalty": -1.0}, "inner_kl_penalty must be ≥ 0"),
        ({"adaptive_inner_kl": True}, r"adaptive_inner_kl only rescales the penalty"),
        ({"inner_objective": "reinforced"}, "inner_objective must be one of"),
    ],
)
def test_bad_hyperparameters_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_agent(make_policy(), **kwargs)


def test_step_validates_its_batches() -> None:
    agent = make_agent(make_policy(), num_adapt_steps=2)
    train, valid = meta_batches(agent, 2)
    with pytest.raises(ValueError, match="one train batch per inner step"):
        agent.step(train[:1], valid)
    with pytest.raises(ValueError, match="same task count"):
        agent.step(train, valid.task_slice([0, 1]))


# -- state, trainer, CLI, presets -----------------------------------------------------------

TINY = [*BASE_TINY, "ppo.ppo_epochs=2"]


def test_state_dict_rejects_foreign_states() -> None:
    agent = make_agent(make_policy())
    state = agent.state_dict()
    assert set(state) == {"policy", "optimizer", "inner_kl_coefs", "updates"}
    with pytest.raises(ValueError, match="exactly the keys"):
        agent.load_state_dict({"policy": state["policy"]})
    with pytest.raises(ValueError, match="2 inner-KL coefficients"):
        make_agent(make_policy()).load_state_dict({**state, "inner_kl_coefs": [1.0, 2.0]})


def test_resumed_ppo_run_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    """Adam's moments and the adaptive KL coefficient travel through the checkpoint: a run
    stopped after 2 iterations and resumed for a 3rd ends bit-identical to a straight run."""
    overrides = [
        *TINY,
        "agent=maml_ppo",
        "maml.inner_objective=lvc",
        "ppo.inner_kl_penalty=1.0e-3",
        "ppo.adaptive_inner_kl=true",
        "checkpoint_every=0",
    ]
    straight = load_config(None, [*overrides, "num_batches=3"])
    with Trainer(straight, tmp_path / "straight", console=False) as trainer:
        trainer.train()
        agent = trainer.agent
        assert isinstance(agent, MAMLPPO)
        final_state, coefs = agent.optimizer.state_dict(), list(agent.inner_kl_coefs)
        final = _flat([p.detach() for p in trainer.policy.parameters()])
    assert coefs != [1e-3]  # the adaptive rule did change it

    first = load_config(None, [*overrides, "num_batches=2"])
    Trainer(first, tmp_path / "resumed", console=False).train()
    resumed = Trainer.resume(tmp_path / "resumed", ["num_batches=3"], console=False)
    with resumed:
        resumed.train()
        agent = resumed.agent
        assert isinstance(agent, MAMLPPO)
        assert agent.inner_kl_coefs == coefs
        torch.testing.assert_close(
            _flat([p.detach() for p in resumed.policy.parameters()]), final, rtol=0, atol=0
        )
        for a, b in zip(
            agent.optimizer.state_dict()["state"].values(),
            final_state["state"].values(),
            strict=True,
        ):
            torch.testing.assert_close(a["exp_avg_sq"], b["exp_avg_sq"], rtol=0, atol=0)


def test_trainer_logs_the_ppo_metrics(tmp_path: Path) -> None:
    memory = InMemoryLogger()
    config = load_config(CONFIGS / "navigation2d_promp.yaml", [*TINY, "num_batches=2"])
    with Trainer(config, tmp_path / "run", console=False, loggers=[memory]) as trainer:
        trainer.train()
    steps = [step for step, _ in memory.records]
    assert steps == [2 * 2 * 5 * 2, 2 * 2 * 2 * 5 * 2]
    metrics = memory.records[-1][1]
    assert metrics["train/inner_kl_coef"] == 5e-4 and metrics["train/ppo_epochs_run"] == 2.0


COMMON_TAGS = {
    "rollout/return_pre_adapt",
    "rollout/return_post_adapt",
    "train/surrogate_loss",
    "train/kl",
    "train/inner_loss",
    "train/grad_norm",
    "time/update_s",
}
PPO_TAGS = {"train/clip_fraction", "train/ppo_epochs_run", "train/inner_kl", "train/step_norm"}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "tags"),
    [
        (["agent=maml_trpo"], COMMON_TAGS | {"train/line_search_steps"}),
        (["agent=maml_ppo"], COMMON_TAGS | PPO_TAGS),
        (["agent=maml_ppo", "maml.inner_objective=dice"], COMMON_TAGS | PPO_TAGS),
        (
            ["--config", str(CONFIGS / "navigation2d_promp.yaml")],
            COMMON_TAGS | PPO_TAGS | {"train/inner_kl_coef"},
        ),
    ],
    ids=["trpo", "ppo", "ppo-dice", "promp-preset"],
)
def test_two_iteration_cli_run_per_agent_writes_its_tensorboard_tags(
    tmp_path: Path, args: list[str], tags: set[str]
) -> None:
    proc = run_cli("train", "--logdir", str(tmp_path), "--num-batches", "2", *args, *TINY)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = tmp_path.iterdir()
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) >= tags
    assert [e.step for e in acc.Scalars("train/kl")] == [40, 80]


@pytest.mark.parametrize("kind", ["ppo", "promp"])
@pytest.mark.parametrize("family", FAMILIES)
def test_presets_load_and_build_their_agent(family: str, kind: str) -> None:
    config = load_config(CONFIGS / f"{family}_{kind}.yaml")
    assert config.agent == "maml_ppo" and config.num_batches == 500
    p = config.ppo
    # ProMP's outer settings in both (Navigation2D: a rate decayed over the run and the
    # epochs tuned here); ProMP's inner-loop changes only in the promp preset.
    nav = family == "navigation2d"
    rate = (5e-3, 500) if nav else (1e-3, None)
    epochs = 10 if nav else 5
    assert (p.clip_range, p.ppo_epochs, p.meta_lr, p.meta_lr_decay_iterations) == (
        0.3, epochs, *rate,
    )  # fmt: skip
    assert (p.max_grad_norm, p.target_kl, p.adaptive_inner_kl) == (None, None, False)
    promp = kind == "promp"
    assert config.maml.inner_objective == ("lvc" if promp else "reinforce")
    assert p.inner_kl_penalty == (5e-4 if promp else 0.0)
    # Any policy will do to build the agent (the family's own is built by the trainer).
    agent = build_agent(config, GaussianMLPPolicy(2, 2, (4,)), torch.device("cpu"))
    assert isinstance(agent, MAMLPPO)
    assert agent.maml.inner_objective == config.maml.inner_objective
    assert agent.inner_kl_coefs == [p.inner_kl_penalty]
    assert (agent.ppo.clip_range, agent.ppo.ppo_epochs) == (0.3, epochs)
    assert (agent.ppo.meta_lr, agent.ppo.meta_lr_decay_iterations) == rate


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ppo_step_on_cuda() -> None:
    policy = make_policy(torch.float32)
    train, valid = meta_batches(make_agent(policy))  # CPU rollouts
    agent = make_agent(policy, device="cuda", inner_objective="lvc", inner_kl_penalty=1e-3)
    metrics = agent.step(train, valid)
    assert all(math.isfinite(v) for v in metrics.values())
    assert all(p.is_cuda for p in agent.policy.parameters())
    other = make_agent(make_policy(torch.float32), device="cuda")
    other.load_state_dict(agent.state_dict())
    assert all(s["exp_avg"].is_cuda for s in other.optimizer.state_dict()["state"].values())


def test_config_rejects_an_adaptive_penalty_without_a_coefficient() -> None:
    with pytest.raises(ValueError, match=r"ppo\.inner_kl_penalty > 0"):
        load_config(None, ["agent=maml_ppo", "ppo.adaptive_inner_kl=true"])
    with pytest.raises(ValueError, match=r"maml\.inner_objective must be one of"):
        load_config(None, ["maml.inner_objective=lcv"])
