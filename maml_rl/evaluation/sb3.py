"""Stable-Baselines3 PPO from scratch on one task: the *sb3_ppo* baseline's learner.

How much standard RL it takes to match a few adaptation steps: PPO trained from
scratch on one task with a budget of env steps, then scored on episodes with
stochastic actions as the MAML policies are. The budgets, tasks and seeds are the
baseline runner's (:mod:`maml_rl.evaluation.baselines`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from maml_rl.tasks import Task, unwrap_family

__all__ = ["SB3Result", "sb3_hyperparameters", "sb3_ppo_on_task"]


@dataclasses.dataclass(frozen=True)
class SB3Result:
    """SB3 PPO trained on one task, then evaluated.

    Attributes:
        returns: ``[E]`` undiscounted returns of the evaluation episodes (stochastic
            actions, as the MAML policies are evaluated).
        env_steps: environment steps PPO actually trained for (whole rollouts, so at
            least the budget).
    """

    returns: np.ndarray
    env_steps: int


def sb3_hyperparameters(budget: int) -> dict[str, int]:
    """PPO's ``n_steps`` and ``batch_size`` for a training budget of ``budget`` env steps.

    SB3's defaults (2048, 64) adjusted so that whole rollouts add up to the budget:
    ``r = ⌈budget / 2048⌉`` rollouts of ``n_steps = ⌈budget / r⌉`` steps (PPO trains
    in whole rollouts, so it may overshoot by less than ``r`` steps), and a minibatch
    size that divides the rollout (the largest divisor ≤ 64; with none ≥ 8, 64 and a
    truncated last minibatch). At least 2 steps (PPO needs 2 samples per minibatch).
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"the SB3 budget must be an integer ≥ 1 env steps, got {budget!r}")
    rollouts = -(-budget // 2048)
    n_steps = max(2, -(-budget // rollouts))  # PPO normalises advantages: ≥ 2 samples
    divisor = max(d for d in range(1, min(64, n_steps) + 1) if n_steps % d == 0)
    batch_size = divisor if divisor >= 8 or n_steps < 8 else min(64, n_steps)
    return {"n_steps": n_steps, "batch_size": batch_size}


def sb3_ppo_on_task(
    env_id: str,
    task: Task,
    *,
    budget: int,
    eval_seeds: Sequence[int],
    seed: int,
    env_kwargs: Mapping[str, Any] | None = None,
    max_episode_steps: int | None = None,
) -> SB3Result:
    """Train Stable-Baselines3 PPO from scratch on one task, then play it.

    SB3's PPO (``MlpPolicy``, default hyperparameters except ``n_steps`` and
    ``batch_size``, chosen by :func:`sb3_hyperparameters` so that whole rollouts add
    up to the budget) on the registered single env fixed to ``task``, for ``budget``
    environment steps. It is then evaluated on ``len(eval_seeds)`` episodes with
    stochastic actions, as the MAML policies are, each reset with its seed. Note that
    SB3 seeds the global ``random``/``numpy``/``torch`` generators.

    Args:
        env_id: the registered task family.
        task: the task to learn.
        budget: environment steps to train for (≥ 1).
        eval_seeds: one reset seed per evaluation episode.
        seed: SB3's seed, in ``[0, 2³²)`` (its torch/numpy/env randomness).
        env_kwargs: the env's constructor arguments.
        max_episode_steps: the time limit (default: the registered one).
    """
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    def make() -> gym.Env:
        env = gym.make(env_id, max_episode_steps=max_episode_steps, **dict(env_kwargs or {}))
        unwrap_family(env).set_task(task)
        return Monitor(env)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        vec = DummyVecEnv([make])
        hp = sb3_hyperparameters(budget)
        model = PPO("MlpPolicy", vec, n_steps=hp["n_steps"], batch_size=hp["batch_size"],
                    seed=seed, device="cpu", verbose=0)  # fmt: skip
        # A logger with no outputs: SB3's default one creates an empty <tmp>/SB3-<time>
        # folder on every learn() call, and nothing is logged from here anyway.
        model.set_logger(Logger(folder=None, output_formats=[]))
        model.learn(total_timesteps=budget)
        vec.close()
        env = make()
        returns = []
        for s in eval_seeds:
            obs, _ = env.reset(seed=int(s))
            total, done = 0.0, False
            while not done:
                action, _ = model.predict(obs, deterministic=False)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
        env.close()
    finally:
        torch.set_num_threads(threads)
    return SB3Result(np.asarray(returns, dtype=np.float64), int(model.num_timesteps))
