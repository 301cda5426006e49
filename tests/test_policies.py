"""MLP policies evaluated with explicit, possibly stacked, parameters (maml_rl.agents.policies)."""

from __future__ import annotations

import math

import pytest
import torch

from maml_rl.agents.policies import (
    INITS,
    CategoricalMLPPolicy,
    GaussianMLPPolicy,
    stack_params,
    unstack_params,
)

N, B = 3, 5


def _perturbed(policy: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        k: v.detach() + 0.3 * torch.randn(v.shape, generator=g)
        for k, v in policy.named_parameters()
    }


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_stacked_forward_equals_per_task_forward(kind: str) -> None:
    torch.manual_seed(0)
    policy = (
        GaussianMLPPolicy(4, 2, (16, 16))
        if kind == "gaussian"
        else CategoricalMLPPolicy(4, 3, (16,))
    )
    per_task = [_perturbed(policy, i) for i in range(N)]
    stacked = stack_params(per_task)
    assert policy.is_stacked(stacked) and not policy.is_stacked(per_task[0])
    obs = torch.randn(N, 2, B, 4)  # extra leading batch dims per task
    dist = policy(obs, stacked)
    actions = dist.sample()
    log_probs = dist.log_prob(actions)
    assert log_probs.shape == (N, 2, B)
    for i, params in enumerate(per_task):
        one = policy(obs[i], params)
        torch.testing.assert_close(log_probs[i], one.log_prob(actions[i]))
        torch.testing.assert_close(dist.entropy()[i], one.entropy())
    for params, back in zip(per_task, unstack_params(stacked), strict=True):
        assert all(torch.equal(params[k], back[k]) for k in params)


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_rollout_actor_takes_the_distributions_action_and_log_prob(
    kind: str, activation: str
) -> None:
    """The sampler's fused step equals sampling the distribution with the same noise, bit
    for bit: the reparameterised Gaussian action and its log-probability, or the
    Gumbel-max action; its buffers are reused, so each step's output is read before the
    next."""
    torch.manual_seed(0)
    policy = (
        GaussianMLPPolicy(4, 2, (16, 16), activation, init_std=0.7)
        if kind == "gaussian"
        else CategoricalMLPPolicy(4, 3, (16,), activation)
    )
    stacked = stack_params([_perturbed(policy, i) for i in range(N)])
    steps, episodes = 6, 5
    noise = torch.randn(steps, N, episodes, 2 if kind == "gaussian" else 3)
    actor = policy.rollout_actor(stacked, noise)
    for t in range(steps):
        obs = torch.randn(N, episodes, 4)
        action, log_prob = (v.clone() for v in actor(obs, t))
        dist = policy(obs, stacked)
        if kind == "gaussian":
            assert torch.equal(action, dist.mean + dist.stddev * noise[t])
        else:
            assert torch.equal(action, torch.argmax(dist.logits + noise[t], dim=-1))
        assert torch.equal(log_prob, dist.log_prob(action))  # bit for bit
    with pytest.raises(ValueError, match="stacked"):
        policy.rollout_actor(policy.params(), noise)


class _ShiftedMean(GaussianMLPPolicy):
    """A subclass with its own forward pass: the fused rollout must not stand in for it."""

    def forward(self, obs, params=None):  # type: ignore[no-untyped-def]
        dist = super().forward(obs, params)
        return type(dist)(type(dist.base_dist)(dist.mean + 1.0, dist.stddev), 1)


class _Renamed(GaussianMLPPolicy):
    """A subclass that leaves the forward pass alone keeps the fused rollout."""


def test_rollout_actor_only_where_the_forward_pass_is_the_mlps() -> None:
    noise = torch.randn(2, N, 3, 2)
    for cls, fused in ((GaussianMLPPolicy, True), (_Renamed, True), (_ShiftedMean, False)):
        policy = cls(4, 2, (8,))
        actor = policy.rollout_actor(stack_params(policy.params(), N), noise)
        assert (actor is not None) == fused, cls.__name__


def test_gaussian_log_prob_sums_over_action_dims() -> None:
    policy = GaussianMLPPolicy(3, 4, (8,), init_std=0.5)
    obs = torch.randn(B, 3)
    dist = policy(obs)
    a = torch.randn(B, 4)
    mean = dist.mean
    expected = (-0.5 * ((a - mean) / 0.5) ** 2 - math.log(0.5) - 0.5 * math.log(2 * math.pi)).sum(
        -1
    )
    torch.testing.assert_close(dist.log_prob(a), expected)
    # The log-std floor keeps the distribution valid.
    params = dict(policy.params())
    params["log_std"] = torch.full((4,), -100.0)
    assert torch.allclose(policy(obs, params).stddev, torch.tensor(1e-6))


def test_broadcast_stack_sends_gradients_to_shared_params() -> None:
    policy = GaussianMLPPolicy(2, 2, (8,))
    stacked = stack_params(policy.params(), N)
    obs = torch.randn(N, B, 2)
    per_task_loss = policy(obs, stacked).log_prob(torch.zeros(N, B, 2)).sum()
    grads = torch.autograd.grad(per_task_loss, list(policy.parameters()))
    # Same as summing the unstacked per-task losses.
    ref = sum(policy(obs[i]).log_prob(torch.zeros(B, 2)).sum() for i in range(N))
    ref_grads = torch.autograd.grad(ref, list(policy.parameters()))
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_parameter_and_observation_errors() -> None:
    policy = GaussianMLPPolicy(2, 2, (8,))
    params = policy.params()
    with pytest.raises(ValueError, match="missing"):
        policy(torch.zeros(B, 2), {k: v for k, v in params.items() if k != "log_std"})
    with pytest.raises(ValueError, match="must have shape"):
        policy(torch.zeros(B, 2), {**params, "head.bias": torch.zeros(5)})
    mixed = {**stack_params(params, N), "log_std": params["log_std"]}
    with pytest.raises(ValueError, match="mix stacked and unstacked"):
        policy(torch.zeros(N, B, 2), mixed)
    with pytest.raises(ValueError, match="obs_dim=2"):
        policy(torch.zeros(B, 3))
    with pytest.raises(ValueError, match="need observations"):
        policy(torch.zeros(N + 1, B, 2), stack_params(params, N))
    with pytest.raises(ValueError, match="activation must be one of"):
        GaussianMLPPolicy(2, 2, activation="gelu")
    with pytest.raises(ValueError, match="init_std must be > 0"):
        GaussianMLPPolicy(2, 2, init_std=0.0)
    with pytest.raises(ValueError, match="init must be one of"):
        CategoricalMLPPolicy(2, 3, init="glorot")
    with pytest.raises(ValueError, match="needs the task count"):
        stack_params(params)


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_initialisations(kind: str) -> None:
    assert INITS == ("default", "xavier")

    def make(init: str) -> torch.nn.Module:
        torch.manual_seed(0)
        if kind == "gaussian":
            return GaussianMLPPolicy(3, 2, (64, 32), init_std=0.5, init=init)
        return CategoricalMLPPolicy(3, 4, (64, 32), init=init)

    default, xavier = make("default"), make("xavier")
    for layer in xavier.layers:
        # Glorot-uniform: U(-b, b) with b = sqrt(6 / (fan_in + fan_out)); zero biases.
        fan_out, fan_in = layer.weight.shape
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        w = layer.weight.detach()
        assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
        assert w.std() == pytest.approx(bound / math.sqrt(3.0), rel=0.15)
        assert torch.count_nonzero(layer.bias) == 0
    # The default keeps torch's hidden init (non-zero biases); both start the head near 0.
    assert all(torch.count_nonzero(layer.bias) > 0 for layer in default.layers)
    for policy in (default, xavier):
        head = policy.head.weight.detach()
        assert 0 < head.abs().max() <= 0.01 * math.sqrt(6.0 / sum(head.shape))
        assert torch.count_nonzero(policy.head.bias) == 0
    # Only the weights differ: same parameter set, same log-std.
    assert [k for k, _ in default.named_parameters()] == [k for k, _ in xavier.named_parameters()]
    if kind == "gaussian":
        assert torch.equal(default.log_std, xavier.log_std)
        assert torch.allclose(default.log_std.exp(), torch.full((2,), 0.5))
