"""The rollout engine every sampler backend runs: one shard, in lockstep, no grad.

A :class:`RolloutEngine` plays one :class:`~maml_rl.samplers.layout.Shard` of a
sample call to the end and writes it into its block of the batch arrays. The
``sync`` backend runs one engine on one shard covering everything, the ``process``
and ``ray`` backends one engine per worker. The engine is the same code
everywhere, so a batch does not depend on the backend; it does not depend on the
split either (see :mod:`maml_rl.samplers.layout` for the memory-layout half):

* **Randomness belongs to the episode, not to the worker.** Task ``i`` draws
  from ``SeedSequence(seed, spawn_key=(i,))`` alone: one child gives the reset
  seed of each of its ``E`` episodes, the other a ``[E, T, d]`` block of action
  noise (Gaussian noise, or Gumbel noise for the Gumbel-max trick with discrete
  actions). A worker holding only some episodes of task ``i`` draws the whole
  block and keeps its rows.

The engine talks to its envs only through the batched-env contract
:class:`maml_rl.vector.BatchedTaskEnv` (``set_tasks``, ``reset(seed=[...])``,
``step``), built by :func:`maml_rl.vector.make_task_env`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import cast

import numpy as np
import torch
from torch import nn

from maml_rl.samplers.layout import Shard, policy_slots
from maml_rl.samplers.spec import RolloutSpec, SampleRequest
from maml_rl.seeding import task_streams
from maml_rl.vector import BatchedTaskEnv, make_task_env

__all__ = ["RolloutEngine"]


Actor = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


def _actor(
    policy: nn.Module, params: dict[str, torch.Tensor], noise: torch.Tensor, discrete: bool
) -> Actor:
    """``actor(obs, t) -> (action, log_prob)`` for one sample call: the policy's own fused
    ``rollout_actor(params, noise)`` where it has one and it returns one (the MLP policies:
    no distribution objects, no per-step allocations, log-probabilities from the noise up
    front), else its distribution — the Gaussian reparameterised with the noise, or the
    Gumbel-max trick."""
    fused = getattr(policy, "rollout_actor", None)
    actor = fused(params, noise) if fused is not None else None
    if actor is not None:
        return cast(Actor, actor)

    def act(obs: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        dist = policy(obs, params)
        if discrete:
            action = torch.argmax(dist.logits + noise[t], dim=-1)
        else:
            action = dist.mean + dist.stddev * noise[t]
        return action, dist.log_prob(action)

    return act


class RolloutEngine:
    """Plays shards of sample calls: one batched env, one policy copy, no grad.

    The batched env is built on first use and kept while the shard size stays the
    same (in training every call has the same size).
    """

    def __init__(self, spec: RolloutSpec) -> None:
        spec.ensure_registered()
        self.spec = spec
        self.policy = spec.policy
        self._env: BatchedTaskEnv | None = None

    def _env_for(self, num_envs: int) -> BatchedTaskEnv:
        if self._env is None or self._env.num_envs != num_envs:
            if self._env is not None:
                self._env.close()
            spec = self.spec
            self._env = make_task_env(
                spec.env_id, num_envs, spec.horizon, spec.env_kwargs, spec.num_threads
            )
        return self._env

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    def _draws(
        self, shard: Shard, request: SampleRequest, slot0: int, slots: int
    ) -> tuple[list[int], torch.Tensor]:
        """Reset seeds ``[K]`` (task-major) and the noise ``[T, S, E, d]`` of a shard."""
        spec, e_all = self.spec, request.episodes_per_task
        e0, e1 = shard.episode_start, shard.episode_stop
        noise = torch.zeros(spec.horizon, slots, e_all, spec.noise_dim, dtype=spec.dtype)
        noise_np = noise.numpy()
        seeds: list[int] = []
        for i in range(shard.task_start, shard.task_stop):
            reset_seeds, block = task_streams(
                request.seed, i, e_all, spec.horizon, spec.noise_dim, spec.discrete
            )
            seeds += reset_seeds[e0:e1]
            noise_np[:, i - slot0, e0:e1] = block[e0:e1].transpose(1, 0, 2)
        return seeds, noise

    def run(self, shard: Shard, request: SampleRequest, out: Mapping[str, np.ndarray]) -> None:
        """Play every episode of ``shard`` and write it into ``out``.

        Args:
            shard: which episodes.
            request: the sample call.
            out: the shard's block of the batch arrays (see :meth:`BatchLayout.block`),
                ``[n, T, m, ...]`` and ``final_observations [n, m, obs_dim]``; they are
                zeroed first, so padding is zero.
        """
        spec, horizon = self.spec, self.spec.horizon
        n_all = request.num_tasks
        n, m, k_envs = shard.num_tasks, shard.num_episodes, shard.num_envs
        for a in out.values():
            a[...] = 0
        slot0, slot1 = policy_slots(
            shard.task_start,
            shard.task_stop,
            n_all,
            request.episodes_per_task,
            torch.empty((), dtype=spec.dtype).element_size(),
        )
        own_t = slice(shard.task_start - slot0, shard.task_stop - slot0)
        own_e = slice(shard.episode_start, shard.episode_stop)

        params = {
            name: torch.tensor(v)[slot0:slot1]  # a fresh copy: 64-byte aligned
            for name, v in request.params.items()
        }
        seeds, noise = self._draws(shard, request, slot0, slot1 - slot0)
        actor = _actor(self.policy, params, noise, spec.discrete)
        x = torch.zeros(slot1 - slot0, request.episodes_per_task, spec.obs_dim, dtype=spec.dtype)
        x_own = x.numpy()[own_t, own_e]

        env = self._env_for(k_envs)
        env.set_tasks(
            [t for t in request.tasks[shard.task_start : shard.task_stop] for _ in range(m)]
        )
        obs, _ = env.reset(seed=seeds)

        running = np.ones(k_envs, dtype=bool)
        all_running = True
        obs_out, act_out, rew_out = out["observations"], out["actions"], out["rewards"]
        lp_out, mask_out = out["log_probs"], out["mask"]
        success_out = out.get("success")
        term_out, trunc_out, final_out = (
            out["terminated"],
            out["truncated"],
            out["final_observations"],
        )
        with torch.no_grad():
            for t in range(horizon):
                flat = np.array(obs, dtype=np.float32).reshape(k_envs, spec.obs_dim)
                if not all_running:
                    flat[~running] = 0.0
                ob = flat.reshape(n, m, spec.obs_dim)
                x_own[...] = ob
                obs_out[:, t] = ob

                action, log_prob = actor(x, t)
                act = action.numpy()[own_t, own_e].reshape(k_envs, *action.shape[2:])
                lp = log_prob.numpy()[own_t, own_e].reshape(k_envs)
                if not all_running:
                    act[~running] = 0
                    lp = np.where(running, lp, 0.0)

                obs, reward, terminated, truncated, info = env.step(act)
                terminated = np.asarray(terminated, dtype=bool) & running
                truncated = np.asarray(truncated, dtype=bool) & running
                if t == horizon - 1:  # the sampler's horizon is the time limit
                    truncated |= running & ~terminated
                reward = np.asarray(reward, dtype=np.float32)
                if not all_running:
                    reward = np.where(running, reward, np.float32(0.0))

                act_out[:, t] = act.reshape(n, m, *act.shape[1:])
                lp_out[:, t] = lp.reshape(n, m)
                rew_out[:, t] = reward.reshape(n, m)
                term_out[:, t] = terminated.reshape(n, m)
                trunc_out[:, t] = truncated.reshape(n, m)
                mask_out[:, t] = running.reshape(n, m)
                if success_out is not None:
                    succeeded = np.asarray(info.get("success", False), dtype=bool) & running
                    success_out[:, t] = np.broadcast_to(succeeded, running.shape).reshape(n, m)

                ended = terminated | truncated
                if ended.any():
                    final = np.asarray(obs, dtype=np.float32).reshape(k_envs, spec.obs_dim)
                    final_out[ended.reshape(n, m)] = final[ended]
                    running &= ~ended
                    all_running = False
                    if not running.any():
                        break
