"""Vectorised multi-task rollouts: ``sampler.sample(tasks, params, E, seed) -> EpisodeBatch``.

One sample call plays ``E`` episodes of each of ``N`` tasks, all ``N × E``
environments in lockstep: every step evaluates the policy *once* for all of them,
task ``i``'s observations with task ``i``'s parameters (stacked parameters, one
batched matmul per layer), and steps them as one batched env (the family's
``make_batched`` when it has one, else :class:`maml_rl.vector.TaskVectorEnv`).

Three backends share one rollout engine (:mod:`maml_rl.samplers.engine`):

========  ==========================================================  ======================
backend   where the envs and the policy copy run                       for
========  ==========================================================  ======================
sync      the calling process                                          cheap envs, tests
process   ``num_workers`` local processes (spawn), shared-memory out   MuJoCo on one machine
ray       ``num_workers`` Ray actors, local or on a cluster            more than one machine
========  ==========================================================  ======================

Work is split by whole tasks (episodes of one task only when there are more
workers than tasks), and the parameters travel once per call. Every random number
of episode ``e`` of task ``i`` derives from ``np.random.SeedSequence(seed,
spawn_key=(i,))``, never from the worker layout, so **the same seed gives the same
batch, bit for bit, on every backend and every worker count** (on one machine; Ray
nodes with other CPUs or library builds may round differently).

Example::

    policy = GaussianMLPPolicy(obs_dim=17, act_dim=6, hidden_sizes=(100, 100))
    with make_sampler("MetaRL/HalfCheetahVel-v0", policy, backend="process",
                      num_workers=4) as sampler:
        batch = sampler.sample(tasks, policy.params(), episodes_per_task=20, seed=0)

Modules: :mod:`~maml_rl.samplers.base` (the interface and its thread policy),
:mod:`~maml_rl.samplers.sync`, :mod:`~maml_rl.samplers.process`,
:mod:`~maml_rl.samplers.ray` (the backends), :mod:`~maml_rl.samplers.engine` (the
lockstep rollout loop), :mod:`~maml_rl.samplers.spec` (what to run, validated) and
:mod:`~maml_rl.samplers.layout` (the split into shards and the batch arrays).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import nn

from maml_rl.samplers.base import Sampler, WorkerDied
from maml_rl.samplers.engine import RolloutEngine
from maml_rl.samplers.layout import BatchLayout, Shard, partition, policy_slots
from maml_rl.samplers.process import ProcessSampler
from maml_rl.samplers.ray import RAY_CONNECT_TIMEOUT_S, RaySampler
from maml_rl.samplers.spec import RolloutSpec, SampleRequest
from maml_rl.samplers.sync import SyncSampler
from maml_rl.threads import available_cores

__all__ = [
    "BACKENDS",
    "BatchLayout",
    "ProcessSampler",
    "RaySampler",
    "RolloutEngine",
    "RolloutSpec",
    "SampleRequest",
    "Sampler",
    "Shard",
    "SyncSampler",
    "WorkerDied",
    "make_sampler",
    "partition",
    "policy_slots",
]

#: The backend names accepted by :func:`make_sampler`.
BACKENDS = ("sync", "process", "ray")


def make_sampler(
    env_id: str,
    policy: nn.Module,
    *,
    backend: str = "sync",
    num_workers: int = 1,
    ray_address: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    max_episode_steps: int | None = None,
    num_threads: int | None = None,
    restart_workers: bool = False,
    ray_connect_timeout_s: float = RAY_CONNECT_TIMEOUT_S,
) -> Sampler:
    """Build a sampler for a task family.

    Args:
        env_id: a registered task-family id, e.g. ``"MetaRL/HalfCheetahVel-v0"``.
        policy: the policy module (e.g. ``GaussianMLPPolicy``); its forward must take
            ``(obs, params)`` with stacked per-task params. Only its structure is
            used (a CPU copy goes to the workers); parameters come with each call.
        backend: ``"sync"``, ``"process"`` or ``"ray"``.
        num_workers: worker processes / Ray actors (``sync`` always uses the calling
            process and ignores it).
        ray_address: address of a running Ray cluster (``ray start --head`` prints
            it); ``None`` starts a local Ray runtime. Only for ``backend="ray"``.
        env_kwargs: keyword arguments of the env constructor.
        max_episode_steps: the horizon ``T``; defaults to the registered time limit.
        num_threads: threads on which each sampling process steps its envs, for
            families stepped natively on a thread pool (the MuJoCo families with
            mujoco ≥ 3.17); ``None``: this machine's cores for ``sync``, divided among
            the workers for ``process``, 1 for ``ray`` (each actor reserves one CPU).
            The batch does not depend on it.
        restart_workers: ``process``/``ray``: replace a worker that dies and play its
            episodes again (the same batch, bit for bit); ``False``: a death raises
            :class:`WorkerDied`.
        ray_connect_timeout_s: ``ray`` with an address: how long the cluster has to
            answer before a one-line ``ValueError`` (nothing listening fails at once).

    Returns:
        A :class:`Sampler`; close it (or use it as a context manager) to stop workers.

    Raises:
        ValueError: unknown backend or family, ``num_workers < 1``, a policy that
            does not fit the env's spaces, no Ray cluster at ``ray_address``, ...
        ImportError: ``backend="ray"`` without Ray installed.
    """
    if backend not in BACKENDS:
        raise ValueError(
            f"unknown sampler backend {backend!r}; choose one of {', '.join(BACKENDS)}"
        )
    if (
        isinstance(num_workers, bool)
        or not isinstance(num_workers, (int, np.integer))
        or num_workers < 1
    ):
        raise ValueError(f"num_workers must be an integer ≥ 1, got {num_workers!r}")
    if ray_address is not None and backend != "ray":
        raise ValueError(
            f"ray_address is only used by backend='ray', got backend={backend!r}; "
            "use backend='ray' or drop the address"
        )
    if num_threads is not None and (
        isinstance(num_threads, bool)
        or not isinstance(num_threads, (int, np.integer))
        or num_threads < 1
    ):
        raise ValueError(f"num_threads must be an integer ≥ 1 or None, got {num_threads!r}")
    if num_threads is None:
        num_threads = {
            "sync": available_cores(),
            "process": max(1, available_cores() // int(num_workers)),
            "ray": 1,
        }[backend]
    spec = dataclasses.replace(
        RolloutSpec.create(env_id, policy, env_kwargs, max_episode_steps),
        num_threads=int(num_threads),
    )
    if backend == "sync":
        return SyncSampler(spec)
    if backend == "process":
        return ProcessSampler(spec, int(num_workers), restart_workers)
    return RaySampler(spec, int(num_workers), ray_address, restart_workers, ray_connect_timeout_s)
