"""Build the policy and the meta-learner a config names: the one place that ties a
config to the classes in :mod:`maml_rl.agents` (the trainer and evaluation both use it).
"""

from __future__ import annotations

import gymnasium as gym
import torch

from maml_rl.agents.base import Agent
from maml_rl.agents.policies import CategoricalMLPPolicy, GaussianMLPPolicy, Policy
from maml_rl.config import Config
from maml_rl.seeding import init_seed
from maml_rl.tasks import make_family

__all__ = ["build_agent", "build_policy", "resolve_device"]


def resolve_device(device: str) -> torch.device:
    """``cpu`` / ``cuda`` / ``auto`` (CUDA when available) as a :class:`torch.device`."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but torch sees no CUDA device; use --device cpu (or auto)")
    return torch.device(device)


def build_policy(config: Config) -> Policy:
    """The policy for ``config.env`` (Gaussian for ``Box`` actions, categorical for
    ``Discrete``), initialised from the run's seed."""
    env = make_family(config.env.id, **config.env.kwargs)
    try:
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise ValueError(
            f"{config.env.id}: the MLP policies need a flat Box observation space, got {obs_space}"
        )
    torch.manual_seed(init_seed(config.seed))
    p = config.policy
    if isinstance(act_space, gym.spaces.Box) and len(act_space.shape) == 1:
        return GaussianMLPPolicy(
            obs_space.shape[0],
            act_space.shape[0],
            hidden_sizes=p.hidden_sizes,
            activation=p.activation,
            init_std=p.init_std,
            init=p.init,
        )
    if isinstance(act_space, gym.spaces.Discrete):
        return CategoricalMLPPolicy(
            obs_space.shape[0],
            int(act_space.n),
            hidden_sizes=p.hidden_sizes,
            activation=p.activation,
            init=p.init,
        )
    raise ValueError(
        f"{config.env.id}: unsupported action space {act_space} (need a flat Box or Discrete)"
    )


def build_agent(config: Config, policy: Policy, device: torch.device) -> Agent:
    """The meta-learner named by ``config.agent``, with its config sections."""
    if config.agent == "maml_trpo":
        from maml_rl.agents.maml_trpo import MAMLTRPO

        return MAMLTRPO(policy, config.maml, config.trpo, device=device)
    from maml_rl.agents.maml_ppo import MAMLPPO

    return MAMLPPO(policy, config.maml, config.ppo, device=device)
