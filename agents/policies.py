"""MLP policies whose forward pass runs any parameter dict, one or many at once.

MAML needs a policy evaluated with parameters that are *not* its own (the
adapted ``θ'_i`` of every task), and evaluated for all tasks together. Both
policies here therefore take an explicit parameter dict in :meth:`forward`:

* **unstacked** parameters (each tensor has the shape of the module's own
  parameter): observations of any leading shape ``[..., obs_dim]``;
* **stacked** parameters (each tensor has an extra leading task dimension ``N``):
  observations ``[N, ..., obs_dim]``; task ``i``'s observations go through task
  ``i``'s parameters, as one batched matmul per layer (no Python loop over tasks,
  no ``vmap`` overhead).

``params=None`` uses the module's own parameters. Parameters are a plain
``dict[str, Tensor]`` keyed like :meth:`torch.nn.Module.named_parameters`, so
``functional_call``-style code and ``torch.func`` transforms work on them too.
Log-probabilities are summed over action dimensions (the TRPO/PPO ratio is then
a true likelihood ratio).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Protocol

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

__all__ = [
    "INITS",
    "CategoricalMLPPolicy",
    "GaussianMLPPolicy",
    "Params",
    "Policy",
    "RolloutActor",
    "stack_params",
    "unstack_params",
]

Params = dict[str, torch.Tensor]

_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}

#: Weight initialisations of the MLP policies' hidden layers: ``default`` (torch's) and
#: ``xavier`` (Glorot-uniform weights, zero biases, as the original MAML code). The output
#: layer starts near zero in both.
INITS: tuple[str, ...] = ("default", "xavier")


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T + bias``; with stacked (3-D) weights, one matmul per task."""
    if weight.dim() == 2:
        return torch.nn.functional.linear(x, weight, bias)
    n = weight.shape[0]
    lead = x.shape[1:-1]
    flat = x.reshape(n, -1, x.shape[-1])
    out = torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2))
    return out.reshape(n, *lead, weight.shape[1])


class RolloutActor(Protocol):
    """A policy prepared for one sample call: ``actor(obs, t)`` returns the actions taken
    at time ``t`` and their log-probabilities (``[N, E, ...]`` and ``[N, E]``), from
    observations ``[N, E, obs_dim]`` and the call's noise ``noise[t]``. The returned
    tensors may be reused by the next call."""

    def __call__(self, obs: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]: ...


class _StackedMLP:
    """The torso of a policy under stacked parameters ``[N, ...]``, for observations of
    one fixed shape ``[N, E, obs_dim]``: every layer written into its own preallocated
    buffer, activations in place — a step costs one ``baddbmm`` per layer and nothing
    else (the rollout engine calls it 200 times per sample call). The same kernels on the
    same operands as :meth:`Policy._torso`, so the same bits (making the transposed
    weights contiguous would be ~2x faster in the matmuls and change the last bits)."""

    def __init__(self, policy: Policy, params: Mapping[str, torch.Tensor], episodes: int) -> None:
        if not policy.is_stacked(params):
            raise ValueError("a rollout actor needs stacked parameters [N, ...]")
        names = [f"layers.{i}" for i in range(len(policy.layers))] + ["head"]
        self.layers = []
        for name in names:
            weight = params[f"{name}.weight"].detach()
            bias = params[f"{name}.bias"].detach()
            out = torch.empty(weight.shape[0], episodes, weight.shape[1], dtype=weight.dtype)
            self.layers.append((weight.transpose(1, 2), bias.unsqueeze(1), out))
        self.activate = {"tanh": torch.tanh_, "relu": torch.relu_}[policy.activation]

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs
        last = len(self.layers) - 1
        for i, (weight_t, bias, out) in enumerate(self.layers):
            torch.baddbmm(bias, x, weight_t, out=out)
            if i < last:
                self.activate(out)
            x = out
        return x


class Policy(nn.Module):
    """Common base of the MLP policies: an MLP torso and a distribution head."""

    def __init__(
        self,
        obs_dim: int,
        out_dim: int,
        hidden_sizes: Sequence[int],
        activation: str,
        init: str = "default",
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        if init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")
        if obs_dim < 1 or out_dim < 1 or any(h < 1 for h in hidden_sizes):
            raise ValueError(
                f"layer sizes must be ≥ 1, got obs_dim={obs_dim}, hidden={list(hidden_sizes)}, "
                f"out={out_dim}"
            )
        self.obs_dim = int(obs_dim)
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.activation = activation
        self.init = init
        self._act = _ACTIVATIONS[activation]
        sizes = (self.obs_dim, *self.hidden_sizes)
        hidden = [nn.Linear(a, b) for a, b in pairwise(sizes)]
        self.layers = nn.ModuleList(hidden)
        self.head = nn.Linear(sizes[-1], out_dim)
        if init == "xavier":
            # The original MAML code's hidden layers: Glorot-uniform weights, zero biases.
            for layer in hidden:
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        # Otherwise the hidden layers keep torch's default (uniform weights and biases).
        # Either way a near-zero output layer starts the policy at its default (zero-mean
        # or uniform) distribution (a Glorot output layer, as the original code's, starts
        # far from it: docs/results.md, "The initialisation").
        nn.init.xavier_uniform_(self.head.weight, gain=0.01)
        nn.init.zeros_(self.head.bias)

    # -- parameters ------------------------------------------------------------
    def params(self) -> Params:
        """The module's own parameters as a dict (the meta-parameters θ)."""
        return dict(self.named_parameters())

    def is_stacked(self, params: Mapping[str, torch.Tensor]) -> bool:
        """Whether ``params`` carries a leading task dimension; checks every shape."""
        own = dict(self.named_parameters())
        if set(params) != set(own):
            missing = sorted(set(own) - set(params))
            extra = sorted(set(params) - set(own))
            raise ValueError(f"parameter dict mismatch: missing {missing}, unexpected {extra}")
        stacked = None
        for name, p in own.items():
            q = params[name]
            if tuple(q.shape) == tuple(p.shape):
                this = False
            elif q.dim() == p.dim() + 1 and tuple(q.shape[1:]) == tuple(p.shape):
                this = True
            else:
                raise ValueError(
                    f"parameter {name!r} must have shape {tuple(p.shape)} (or [N, *that] "
                    f"stacked per task), got {tuple(q.shape)}"
                )
            if stacked is None:
                stacked = this
            elif stacked != this:
                raise ValueError("parameters mix stacked and unstacked tensors")
        if stacked:
            sizes = {params[n].shape[0] for n in own}
            if len(sizes) != 1:
                raise ValueError(f"stacked parameters disagree on the task count: {sorted(sizes)}")
        return bool(stacked)

    def _torso(self, obs: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = obs
        for i in range(len(self.layers)):
            x = self._act(_linear(x, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]))
        return _linear(x, params["head.weight"], params["head.bias"])

    def _check_obs(self, obs: torch.Tensor, params: Mapping[str, torch.Tensor]) -> bool:
        if obs.shape[-1] != self.obs_dim:
            raise ValueError(
                f"observations must end in obs_dim={self.obs_dim}, got shape {tuple(obs.shape)}"
            )
        stacked = self.is_stacked(params)
        if stacked:
            n = params["head.bias"].shape[0]
            if obs.dim() < 2 or obs.shape[0] != n:
                raise ValueError(
                    f"stacked parameters for {n} tasks need observations [{n}, ..., "
                    f"{self.obs_dim}], got {tuple(obs.shape)}"
                )
        return stacked

    def forward(
        self, obs: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None
    ) -> Distribution:
        raise NotImplementedError

    def _fused_rollout_applies(self) -> bool:
        """Whether the class's ``rollout_actor`` computes this policy: no subclass below
        the class that defines it has changed ``forward`` or the torso (a subclass that
        does gets the sampler's distribution path instead)."""
        cls = type(self)
        owner = next(c for c in cls.__mro__ if "rollout_actor" in vars(c))
        return all(getattr(cls, n) is getattr(owner, n) for n in ("forward", "_torso"))


class GaussianMLPPolicy(Policy):
    """Diagonal Gaussian policy: MLP mean, state-independent learned log-std.

    Args:
        obs_dim: observation size.
        act_dim: action size.
        hidden_sizes: hidden layer widths (the MAML paper: ``(100, 100)``).
        activation: ``"relu"`` (MAML paper) or ``"tanh"`` (pytorch-maml-rl).
        init_std: initial standard deviation of every action dimension.
        min_log_std: floor on the log-std, for numerical safety.
        init: weight initialisation, one of :data:`INITS`.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int] = (100, 100),
        activation: str = "relu",
        init_std: float = 1.0,
        min_log_std: float = math.log(1e-6),
        init: str = "default",
    ) -> None:
        super().__init__(obs_dim, act_dim, hidden_sizes, activation, init)
        if not init_std > 0:
            raise ValueError(f"init_std must be > 0, got {init_std}")
        self.act_dim = int(act_dim)
        self.min_log_std = float(min_log_std)
        self.log_std = nn.Parameter(torch.full((act_dim,), math.log(init_std)))

    def forward(
        self, obs: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None
    ) -> Independent:
        """The action distribution at ``obs`` (``log_prob`` sums over action dims)."""
        params = self.params() if params is None else params
        stacked = self._check_obs(obs, params)
        mean = self._torso(obs, params)
        log_std = params["log_std"].clamp(min=self.min_log_std)
        if stacked:  # [N, act] -> [N, 1, ..., 1, act] to broadcast over the batch dims
            log_std = log_std.reshape(log_std.shape[0], *([1] * (mean.dim() - 2)), -1)
        # No argument validation: a diverged policy's non-finite output is reported by
        # the caller (a rejected step), not raised from inside torch.distributions.
        scale = log_std.exp().expand_as(mean)
        return Independent(Normal(mean, scale, validate_args=False), 1, validate_args=False)

    def rollout_actor(
        self, params: Mapping[str, torch.Tensor], noise: torch.Tensor
    ) -> RolloutActor | None:
        """The sampler's fused, no-grad action step: ``a = μ(s) + σ ⊙ ε_t`` for the
        call's standard-normal noise ``ε`` (``[T, N, E, act_dim]``) and its
        log-probability, computed as :meth:`forward`'s ``log_prob`` does, from the action
        taken (so a non-finite mean gives a non-finite log-probability, which the trainer
        reports). None where a subclass changed the forward pass (see
        :meth:`_fused_rollout_applies`)."""
        if not self._fused_rollout_applies():
            return None
        torso = _StackedMLP(self, params, noise.shape[2])
        log_std = params["log_std"].detach().clamp(min=self.min_log_std)  # [N, d]
        std = log_std.exp().unsqueeze(1)  # [N, 1, d]
        # torch.distributions.Normal's operations, in its order: the same bits.
        two_var = 2 * std**2
        log_scale = std.log()
        log_sqrt_2pi = math.log(math.sqrt(2 * math.pi))
        scaled = torch.empty(noise.shape[1:], dtype=noise.dtype)
        actions = torch.empty(noise.shape[1:], dtype=noise.dtype)

        def act(obs: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
            mean = torso(obs)
            torch.mul(std, noise[t], out=scaled)
            torch.add(mean, scaled, out=actions)
            log_prob = (-((actions - mean) ** 2) / two_var - log_scale - log_sqrt_2pi).sum(-1)
            return actions, log_prob

        return act


class CategoricalMLPPolicy(Policy):
    """Categorical policy over ``num_actions`` discrete actions (MLP logits)."""

    def __init__(
        self,
        obs_dim: int,
        num_actions: int,
        hidden_sizes: Sequence[int] = (100, 100),
        activation: str = "relu",
        init: str = "default",
    ) -> None:
        super().__init__(obs_dim, num_actions, hidden_sizes, activation, init)
        self.num_actions = int(num_actions)

    def forward(
        self, obs: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None
    ) -> Categorical:
        params = self.params() if params is None else params
        self._check_obs(obs, params)
        return Categorical(logits=self._torso(obs, params), validate_args=False)

    def rollout_actor(
        self, params: Mapping[str, torch.Tensor], noise: torch.Tensor
    ) -> RolloutActor | None:
        """The sampler's no-grad action step: the Gumbel-max trick,
        ``a = argmax(logits + g_t)`` for the call's Gumbel noise ``g``
        (``[T, N, E, num_actions]``), and its log-probability. None where a
        subclass changed the forward pass (see :meth:`_fused_rollout_applies`)."""
        if not self._fused_rollout_applies():
            return None
        torso = _StackedMLP(self, params, noise.shape[2])

        def act(obs: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
            logits = torso(obs)
            action = torch.argmax(logits + noise[t], dim=-1)
            return action, Categorical(logits=logits, validate_args=False).log_prob(action)

        return act


def stack_params(
    params: Sequence[Mapping[str, torch.Tensor]] | Mapping[str, torch.Tensor], n: int | None = None
) -> Params:
    """Stack per-task parameter dicts into one dict with a leading task dim.

    With a single (unstacked) dict and ``n``, the dict is broadcast to ``n`` tasks
    (``expand``: no copy, and gradients flow back to the shared tensors).
    """
    if isinstance(params, Mapping):
        if n is None:
            raise ValueError("stack_params of a single dict needs the task count n")
        return {k: v.unsqueeze(0).expand(n, *v.shape) for k, v in params.items()}
    if not params:
        raise ValueError("stack_params needs at least one parameter dict")
    keys = list(params[0])
    return {k: torch.stack([p[k] for p in params]) for k in keys}


def unstack_params(params: Mapping[str, torch.Tensor]) -> list[Params]:
    """Split stacked parameters into one dict per task."""
    n = next(iter(params.values())).shape[0]
    return [{k: v[i] for k, v in params.items()} for i in range(n)]
