"""The rollout engine every sampler backend runs, and the worker entry points.

A sample call is split into :class:`Shard` s (blocks of whole tasks, or episode
ranges of one task when there are more workers than tasks); a
:class:`RolloutEngine` plays one shard to the end and writes it into its block of
the batch arrays. The ``sync`` backend runs one engine on one shard covering
everything, the ``process`` and ``ray`` backends one engine per worker. The
engine is the same code everywhere, so a batch does not depend on the backend; it
does not depend on the split either, for two reasons:

* **Randomness belongs to the episode, not to the worker.** Task ``i`` draws
  from ``SeedSequence(seed, spawn_key=(i,))`` alone: one child gives the reset
  seed of each of its ``E`` episodes, the other a ``[E, T, d]`` block of action
  noise (Gaussian noise, or Gumbel noise for the Gumbel-max trick with discrete
  actions). A worker holding only some episodes of task ``i`` draws the whole
  block and keeps its rows.
* **The policy sees the same numbers in the same memory layout.** A shard
  evaluates the policy on ``[S, E, obs_dim]`` observations of ``S`` consecutive
  task *slots* (its own tasks, maybe a few neighbours whose outputs it
  discards), with parameters that are views of the full stacked ``[N, ...]``
  tensors. Two properties of the CPU kernels (measured with torch 2.x and MKL)
  make both choices necessary. (1) A batched matmul may round differently when a
  matrix starts at another offset modulo 64 bytes. Task ``i``'s block of any
  ``[S, E, d]`` activation starts ``(i - slot0) * E * d`` floats into a fresh
  (64-byte aligned) tensor, against ``i * E * d`` in the unsplit batch; starting
  the slots at a multiple of ``16 / gcd(E, 16)`` tasks makes the two congruent for
  every width ``d``. (2) A batch of *one* matrix with one output column goes
  through another kernel than a batch of several, so a shard always evaluates
  at least two slots. With both, each row's result is bitwise independent of the
  split, which ``tests/test_sampler.py`` checks across backends and worker counts.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import pickle
import signal
import traceback
from collections.abc import Mapping, Sequence
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from maml_rl.batch import EpisodeBatch
from maml_rl.seeding import task_streams
from maml_rl.tasks import Task, family_class, register_family
from maml_rl.vector import BatchedTaskEnv, make_task_env

__all__ = [
    "ALIGN_BYTES",
    "BatchLayout",
    "RayWorker",
    "RolloutEngine",
    "RolloutSpec",
    "SampleRequest",
    "Shard",
    "partition",
    "policy_slots",
    "process_worker_main",
    "task_streams",
]

#: Alignment (bytes) whose offsets the policy's per-task blocks keep across splits.
ALIGN_BYTES = 64


def policy_slots(
    task_start: int, task_stop: int, num_tasks: int, episodes: int, itemsize: int
) -> tuple[int, int]:
    """The task slots ``[slot0, slot1)`` a shard of tasks ``[task_start, task_stop)``
    evaluates the policy on (see the module docstring).

    ``slot0`` is rounded down to a multiple of ``q = a / gcd(E, a)`` tasks, where
    ``a`` is the number of elements in :data:`ALIGN_BYTES`, so that each task's
    block starts at the same offset modulo 64 bytes as in the unsplit batch; and
    there are at least two slots when there are at least two tasks.
    """
    per_line = max(ALIGN_BYTES // itemsize, 1)
    q = per_line // math.gcd(episodes, per_line)
    slot0, slot1 = task_start // q * q, task_stop
    if slot1 - slot0 == 1 and num_tasks > 1:
        if slot1 < num_tasks:
            slot1 += 1
        else:
            slot0 = (slot0 - 1) // q * q
    return slot0, slot1


# -- what to run -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RolloutSpec:
    """Everything a worker needs to build its envs and policy (picklable).

    Attributes:
        env_id: the registered task-family id.
        family_cls: the family's env class (pickled by reference, which imports
            the module that registers it in a fresh worker process).
        registered_max_steps: the registered time limit (to re-register in a worker).
        registered_kwargs: the registered constructor kwargs (idem).
        env_kwargs: extra constructor kwargs of every env.
        horizon: ``T``, the number of steps of an episode (the time limit).
        policy: a CPU copy of the policy module; only its structure is used, the
            parameters come with each sample call.
        obs_dim: observation size.
        act_dim: action size of a ``Box`` action space; ``None`` for ``Discrete``.
        num_actions: number of actions of a ``Discrete`` action space, else ``None``.
        param_shapes: the policy's parameter names and (unstacked) shapes.
        observation_space: the single env's observation space.
        action_space: the single env's action space.
    """

    env_id: str
    family_cls: type
    registered_max_steps: int | None
    registered_kwargs: dict[str, Any]
    env_kwargs: dict[str, Any]
    horizon: int
    policy: nn.Module
    obs_dim: int
    act_dim: int | None
    num_actions: int | None
    param_shapes: dict[str, tuple[int, ...]]
    observation_space: gym.spaces.Box
    action_space: gym.spaces.Space

    @property
    def discrete(self) -> bool:
        return self.num_actions is not None

    @property
    def noise_dim(self) -> int:
        """Noise numbers per step: action dims (Gaussian) or actions (Gumbel-max)."""
        return int(self.num_actions if self.num_actions is not None else self.act_dim)  # type: ignore[arg-type]

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.policy.parameters())).dtype

    @classmethod
    def create(
        cls,
        env_id: str,
        policy: nn.Module,
        env_kwargs: Mapping[str, Any] | None,
        max_episode_steps: int | None,
    ) -> RolloutSpec:
        """Validate the env and the policy against each other and build the spec."""
        family = family_class(env_id)  # ValueError with a suggestion for an unknown id
        if not isinstance(policy, nn.Module):
            raise ValueError(
                f"policy must be a torch.nn.Module (e.g. GaussianMLPPolicy), got "
                f"{type(policy).__name__}"
            )
        if env_kwargs is not None and not isinstance(env_kwargs, Mapping):
            raise ValueError(f"env_kwargs must be a mapping or None, got {env_kwargs!r}")
        gym_spec = gym.spec(env_id)
        horizon = max_episode_steps if max_episode_steps is not None else gym_spec.max_episode_steps
        if (
            horizon is None
            or isinstance(horizon, bool)
            or not isinstance(horizon, (int, np.integer))
            or horizon < 1
        ):
            raise ValueError(
                f"max_episode_steps must be an integer ≥ 1 (or None for the registered "
                f"limit of {env_id}: {gym_spec.max_episode_steps}), got {max_episode_steps!r}"
            )
        try:
            env = gym.make(env_id, disable_env_checker=True, **dict(env_kwargs or {}))
        except TypeError as exc:  # an unexpected constructor argument
            raise ValueError(f"env_kwargs {env_kwargs!r} do not fit {env_id}: {exc}") from None
        obs_space, act_space = env.observation_space, env.action_space
        env.close()
        if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
            raise ValueError(
                f"the sampler needs a flat Box observation space, {env_id} has {obs_space}"
            )
        if isinstance(act_space, gym.spaces.Box) and len(act_space.shape) == 1:
            act_dim, num_actions = int(act_space.shape[0]), None
        elif isinstance(act_space, gym.spaces.Discrete) and int(act_space.start) == 0:
            act_dim, num_actions = None, int(act_space.n)
        else:
            raise ValueError(
                f"the sampler needs a flat Box or a Discrete (from 0) action space, "
                f"{env_id} has {act_space}"
            )
        own = {name: p.detach() for name, p in policy.named_parameters()}
        if not own:
            raise ValueError("the policy has no parameters")
        cpu_policy = _cpu_copy(policy)
        spec = cls(
            env_id=env_id,
            family_cls=family,
            registered_max_steps=gym_spec.max_episode_steps,
            registered_kwargs=dict(gym_spec.kwargs),
            env_kwargs=dict(env_kwargs or {}),
            horizon=int(horizon),
            policy=cpu_policy,
            obs_dim=int(obs_space.shape[0]),
            act_dim=act_dim,
            num_actions=num_actions,
            param_shapes={name: tuple(p.shape) for name, p in own.items()},
            observation_space=obs_space,
            action_space=act_space,
        )
        spec._probe_policy()
        return spec

    def _probe_policy(self) -> None:
        """Check, once, that the policy maps this env's observations to its actions."""
        stacked = {
            name: p.detach().unsqueeze(0).expand(2, *p.shape).contiguous()
            for name, p in self.policy.named_parameters()
        }
        obs = torch.zeros(2, 3, self.obs_dim, dtype=self.dtype)
        try:
            with torch.no_grad():
                dist = self.policy(obs, stacked)
        except Exception as exc:
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(
                f"the policy cannot act in {self.env_id} (observations of size "
                f"{self.obs_dim}, evaluated with stacked per-task parameters): {first_line}"
            ) from exc
        batch = (2, 3)
        if self.discrete:
            logits = getattr(dist, "logits", None)
            if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (
                *batch,
                self.num_actions,
            ):
                raise ValueError(
                    f"{self.env_id} has {self.num_actions} discrete actions: the policy must "
                    f"return a Categorical over them (e.g. CategoricalMLPPolicy), got "
                    f"{type(dist).__name__}"
                )
            sample = torch.zeros(batch, dtype=torch.long)
        else:
            base = getattr(dist, "base_dist", dist)
            if not isinstance(base, torch.distributions.Normal) or tuple(dist.mean.shape) != (
                *batch,
                self.act_dim,
            ):
                raise ValueError(
                    f"{self.env_id} has {self.act_dim}-dimensional continuous actions: the "
                    f"policy must return a Gaussian over them (e.g. GaussianMLPPolicy), got "
                    f"{type(dist).__name__}"
                )
            sample = dist.mean
        if tuple(dist.log_prob(sample).shape) != batch:
            raise ValueError(
                "the policy's log_prob must be summed over action dimensions (wrap a Normal "
                "in torch.distributions.Independent(..., 1))"
            )

    def ensure_registered(self) -> None:
        """Register the family in this process if its module did not already do so."""
        if self.env_id not in gym.registry:
            register_family(
                self.env_id,
                self.family_cls,
                max_episode_steps=self.registered_max_steps,
                **self.registered_kwargs,
            )

    # -- per-call input ------------------------------------------------------------
    def request(
        self,
        tasks: Sequence[Any],
        params: Any,
        episodes_per_task: int,
        seed: int,
    ) -> SampleRequest:
        """Validate the arguments of ``Sampler.sample`` and package them for the workers."""
        task_cls = self.family_cls.task_cls  # type: ignore[attr-defined]
        if isinstance(tasks, (str, bytes, Mapping, Task)) or not isinstance(tasks, Sequence):
            raise ValueError(
                f"tasks must be a list of {task_cls.__name__} (one per task), got "
                f"{type(tasks).__name__}"
            )
        if len(tasks) == 0:
            raise ValueError("tasks is empty: sample needs at least one task")
        checked = [task_cls.coerce(t) for t in tasks]
        if not _is_int(episodes_per_task) or episodes_per_task < 1:
            raise ValueError(f"episodes_per_task must be an integer ≥ 1, got {episodes_per_task!r}")
        if not _is_int(seed) or seed < 0:
            raise ValueError(f"seed must be an integer ≥ 0, got {seed!r}")
        return SampleRequest(
            tasks=checked,
            params=self.stack_params(params, len(checked)),
            episodes_per_task=int(episodes_per_task),
            seed=int(seed),
        )

    def stack_params(self, params: Any, num_tasks: int) -> dict[str, np.ndarray]:
        """Parameters as ``{name: [N, *shape]}`` CPU arrays of the policy's dtype.

        Accepts one shared (unstacked) dict, a stacked dict (leading dim ``N``) or a
        list of ``N`` unstacked dicts; anything else is a one-line ``ValueError``.
        """
        n = num_tasks
        if isinstance(params, Mapping):
            self._check_keys(params, "params")
            kinds = {}
            for name, shape in self.param_shapes.items():
                got = tuple(_as_tensor(params[name], name).shape)
                if got == shape:
                    kinds[name] = "shared"
                elif got == (n, *shape):
                    kinds[name] = "stacked"
                else:
                    raise ValueError(
                        f"params[{name!r}] must have shape {shape} (shared by all tasks) or "
                        f"{(n, *shape)} (one row per task, {n} tasks), got {got}"
                    )
            if len(set(kinds.values())) > 1:
                raise ValueError(
                    f"params mixes shared and per-task (stacked) tensors: {kinds}; "
                    "stack all of them or none"
                )
            stacked = "stacked" in kinds.values()
            return {
                name: self._array(params[name], name, None if stacked else n)
                for name in self.param_shapes
            }
        if isinstance(params, Sequence) and not isinstance(params, (str, bytes)):
            if len(params) != n:
                raise ValueError(
                    f"a list of per-task params must have one dict per task ({n}), "
                    f"got {len(params)}"
                )
            rows: dict[str, list[np.ndarray]] = {name: [] for name in self.param_shapes}
            for i, p in enumerate(params):
                if not isinstance(p, Mapping):
                    raise ValueError(
                        f"params[{i}] must be a dict of tensors, got {type(p).__name__}"
                    )
                self._check_keys(p, f"params[{i}]")
                for name, shape in self.param_shapes.items():
                    got = tuple(_as_tensor(p[name], name).shape)
                    if got != shape:
                        raise ValueError(
                            f"params[{i}][{name!r}] must have shape {shape}, got {got}"
                        )
                    rows[name].append(self._array(p[name], name, None))
            return {name: np.stack(r) for name, r in rows.items()}
        raise ValueError(
            "params must be a dict of tensors (shared or stacked per task) or a list of one "
            f"dict per task, got {type(params).__name__}"
        )

    def _check_keys(self, params: Mapping[str, Any], what: str) -> None:
        if set(params) != set(self.param_shapes):
            missing = sorted(set(self.param_shapes) - set(params))
            extra = sorted(str(k) for k in set(params) - set(self.param_shapes))
            raise ValueError(
                f"{what} do not match the policy's parameters: missing {missing}, "
                f"unexpected {extra}"
            )

    def _array(self, value: Any, name: str, broadcast: int | None) -> np.ndarray:
        t = _as_tensor(value, name).detach().to(device="cpu", dtype=self.dtype)
        if broadcast is not None:
            t = t.unsqueeze(0).expand(broadcast, *t.shape)
        return t.contiguous().numpy()


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise ValueError(f"params[{name!r}] must be a tensor, got {type(value).__name__}")


def _cpu_copy(policy: nn.Module) -> nn.Module:
    """A detached CPU copy of the policy for the workers (the learner's may be on a GPU)."""
    clone = copy.deepcopy(policy).to("cpu")
    clone.requires_grad_(False)
    return clone.eval()


@dataclasses.dataclass(frozen=True)
class SampleRequest:
    """One sample call, validated: ``N`` tasks, their stacked parameters, ``E``, the seed."""

    tasks: list[Task]
    params: dict[str, np.ndarray]
    episodes_per_task: int
    seed: int

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)


# -- how to split it -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Shard:
    """Episodes ``[episode_start, episode_stop)`` of tasks ``[task_start, task_stop)``.

    A shard holds whole tasks (``episode_start = 0, episode_stop = E``) or, when there
    are more workers than tasks, part of the episodes of one task.
    """

    task_start: int
    task_stop: int
    episode_start: int
    episode_stop: int

    @property
    def num_tasks(self) -> int:
        return self.task_stop - self.task_start

    @property
    def num_episodes(self) -> int:
        return self.episode_stop - self.episode_start

    @property
    def num_envs(self) -> int:
        return self.num_tasks * self.num_episodes


def partition(num_tasks: int, episodes: int, num_workers: int) -> list[Shard]:
    """Split ``num_tasks × episodes`` episodes into at most ``num_workers`` shards.

    Whole tasks when there are at least as many tasks as workers (contiguous blocks
    whose sizes differ by at most one); otherwise each task's episodes are split
    over ``num_workers // num_tasks`` or one more workers. At most
    ``num_tasks * episodes`` shards (one episode each) are made.
    """
    n, e = num_tasks, episodes
    w = min(num_workers, n * e)
    if w <= n:
        bounds = [n * k // w for k in range(w + 1)]
        return [Shard(bounds[k], bounds[k + 1], 0, e) for k in range(w)]
    shards = []
    for i in range(n):
        pieces = w // n + (1 if i < w % n else 0)
        cuts = [e * k // pieces for k in range(pieces + 1)]
        shards += [Shard(i, i + 1, cuts[k], cuts[k + 1]) for k in range(pieces)]
    return shards


# -- where it goes -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BatchLayout:
    """Shapes and dtypes of one batch's arrays, and their place in a flat buffer.

    Arrays are task-major like :class:`~maml_rl.batch.EpisodeBatch`: ``[N, T, E, ...]``
    (``final_observations``: ``[N, E, obs_dim]``).
    """

    num_tasks: int
    horizon: int
    episodes: int
    obs_dim: int
    act_dim: int | None  # None: discrete actions, stored as int64 indices

    def fields(self) -> list[tuple[str, tuple[int, ...], np.dtype]]:
        n, t, e = self.num_tasks, self.horizon, self.episodes
        act_shape = (n, t, e) if self.act_dim is None else (n, t, e, self.act_dim)
        act_dtype = np.dtype(np.int64) if self.act_dim is None else np.dtype(np.float32)
        f32, b = np.dtype(np.float32), np.dtype(np.bool_)
        return [
            ("observations", (n, t, e, self.obs_dim), f32),
            ("actions", act_shape, act_dtype),
            ("rewards", (n, t, e), f32),
            ("log_probs", (n, t, e), f32),
            ("terminated", (n, t, e), b),
            ("truncated", (n, t, e), b),
            ("mask", (n, t, e), f32),
            ("final_observations", (n, e, self.obs_dim), f32),
        ]

    def _offsets(self) -> list[tuple[str, tuple[int, ...], np.dtype, int]]:
        out, offset = [], 0
        for name, shape, dtype in self.fields():
            out.append((name, shape, dtype, offset))
            size = int(np.prod(shape)) * dtype.itemsize
            offset += -(-size // 64) * 64  # keep every array 64-byte aligned
        return out

    @property
    def nbytes(self) -> int:
        _, shape, dtype, offset = self._offsets()[-1]
        return offset + int(np.prod(shape)) * dtype.itemsize

    def allocate(self) -> dict[str, np.ndarray]:
        """Fresh zeroed arrays."""
        return {name: np.zeros(shape, dtype) for name, shape, dtype in self.fields()}

    def views(self, buffer: Any) -> dict[str, np.ndarray]:
        """Arrays laid out in ``buffer`` (e.g. a shared-memory block of ``nbytes``)."""
        return {
            name: np.ndarray(shape, dtype, buffer=buffer, offset=offset)
            for name, shape, dtype, offset in self._offsets()
        }

    @staticmethod
    def block(arrays: Mapping[str, np.ndarray], shard: Shard) -> dict[str, np.ndarray]:
        """Views of a shard's part of full-batch arrays: ``[n, T, m, ...]`` / ``[n, m, ...]``."""
        tasks = slice(shard.task_start, shard.task_stop)
        eps = slice(shard.episode_start, shard.episode_stop)
        return {
            name: a[tasks, eps] if name == "final_observations" else a[tasks, :, eps]
            for name, a in arrays.items()
        }

    def shard_layout(self, shard: Shard) -> BatchLayout:
        """The layout of a shard's block alone (what a Ray worker sends back)."""
        return dataclasses.replace(self, num_tasks=shard.num_tasks, episodes=shard.num_episodes)

    def to_batch(self, arrays: Mapping[str, np.ndarray], tasks: list[Task]) -> EpisodeBatch:
        """Wrap arrays (owned by the caller from now on) as an :class:`EpisodeBatch`."""
        return EpisodeBatch(
            tasks=list(tasks), **{name: torch.from_numpy(a) for name, a in arrays.items()}
        )


# -- randomness ----------------------------------------------------------------------


# -- how it runs ---------------------------------------------------------------------


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
            self._env = make_task_env(spec.env_id, num_envs, spec.horizon, spec.env_kwargs)
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

                dist = self.policy(x, params)
                if spec.discrete:
                    action = torch.argmax(dist.logits + noise[t], dim=-1)
                else:
                    action = dist.mean + dist.stddev * noise[t]
                log_prob = dist.log_prob(action)
                act = action.numpy()[own_t, own_e].reshape(k_envs, *action.shape[2:])
                lp = log_prob.numpy()[own_t, own_e].reshape(k_envs)
                if not all_running:
                    act[~running] = 0
                    lp = np.where(running, lp, 0.0)

                obs, reward, terminated, truncated, _ = env.step(act)
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

                ended = terminated | truncated
                if ended.any():
                    final = np.asarray(obs, dtype=np.float32).reshape(k_envs, spec.obs_dim)
                    final_out[ended.reshape(n, m)] = final[ended]
                    running &= ~ended
                    all_running = False
                    if not running.any():
                        break


# -- worker entry points -----------------------------------------------------------------


def process_worker_main(conn: Connection, spec_bytes: bytes) -> None:
    """Main loop of a ``process``-backend worker (started with the spawn method).

    Protocol (over ``conn``): the worker answers ``("ready", pid)`` or
    ``("error", text)`` once built, then for each ``(shard, request, layout,
    shm_name)`` plays the shard into the shared-memory block ``shm_name`` and
    answers ``("ok", None)`` or ``("error", text)``. ``None`` or a closed pipe
    ends it.
    """
    # Ctrl-C in a terminal reaches the whole process group; the parent decides
    # when workers stop, so they ignore it rather than die mid-write.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    try:
        engine = RolloutEngine(pickle.loads(spec_bytes))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ready", os.getpid()))
    shm: shared_memory.SharedMemory | None = None
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):  # the parent is gone
                break
            if msg is None:
                break
            shard, request, layout, shm_name = msg
            try:
                if shm is None or shm.name != shm_name:
                    if shm is not None:
                        shm.close()
                        shm = None
                    shm = shared_memory.SharedMemory(name=shm_name)
                _run_into(engine, shard, request, layout, shm)
                reply: tuple[str, Any] = ("ok", None)
            except Exception:
                reply = ("error", traceback.format_exc())
            conn.send(reply)
    finally:
        engine.close()
        if shm is not None:
            shm.close()


def _run_into(
    engine: RolloutEngine,
    shard: Shard,
    request: SampleRequest,
    layout: BatchLayout,
    shm: shared_memory.SharedMemory,
) -> None:
    # A function of its own so that the views into shm.buf die with its frame
    # (a live view makes shm.close() fail).
    engine.run(shard, request, layout.block(layout.views(shm.buf), shard))


class RayWorker:
    """A Ray actor's state (``ray.remote`` is applied by the sampler): one engine."""

    def __init__(self, spec_bytes: bytes) -> None:
        torch.set_num_threads(1)
        self.engine = RolloutEngine(pickle.loads(spec_bytes))

    def pid(self) -> int:
        return os.getpid()

    def run(
        self, shard: Shard, request: SampleRequest, layout: BatchLayout
    ) -> dict[str, np.ndarray]:
        """Play a shard; returns its block ``[n, T, m, ...]`` of the batch arrays."""
        block = layout.shard_layout(shard).allocate()
        self.engine.run(shard, request, block)
        return block
