"""MAML inner loop and MAML-TRPO: the meta-learning invariants (maml_rl.agents)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from maml_rl.agents.linearizers import HVP_METHODS, AutogradLinearizer
from maml_rl.agents.linearizers_gaussian_mlp import GaussianMLPLinearizer
from maml_rl.agents.maml import TaskSamples, inner_losses, inner_step
from maml_rl.agents.maml_trpo import MAMLTRPO
from maml_rl.agents.policies import CategoricalMLPPolicy, GaussianMLPPolicy, Policy, stack_params
from maml_rl.batch import EpisodeBatch
from maml_rl.envs.navigation import BatchedNavigation2D, Navigation2DEnv
from maml_rl.optim import flatten, unflatten
from maml_rl.tasks import Task

from conftest import make_policy, trpo_agent

N, E, T = 3, 4, 8


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: these tiny products are slower on two when the machine is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rollout(
    policy: GaussianMLPPolicy,
    params: dict[str, torch.Tensor],
    tasks: list[Task],
    episodes: int,
    horizon: int,
    seed: int,
) -> EpisodeBatch:
    """Sample ``episodes`` Navigation2D episodes per task with (stacked) ``params``."""
    n = len(tasks)
    env = BatchedNavigation2D(n * episodes, horizon)
    env.set_tasks([t for t in tasks for _ in range(episodes)])
    obs_np, _ = env.reset(seed=list(range(n * episodes)))
    gen = torch.Generator().manual_seed(seed)
    dtype = next(policy.parameters()).dtype
    if not policy.is_stacked(params):
        params = stack_params(params, n)
    obs, acts, rews, logps = [], [], [], []
    with torch.no_grad():
        for _ in range(horizon):
            o = torch.as_tensor(obs_np, dtype=dtype).view(n, episodes, -1)
            dist = policy(o, params)
            noise = torch.randn(dist.mean.shape, generator=gen, dtype=dtype)
            a = dist.mean + dist.stddev * noise
            obs.append(o)
            acts.append(a)
            logps.append(dist.log_prob(a))
            obs_np, r, _, _, _ = env.step(a.reshape(n * episodes, -1).double().numpy())
            rews.append(torch.as_tensor(r).view(n, episodes))
    truncated = torch.zeros(n, horizon, episodes, dtype=torch.bool)
    truncated[:, -1] = True

    def stack(xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(xs, dim=1).float()

    return EpisodeBatch(
        observations=stack(obs),
        actions=stack(acts),
        rewards=stack(rews),
        log_probs=stack(logps),
        terminated=torch.zeros_like(truncated),
        truncated=truncated,
        mask=torch.ones(n, horizon, episodes),
        final_observations=torch.as_tensor(obs_np, dtype=torch.float32).view(n, episodes, -1),
        tasks=list(tasks),
    )


def make_agent(policy: Policy, **kwargs: object) -> MAMLTRPO:
    defaults: dict[str, object] = {"fast_lr": 0.5, "gamma": 0.95, "gae_lambda": 1.0}
    return trpo_agent(policy, **{**defaults, **kwargs})


def meta_batches(
    agent: MAMLTRPO, num_steps: int = 1, seed: int = 0
) -> tuple[list[EpisodeBatch], EpisodeBatch]:
    """Train batches and a valid batch, sampled as the trainer does."""
    policy = agent.policy
    assert isinstance(policy, GaussianMLPPolicy)
    tasks = Navigation2DEnv.sample_tasks(N, np.random.default_rng(seed))
    params: dict[str, torch.Tensor] = policy.params()
    train = []
    for k in range(num_steps):
        batch = rollout(policy, params, tasks, E, T, seed=100 * seed + k)
        train.append(batch)
        params = agent.adapt(params, batch)
    return train, rollout(policy, params, tasks, E, T, seed=100 * seed + 99)


# -- inner loop --------------------------------------------------------------------------


def test_batched_adaptation_equals_per_task_loop() -> None:
    policy = make_policy()
    agent = make_agent(policy)
    (batch,), _ = meta_batches(agent)
    adapted = agent.adapt(policy.params(), batch)
    samples = agent.samples(batch)
    for i in range(N):
        theta = {k: v.detach().clone().requires_grad_() for k, v in policy.params().items()}
        obs = samples.observations[i]
        logp = policy(obs, theta).log_prob(samples.actions[i])
        loss = -(logp * samples.advantages[i] * samples.weights[i]).sum()
        grads = torch.autograd.grad(loss, list(theta.values()))
        for (name, p), g in zip(theta.items(), grads, strict=True):
            torch.testing.assert_close(adapted[name][i], p - agent.maml.fast_lr * g)


def test_adapt_graph_reaches_theta_only_with_create_graph() -> None:
    policy = make_policy()
    agent = make_agent(policy)
    (batch,), valid = meta_batches(agent)
    detached = agent.adapt(policy.params(), batch)
    assert not any(v.requires_grad for v in detached.values())
    adapted = agent.adapt(policy.params(), batch, create_graph=True)
    loss = inner_losses(policy, adapted, agent.samples(valid)).sum()
    grads = torch.autograd.grad(loss, list(policy.parameters()), retain_graph=True)
    assert all(g.abs().sum() > 0 for g in grads)
    # A second inner step from stacked parameters keeps the connection.
    twice = agent.adapt(adapted, valid, create_graph=True)
    grads2 = torch.autograd.grad(inner_losses(policy, twice, agent.samples(valid)).sum(),
                                 list(policy.parameters()))  # fmt: skip
    assert all(g.abs().sum() > 0 for g in grads2)


def test_stacked_params_for_the_wrong_task_count_are_rejected() -> None:
    policy = make_policy()
    agent = make_agent(policy)
    (batch,), _ = meta_batches(agent)
    with pytest.raises(ValueError, match="stacked parameters are for 2 tasks"):
        agent.adapt(stack_params(policy.params(), 2), batch)


# -- the meta-gradient ---------------------------------------------------------------------


def _meta_gradient(agent: MAMLTRPO, train: list[EpisodeBatch], valid: EpisodeBatch) -> torch.Tensor:
    lin = agent.linearizer.linearize([agent.samples(b) for b in train], agent.samples(valid))
    return lin.grad


@pytest.mark.parametrize("num_steps", [1, 2])
def test_meta_gradient_equals_finite_differences(num_steps: int) -> None:
    policy = make_policy()
    agent = make_agent(policy, num_adapt_steps=num_steps)
    train_b, valid_b = meta_batches(agent, num_steps)
    train = [agent.samples(b) for b in train_b]
    valid = agent.samples(valid_b)
    lin = agent.linearizer.linearize(train, valid)
    theta = {k: v.detach() for k, v in policy.named_parameters()}
    direction = torch.randn(lin.grad.shape, generator=torch.Generator().manual_seed(1),
                            dtype=torch.float64)  # fmt: skip
    eps = 1e-6

    def loss_at(sign: float) -> float:
        shifted = unflatten(flatten(list(theta.values())) + sign * eps * direction, theta)
        return agent.linearizer.evaluate(shifted, train, valid, lin)[0]

    fd = (loss_at(1.0) - loss_at(-1.0)) / (2 * eps)
    assert lin.grad @ direction == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_second_order_gradient_matches_per_task_reference_and_differs_from_first_order() -> None:
    policy = make_policy()
    agent = make_agent(policy)
    train, valid_b = meta_batches(agent)
    g2 = _meta_gradient(agent, train, valid_b)
    g1 = _meta_gradient(make_agent(policy, first_order=True), train, valid_b)
    assert (g2 - g1).norm() > 1e-3 * g2.norm()

    # Reference: one task at a time, the adaptation written with plain autograd.
    tr, va = agent.samples(train[0]), agent.samples(valid_b)
    theta = dict(policy.named_parameters())
    ref2 = [torch.zeros_like(p) for p in theta.values()]
    ref1 = [torch.zeros_like(p) for p in theta.values()]
    for i in range(N):
        for second_order, ref in ((True, ref2), (False, ref1)):
            logp = policy(tr.observations[i], theta).log_prob(tr.actions[i])
            inner = -(logp * tr.advantages[i] * tr.weights[i]).sum()
            grads = torch.autograd.grad(inner, list(theta.values()), create_graph=second_order)
            adapted = {
                k: p - agent.maml.fast_lr * g
                for (k, p), g in zip(theta.items(), grads, strict=True)
            }
            lp = policy(va.observations[i], adapted).log_prob(va.actions[i])
            outer = -(torch.exp(lp - lp.detach()) * va.advantages[i] * va.weights[i]).sum() / N
            for r, g in zip(ref, torch.autograd.grad(outer, list(theta.values())), strict=True):
                r += g
    torch.testing.assert_close(g2, flatten(ref2))
    torch.testing.assert_close(g1, flatten(ref1))


def test_linearization_is_the_same_under_no_grad() -> None:
    policy = make_policy()
    agent = make_agent(policy)
    train_b, valid_b = meta_batches(agent)
    train, valid = [agent.samples(b) for b in train_b], agent.samples(valid_b)
    lin = agent.linearizer.linearize(train, valid)
    with torch.no_grad():  # e.g. a trainer that wraps its whole loop
        lin_ng = agent.linearizer.linearize(train, valid)
        v = lin.grad.clone()
        torch.testing.assert_close(lin_ng.hvp(v), lin.hvp(v))
    torch.testing.assert_close(lin_ng.grad, lin.grad)


# -- curvature -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num_steps", "first_order"),
    [(1, False), (2, False), (1, True)],
    ids=["1-step", "2-step", "fo"],
)
def test_gauss_newton_products_equal_exact_kl_hessian_products(
    num_steps: int, first_order: bool
) -> None:
    policy = make_policy()
    gn = make_agent(policy, num_adapt_steps=num_steps, first_order=first_order)
    exact = make_agent(policy, num_adapt_steps=num_steps, first_order=first_order, hvp="exact")
    train_b, valid_b = meta_batches(gn, num_steps)
    train = [gn.samples(b) for b in train_b]
    valid = gn.samples(valid_b)
    hvp_gn = gn.linearizer.linearize(train, valid).hvp
    hvp_exact = exact.linearizer.linearize(train, valid).hvp
    g = torch.Generator().manual_seed(2)
    size = sum(p.numel() for p in policy.parameters())
    u, v = (torch.randn(size, generator=g, dtype=torch.float64) for _ in range(2))
    hv = hvp_gn(v)
    torch.testing.assert_close(hv, hvp_exact(v), rtol=1e-9, atol=1e-12)
    # A damped KL Hessian is symmetric positive definite.
    assert (u @ hv).item() == pytest.approx((v @ hvp_gn(u)).item(), rel=1e-9)
    assert v @ hv > 0


@pytest.mark.parametrize("hvp", ["gauss_newton", "exact"])
def test_subsampled_curvature_is_the_curvature_of_the_first_tasks(hvp: str) -> None:
    policy = make_policy()
    sub = make_agent(policy, hvp=hvp, hvp_subsample=0.5)  # ⌈0.5 · 3⌉ = 2 tasks
    full = make_agent(policy, hvp=hvp)
    train_b, valid_b = meta_batches(sub)
    train, valid = [sub.samples(b) for b in train_b], sub.samples(valid_b)
    lin_sub = sub.linearizer.linearize(train, valid)
    hvp_sub = lin_sub.hvp
    lin_full = full.linearizer.linearize(train, valid)
    # The gradient (and the line search) still use every task.
    torch.testing.assert_close(lin_sub.grad, lin_full.grad)
    hvp_head = full.linearizer.linearize([s.head(2) for s in train], valid.head(2)).hvp
    v = torch.randn(lin_sub.grad.shape, generator=torch.Generator().manual_seed(3),
                    dtype=torch.float64)  # fmt: skip
    torch.testing.assert_close(hvp_sub(v), hvp_head(v))
    metrics = sub.step(train_b, valid_b)
    assert metrics["train/step_accepted"] == 1.0 and metrics["train/kl"] <= sub.trpo.max_kl


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize(("num_steps", "hvp"), [(1, "gauss_newton"), (2, "first_order")])
def test_bfloat16_products_round_the_float_ones_and_leave_the_gradient(
    activation: str, num_steps: int, hvp: str
) -> None:
    policy = make_policy(activation=activation)
    exact = make_agent(policy, num_adapt_steps=num_steps, hvp=hvp)
    low = make_agent(policy, num_adapt_steps=num_steps, hvp=hvp, hvp_dtype="bfloat16")
    train_b, valid_b = meta_batches(exact, num_steps)
    train, valid = [exact.samples(b) for b in train_b], exact.samples(valid_b)
    lin_e = exact.linearizer.linearize(train, valid)
    hvp_e = lin_e.hvp
    lin_l = low.linearizer.linearize(train, valid)
    hvp_l = lin_l.hvp
    assert lin_l.loss == lin_e.loss
    torch.testing.assert_close(lin_l.grad, lin_e.grad, rtol=0, atol=0)
    g = torch.Generator().manual_seed(5)
    for _ in range(2):
        v = torch.randn(lin_e.grad.shape, generator=g, dtype=torch.float64)
        want, got = hvp_e(v), hvp_l(v)
        assert got.dtype == v.dtype
        # bfloat16 keeps 8 significant bits: ~0.4 % per rounding, a few roundings deep.
        assert (got - want).norm() <= 0.03 * want.norm()
        assert (got - want).norm() > 0  # really computed in the lower precision
    if hvp == "gauss_newton":  # with exact curvature the step lands inside the region
        metrics = low.step(train_b, valid_b)
        assert metrics["train/step_accepted"] == 1.0 and metrics["train/kl"] <= low.trpo.max_kl


# -- the two linearizers (agents.linearizers*) -------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize(
    ("num_steps", "first_order", "hvp", "subsample"),
    [
        (1, False, "gauss_newton", 1.0),
        (2, False, "gauss_newton", 0.5),
        (1, True, "gauss_newton", 1.0),
        (2, False, "first_order", 1.0),
    ],
    ids=["1-step", "2-step-subsampled", "fomaml", "2-step-first-order-curvature"],
)
def test_hand_derived_derivatives_equal_autograd(
    activation: str, num_steps: int, first_order: bool, hvp: str, subsample: float
) -> None:
    policy = make_policy(activation=activation)
    kwargs: dict[str, object] = {
        "num_adapt_steps": num_steps, "first_order": first_order, "hvp": hvp,
        "hvp_subsample": subsample,
    }  # fmt: skip
    agent = make_agent(policy, **kwargs)
    fast = agent.linearizer
    assert isinstance(fast, GaussianMLPLinearizer)
    ref = AutogradLinearizer(policy, fast.settings)
    train_b, valid_b = meta_batches(agent, num_steps)
    train, valid = [agent.samples(b) for b in train_b], agent.samples(valid_b)
    lin_f, lin_r = fast.linearize(train, valid), ref.linearize(train, valid)
    hvp_f, hvp_r = lin_f.hvp, lin_r.hvp
    assert lin_f.loss == pytest.approx(lin_r.loss, rel=1e-12)
    assert lin_f.inner_loss == pytest.approx(lin_r.inner_loss, rel=1e-12)
    torch.testing.assert_close(lin_f.grad, lin_r.grad, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(lin_f.old_log_probs, lin_r.old_log_probs)
    for a, b in zip(lin_f.inner_old_log_probs, lin_r.inner_old_log_probs, strict=True):
        torch.testing.assert_close(a, b)
    g = torch.Generator().manual_seed(4)
    for _ in range(2):  # the second product reuses the first one's buffers
        v = torch.randn(lin_f.grad.shape, generator=g, dtype=torch.float64)
        torch.testing.assert_close(hvp_f(v), hvp_r(v), rtol=1e-10, atol=1e-13)
    # Line-search candidates and the sampling-time adaptation.
    theta = {k: p.detach() + 0.01 * torch.randn(p.shape, generator=g, dtype=p.dtype)
             for k, p in policy.named_parameters()}  # fmt: skip
    got = fast.evaluate(theta, train, valid, lin_f)
    want = ref.evaluate(theta, train, valid, lin_r)
    assert got == pytest.approx(want, rel=1e-10)
    params_f: dict[str, torch.Tensor] = policy.params()
    params_r: dict[str, torch.Tensor] = policy.params()
    for samples in train:
        params_f, params_r = fast.adapt(params_f, samples), ref.adapt(params_r, samples)
        for k in params_f:
            torch.testing.assert_close(params_f[k], params_r[k])
            assert not params_f[k].requires_grad


class _GaussianSubclass(GaussianMLPPolicy):
    """A Gaussian MLP subclass: it may change the forward pass, so autograd is used."""


@pytest.mark.parametrize("objective", ["reinforce", "lvc", "dice"])
@pytest.mark.parametrize("hvp", HVP_METHODS)
@pytest.mark.parametrize("kind", ["relu", "tanh", "subclass", "categorical"])
def test_the_hand_derived_linearizer_is_chosen_exactly_where_it_applies(
    kind: str, hvp: str, objective: str
) -> None:
    policy: Policy
    if kind == "categorical":
        policy = CategoricalMLPPolicy(2, 3, hidden_sizes=(8,)).double()
    elif kind == "subclass":
        policy = _GaussianSubclass(2, 2, hidden_sizes=(8,)).double()
    else:
        policy = make_policy(activation=kind)
    agent = make_agent(policy, hvp=hvp, inner_objective=objective)
    hand = kind in ("relu", "tanh") and hvp != "exact" and objective == "reinforce"
    assert type(agent.linearizer) is (GaussianMLPLinearizer if hand else AutogradLinearizer)
    assert agent.linearizer.policy is agent.policy
    if not hand:
        with pytest.raises(ValueError, match="the hand-derived linearisation needs"):
            GaussianMLPLinearizer(policy, agent.linearizer.settings)


def test_hand_derived_linearizer_leaves_a_log_std_at_the_floor_to_autograd() -> None:
    policy = make_policy()
    agent = make_agent(policy)
    train_b, valid_b = meta_batches(agent)
    train, valid = [agent.samples(b) for b in train_b], agent.samples(valid_b)
    # The floor at a log-std: the policy's clamp is active, the formulas do not apply.
    policy.min_log_std = policy.log_std[0].item()
    fast = agent.linearizer
    assert isinstance(fast, GaussianMLPLinearizer)
    ref = AutogradLinearizer(policy, fast.settings)
    lin_f, lin_r = fast.linearize(train, valid), ref.linearize(train, valid)
    assert math.isfinite(lin_f.loss) and lin_f.loss == lin_r.loss
    assert torch.equal(lin_f.grad, lin_r.grad)
    v = torch.randn(lin_f.grad.shape, generator=torch.Generator().manual_seed(6),
                    dtype=torch.float64)  # fmt: skip
    assert torch.equal(lin_f.hvp(v), lin_r.hvp(v))
    theta = {k: p.detach() for k, p in policy.named_parameters()}
    assert fast.evaluate(theta, train, valid, lin_f) == ref.evaluate(theta, train, valid, lin_r)
    for a, b in zip(fast.adapt(theta, train[0]).values(), ref.adapt(theta, train[0]).values(),
                    strict=True):  # fmt: skip
        assert torch.equal(a, b)


def test_first_order_curvature_keeps_the_second_order_gradient() -> None:
    policy = make_policy()
    default, fo_curv = make_agent(policy), make_agent(policy, hvp="first_order")
    fomaml = make_agent(policy, first_order=True)
    train_b, valid_b = meta_batches(default)
    train, valid = [default.samples(b) for b in train_b], default.samples(valid_b)
    lin = fo_curv.linearizer.linearize(train, valid)
    hvp = lin.hvp
    lin_default = default.linearizer.linearize(train, valid)
    hvp_default = lin_default.hvp
    lin_fomaml = fomaml.linearizer.linearize(train, valid)
    hvp_fomaml = lin_fomaml.hvp
    # The gradient is MAML's; the curvature is FOMAML's (the adaptation's Jacobian = I).
    torch.testing.assert_close(lin.grad, lin_default.grad)
    assert (lin.grad - lin_fomaml.grad).norm() > 1e-3 * lin.grad.norm()
    v = torch.randn(lin.grad.shape, generator=torch.Generator().manual_seed(5),
                    dtype=torch.float64)  # fmt: skip
    hv = hvp(v)
    torch.testing.assert_close(hv, hvp_fomaml(v))
    assert (hv - hvp_default(v)).norm() > 1e-3 * hv.norm()
    metrics = fo_curv.step(train_b, valid_b)
    assert metrics["train/step_accepted"] == 1.0 and metrics["train/kl"] <= fo_curv.trpo.max_kl


def test_repeated_steps_reusing_buffers_give_identical_updates() -> None:
    policy = make_policy(torch.float32, activation="relu")
    agent = make_agent(policy)
    train_b, valid_b = meta_batches(agent)
    theta0 = {k: v.detach().clone() for k, v in policy.state_dict().items()}
    runs = []
    for _ in range(2):
        policy.load_state_dict(theta0)
        metrics = agent.step(train_b, valid_b)
        runs.append(({k: v for k, v in metrics.items() if not k.startswith("time/")},
                     {k: v.detach().clone() for k, v in policy.state_dict().items()}))  # fmt: skip
    assert runs[0][0]["train/step_accepted"] == 1.0
    assert runs[0][0] == runs[1][0]
    for k in theta0:
        assert torch.equal(runs[0][1][k], runs[1][1][k])


def test_categorical_policy_products_and_step() -> None:
    torch.manual_seed(0)
    policy = CategoricalMLPPolicy(3, 4, hidden_sizes=(8,), activation="tanh").double()
    torch.nn.init.normal_(policy.head.weight, std=0.5)
    g = torch.Generator().manual_seed(0)

    def batch(seed: int) -> EpisodeBatch:
        g.manual_seed(seed)
        truncated = torch.zeros(N, T, E, dtype=torch.bool)
        truncated[:, -1] = True
        return EpisodeBatch(
            observations=torch.randn(N, T, E, 3, generator=g),
            actions=torch.randint(0, 4, (N, T, E), generator=g),
            rewards=torch.randn(N, T, E, generator=g),
            log_probs=torch.zeros(N, T, E),
            terminated=torch.zeros_like(truncated),
            truncated=truncated,
            mask=torch.ones(N, T, E),
            final_observations=torch.randn(N, E, 3, generator=g),
            tasks=Navigation2DEnv.sample_tasks(N, np.random.default_rng(seed)),
        )

    gn, exact = make_agent(policy), make_agent(policy, hvp="exact")
    train, valid = [gn.samples(batch(1))], gn.samples(batch(2))
    v = torch.randn(sum(p.numel() for p in policy.parameters()), generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        gn.linearizer.linearize(train, valid).hvp(v),
        exact.linearizer.linearize(train, valid).hvp(v),
    )
    metrics = gn.step([batch(1)], batch(2))
    assert all(math.isfinite(x) for x in metrics.values())


# -- MAML-TRPO step --------------------------------------------------------------------------


@pytest.mark.parametrize("hvp", ["gauss_newton", "exact"])
def test_trpo_step_improves_surrogate_within_trust_region(hvp: str) -> None:
    policy = make_policy(torch.float32, activation="relu")
    agent = make_agent(policy, hvp=hvp, max_kl=0.01)
    train_b, valid_b = meta_batches(agent)
    before = {k: v.detach().clone() for k, v in policy.named_parameters()}
    train, valid = [agent.samples(b) for b in train_b], agent.samples(valid_b)
    lin = agent.linearizer.linearize(train, valid)
    metrics = agent.step(train_b, valid_b)
    assert metrics["train/step_accepted"] == 1.0
    after = {k: v.detach() for k, v in policy.named_parameters()}
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # Re-evaluate at the new θ independently of the step's own bookkeeping.
    loss, kl = agent.linearizer.evaluate(after, train, valid, lin)
    assert loss < metrics["train/surrogate_loss"]
    assert 0 < kl <= agent.trpo.max_kl
    assert loss == pytest.approx(metrics["train/surrogate_loss_after"], rel=1e-4, abs=1e-6)
    assert kl == pytest.approx(metrics["train/kl"], rel=1e-3)
    assert metrics["train/line_search_steps"] >= 1


def test_nonfinite_loss_is_rejected_and_theta_unchanged() -> None:
    policy = make_policy(torch.float32, activation="relu")
    agent = make_agent(policy)
    train, valid = meta_batches(agent)
    # Huge observations: means of ~1e31, log-probabilities overflow to -inf and the
    # probability ratio is NaN (the baseline clips observations and still fits).
    broken = dataclasses.replace(valid, observations=valid.observations * 1e30)
    before = [p.detach().clone() for p in policy.parameters()]
    metrics = agent.step(train, broken)
    assert not math.isfinite(metrics["train/surrogate_loss"])
    assert metrics["train/step_accepted"] == 0.0
    assert metrics["train/kl"] == 0.0 and metrics["train/line_search_steps"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters(), strict=True))


def test_step_validates_its_inputs() -> None:
    policy = make_policy()
    agent = make_agent(policy, num_adapt_steps=2)
    train, valid = meta_batches(agent, 2)
    with pytest.raises(ValueError, match="one train batch per inner step"):
        agent.step(train[:1], valid)
    with pytest.raises(ValueError, match="list of EpisodeBatch"):
        agent.step(train[0], valid)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same task count"):
        agent.step(train, valid.task_slice([0, 1]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fast_lr": 0.0}, "fast_lr must be > 0"),
        ({"num_adapt_steps": 0}, "num_adapt_steps must be ≥ 1"),
        ({"max_kl": -1.0}, "max_kl must be > 0"),
        ({"ls_backtrack_ratio": 1.0}, "ls_backtrack_ratio must be > 0 and < 1"),
        ({"hvp": "fisher"}, "hvp must be one of"),
        ({"hvp_subsample": 0.0}, "hvp_subsample must be > 0 and ≤ 1"),
        ({"hvp_dtype": "float16"}, "hvp_dtype must be one of"),
        ({"hvp_dtype": "bfloat16", "hvp": "exact"}, "needs the hand-derived products"),
        ({"hvp_dtype": "bfloat16", "inner_objective": "lvc"}, "needs the hand-derived"),
    ],
)
def test_bad_hyperparameters_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_agent(make_policy(), **kwargs)


def test_state_dict_round_trip() -> None:
    policy = make_policy()
    agent = make_agent(policy)
    state = {k: v.clone() for k, v in agent.state_dict()["policy"].items()}
    other = make_agent(make_policy())
    with torch.no_grad():
        for p in other.policy.parameters():
            p.add_(1.0)
    other.load_state_dict({"policy": state})
    for a, b in zip(policy.parameters(), other.policy.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="exactly the key 'policy'"):
        other.load_state_dict({"optimizer": {}})


def test_inner_step_from_detached_params_gives_gradient() -> None:
    policy = make_policy()
    agent = make_agent(policy)
    (batch,), _ = meta_batches(agent)
    samples: TaskSamples = agent.samples(batch)
    detached = {k: v.detach() for k, v in policy.params().items()}
    with torch.no_grad():  # as inside a sampler
        step = inner_step(policy, detached, samples, 0.1, second_order=True, keep_graph=False)
    assert all(torch.isfinite(v).all() and not v.requires_grad for v in step.params_out.values())
    assert any((step.params_out[k] - detached[k]).abs().sum() > 0 for k in detached)


@pytest.mark.parametrize("native", [True, False])
def test_hvp_dtype_auto_takes_bfloat16_only_where_it_is_native(
    native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import maml_rl.agents.maml_trpo as maml_trpo

    monkeypatch.setattr(maml_trpo, "native_bfloat16", lambda device: native)
    agent = make_agent(make_policy(), hvp_dtype="auto")
    assert agent.hvp_dtype == ("bfloat16" if native else "float32")
    assert agent.linearizer.settings.hvp_dtype == agent.hvp_dtype
    # Where the hand-derived products do not apply, auto is float32, never an error.
    for kwargs in ({"hvp": "exact"}, {"inner_objective": "lvc"}):
        assert make_agent(make_policy(), hvp_dtype="auto", **kwargs).hvp_dtype == "float32"
    # float32 and bfloat16 are taken as given.
    assert make_agent(make_policy(), hvp_dtype="float32").hvp_dtype == "float32"
    assert make_agent(make_policy(), hvp_dtype="bfloat16").hvp_dtype == "bfloat16"


def test_native_bfloat16_reads_the_cpu_flags(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import builtins

    from maml_rl.agents.maml_trpo import native_bfloat16

    real_open = builtins.open
    for flags, expected in (("fpu avx512f avx512_bf16", True), ("fpu amx_bf16", True),
                            ("fpu avx2 avx512f", False)):  # fmt: skip
        info = tmp_path / "cpuinfo"
        info.write_text(f"flags\t\t: {flags}\n")

        def fake_open(path, *args, _info=info, **kwargs):
            return real_open(_info if path == "/proc/cpuinfo" else path, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", fake_open)
        assert native_bfloat16(torch.device("cpu")) is expected
    monkeypatch.setattr(builtins, "open", real_open)
    assert native_bfloat16(torch.device("meta")) is False
