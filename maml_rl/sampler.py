"""Vectorised multi-task rollouts: ``sampler.sample(tasks, params, E, seed) -> EpisodeBatch``.

One sample call plays ``E`` episodes of each of ``N`` tasks, all ``N × E``
environments in lockstep: every step evaluates the policy *once* for all of them,
task ``i``'s observations with task ``i``'s parameters (stacked parameters, one
batched matmul per layer), and steps them as one batched env (the family's
``make_batched`` when it has one, else :class:`maml_rl.vector.TaskVectorEnv`).

Three backends share one rollout engine (:mod:`maml_rl._workers`):

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
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing as mp
import os
import pickle
import signal
import threading
import weakref
from collections.abc import Mapping, Sequence
from multiprocessing import shared_memory
from multiprocessing.connection import Connection, wait
from types import TracebackType
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from maml_rl._workers import (
    BatchLayout,
    RayWorker,
    RolloutEngine,
    RolloutSpec,
    SampleRequest,
    Shard,
    partition,
    process_worker_main,
)
from maml_rl.batch import EpisodeBatch
from maml_rl.tasks import Task

__all__ = ["BACKENDS", "Sampler", "make_sampler"]

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

    Returns:
        A :class:`Sampler`; close it (or use it as a context manager) to stop workers.

    Raises:
        ValueError: unknown backend or family, ``num_workers < 1``, a policy that
            does not fit the env's spaces, ...
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
    spec = RolloutSpec.create(env_id, policy, env_kwargs, max_episode_steps)
    if backend == "sync":
        return SyncSampler(spec)
    if backend == "process":
        return ProcessSampler(spec, int(num_workers))
    return RaySampler(spec, int(num_workers), ray_address)


class Sampler:
    """Collects ``E`` episodes of each of ``N`` tasks as one :class:`EpisodeBatch`.

    Built by :func:`make_sampler`; the backends differ only in where the work runs.
    """

    backend: ClassVar[str]

    def __init__(self, spec: RolloutSpec, num_workers: int) -> None:
        self._spec = spec
        self._num_workers = num_workers
        self._closed = False
        #: The single env's spaces (what the policy maps between).
        self.observation_space: gym.spaces.Space = spec.observation_space
        self.action_space: gym.spaces.Space = spec.action_space

    # -- public API ------------------------------------------------------------------
    @property
    def env_id(self) -> str:
        return self._spec.env_id

    @property
    def horizon(self) -> int:
        """``T``: the number of steps of an episode (shorter ones are masked)."""
        return self._spec.horizon

    @property
    def num_workers(self) -> int:
        return self._num_workers

    @property
    def closed(self) -> bool:
        return self._closed

    def sample(
        self,
        tasks: Sequence[Task | Mapping[str, Any]],
        params: Mapping[str, torch.Tensor] | Sequence[Mapping[str, torch.Tensor]],
        episodes_per_task: int,
        seed: int,
    ) -> EpisodeBatch:
        """Play ``episodes_per_task`` episodes of every task with its parameters.

        Args:
            tasks: ``N`` tasks of this sampler's family.
            params: the policy parameters: one dict shared by all tasks (θ), a
                stacked dict with leading dim ``N`` (e.g. adapted ``θ'_i``), or a
                list of ``N`` dicts. Any device; gradients are not tracked.
            episodes_per_task: ``E``.
            seed: an integer ≥ 0; the same seed gives the same batch bit for bit
                on every backend and worker count.

        Returns:
            An :class:`EpisodeBatch` of CPU tensors ``[N, T, E, ...]``: observations,
            actions (float32 ``[.., act_dim]``, or int64 for discrete actions),
            rewards, log_probs (of the taken action under the sampling policy, summed
            over action dims), terminated, truncated, mask and final_observations
            ``[N, E, obs_dim]``. Steps after an episode ended are masked and zero.

        Raises:
            ValueError: tasks of another family, params that do not match the policy
                or the task count, ``episodes_per_task < 1``, a negative seed.
            RuntimeError: the sampler is closed, or a worker died or failed.
        """
        if self._closed:
            raise RuntimeError(f"this {self.backend} sampler is closed; create a new one")
        request = self._spec.request(tasks, params, episodes_per_task, seed)
        layout = BatchLayout(
            num_tasks=request.num_tasks,
            horizon=self._spec.horizon,
            episodes=request.episodes_per_task,
            obs_dim=self._spec.obs_dim,
            act_dim=self._spec.act_dim,
        )
        return layout.to_batch(self._collect(request, layout), request.tasks)

    def close(self) -> None:
        """Stop the workers and free their resources (idempotent)."""
        self._closed = True

    def __enter__(self) -> Sampler:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._num_workers} worker(s)"
        return f"{type(self).__name__}({self.env_id!r}, horizon={self.horizon}, {state})"

    # -- backend hook ------------------------------------------------------------------
    def _collect(self, request: SampleRequest, layout: BatchLayout) -> dict[str, np.ndarray]:
        """Run the request; return the full-batch arrays (owned by the caller)."""
        raise NotImplementedError


# -- sync ----------------------------------------------------------------------------------


class SyncSampler(Sampler):
    """Runs everything in the calling process (one thread)."""

    backend = "sync"

    def __init__(self, spec: RolloutSpec) -> None:
        super().__init__(spec, 1)
        self._engine = RolloutEngine(spec)

    def _collect(self, request: SampleRequest, layout: BatchLayout) -> dict[str, np.ndarray]:
        arrays = layout.allocate()
        shard = Shard(0, request.num_tasks, 0, request.episodes_per_task)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny per-step matmuls: threads only cost
        try:
            self._engine.run(shard, request, BatchLayout.block(arrays, shard))
        finally:
            torch.set_num_threads(threads)
        return arrays

    def close(self) -> None:
        if not self._closed:
            self._engine.close()
        super().close()


# -- process -------------------------------------------------------------------------------


class _WorkerPool:
    """Worker processes, their pipes and the shared-memory block they write into.

    Kept apart from :class:`ProcessSampler` so that a ``weakref.finalize`` can shut
    it down when the sampler is garbage-collected or the interpreter exits.
    """

    def __init__(self) -> None:
        self.processes: list[mp.process.BaseProcess] = []
        self.conns: list[Connection] = []
        self.shm: shared_memory.SharedMemory | None = None
        self.layout: BatchLayout | None = None
        self.lock = threading.Lock()

    def release_shm(self) -> None:
        if self.shm is not None:
            self.shm.close()
            self.shm.unlink()
            self.shm = None
            self.layout = None

    def shutdown(self) -> None:
        """Ask every worker to stop, then terminate stragglers; free the shared memory."""
        for conn in self.conns:
            with contextlib.suppress(OSError, ValueError):  # already gone
                conn.send(None)
        for proc in self.processes:
            proc.join(timeout=5.0)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=2.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self.conns:
            conn.close()
        self.processes, self.conns = [], []
        self.release_shm()


def _describe_exit(proc: mp.process.BaseProcess) -> str:
    code = proc.exitcode
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class ProcessSampler(Sampler):
    """``num_workers`` local worker processes (spawn); results through shared memory.

    Each worker builds its own batched env and policy copy once; each call sends
    it its shard and the stacked parameters, and it writes its episodes straight
    into one shared-memory block that the parent copies out. A worker that dies
    makes :meth:`sample` raise ``RuntimeError`` as soon as the parent notices the
    process is gone (it waits on the process sentinels, not on a timeout).
    """

    backend = "process"

    def __init__(self, spec: RolloutSpec, num_workers: int) -> None:
        super().__init__(spec, num_workers)
        self._pool = _WorkerPool()
        self._finalizer = weakref.finalize(self, self._pool.shutdown)
        ctx = mp.get_context("spawn")
        spec_bytes = pickle.dumps(spec)
        try:
            for w in range(num_workers):
                parent_conn, child_conn = ctx.Pipe(duplex=True)
                proc = ctx.Process(
                    target=process_worker_main,
                    args=(child_conn, spec_bytes),
                    name=f"maml-rl-sampler-{w}",
                    daemon=True,
                )
                proc.start()
                child_conn.close()
                self._pool.processes.append(proc)
                self._pool.conns.append(parent_conn)
            for w, (kind, payload) in self._gather(list(range(num_workers)), "starting").items():
                if kind != "ready":
                    raise RuntimeError(f"sampler worker {w} failed to start:\n{payload}")
        except BaseException:
            self.close()
            raise

    def _gather(self, workers: Sequence[int], doing: str) -> dict[int, tuple[str, Any]]:
        """One reply from each of ``workers``; a worker that dies raises ``RuntimeError``.

        Waits on the pipes *and* the process sentinels, so a killed worker is
        noticed at once instead of leaving the parent blocked on its pipe.
        """
        pool = self._pool
        waiting, hung_up = set(workers), set()
        replies: dict[int, tuple[str, Any]] = {}
        while waiting:
            watched: dict[Any, int] = {}
            for w in waiting:
                if w not in hung_up:
                    watched[pool.conns[w]] = w
                watched[pool.processes[w].sentinel] = w
            for obj in wait(list(watched)):
                w = watched[obj]
                if w not in waiting:
                    continue
                conn = pool.conns[w]
                if obj is conn:
                    try:
                        replies[w] = conn.recv()
                        waiting.discard(w)
                    except (EOFError, OSError):
                        hung_up.add(w)  # its sentinel tells how it ended
                    continue
                if w not in hung_up and conn.poll():
                    continue  # it answered before it exited: read that first
                proc = pool.processes[w]
                proc.join(timeout=1.0)
                reason = _describe_exit(proc)
                self.close()
                hint = (
                    " (see its error above; workers are spawned, so a script must start "
                    "sampling under `if __name__ == '__main__':`)"
                    if doing == "starting"
                    else ""
                )
                raise RuntimeError(
                    f"sampler worker {w} (pid {proc.pid}) died while {doing} ({reason}); "
                    f"the sampler is closed, create a new one{hint}"
                )
        return replies

    def _collect(self, request: SampleRequest, layout: BatchLayout) -> dict[str, np.ndarray]:
        pool = self._pool
        with pool.lock:
            if pool.layout != layout:
                pool.release_shm()
                pool.shm = shared_memory.SharedMemory(create=True, size=max(layout.nbytes, 1))
                pool.layout = layout
            assert pool.shm is not None
            shards = partition(request.num_tasks, request.episodes_per_task, self._num_workers)
            try:
                for w, shard in enumerate(shards):
                    with contextlib.suppress(OSError, ValueError):  # dead: _gather says so
                        pool.conns[w].send((shard, request, layout, pool.shm.name))
                replies = self._gather(list(range(len(shards))), "sampling")
            except BaseException:
                # Interrupted (e.g. Ctrl-C): workers may still answer this call later,
                # which would be mistaken for the next call's answers.
                self.close()
                raise
            failed = [(w, text) for w, (kind, text) in sorted(replies.items()) if kind != "ok"]
            if failed:
                w, text = failed[0]
                last = text.strip().splitlines()[-1] if text.strip() else "unknown error"
                raise RuntimeError(f"sampler worker {w} failed: {last}\n{text}")
            # Copy out: the block is reused by the next call.
            return {name: a.copy() for name, a in layout.views(pool.shm.buf).items()}

    def close(self) -> None:
        if not self._closed:
            self._finalizer()
        super().close()


# -- ray -----------------------------------------------------------------------------------

#: How long to wait for Ray actors to start (they wait for free CPUs in a cluster).
RAY_START_TIMEOUT_S = 120.0


@dataclasses.dataclass
class _RayRuntime:
    """The Ray runtime this module started, shared by the samplers that use it."""

    users: int = 0  # open samplers on it; 0: this module runs none
    local: bool = False  # a private single-node runtime (not a cluster connection)


_ray_lock = threading.Lock()
_ray_runtime = _RayRuntime()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError(
            "the 'ray' sampler backend needs Ray, which is not installed: "
            "pip install 'maml-rl[ray]'"
        ) from None
    return ray


def _ray_acquire(ray: Any, address: str | None, num_workers: int) -> tuple[bool, bool]:
    """Make sure Ray is running.

    Returns:
        ``(owned, local)``: whether the sampler shares the runtime this module
        started (and must release it), and whether that is a private local one.
    """
    with _ray_lock:
        rt = _ray_runtime
        if ray.is_initialized():
            if rt.users == 0:
                return False, False  # the user's own runtime: use it, leave it alone
            rt.users += 1
            return True, rt.local
        if address is None:
            ray.init(
                num_cpus=max(num_workers, os.cpu_count() or 1),
                include_dashboard=False,
                logging_level=logging.WARNING,
            )
        else:
            ray.init(address=address, logging_level=logging.WARNING)
        rt.users, rt.local = 1, address is None
        return True, rt.local


def _ray_release(ray: Any) -> None:
    with _ray_lock:
        _ray_runtime.users -= 1
        if _ray_runtime.users == 0 and ray.is_initialized():
            ray.shutdown()


class RaySampler(Sampler):
    """``num_workers`` Ray actors (one CPU each), on a local runtime or a cluster.

    With no Ray runtime in this process, one is started: a private local one for
    ``ray_address=None``, else a connection to that cluster; it is shut down with the
    last sampler using it. An already initialised runtime is used as it is. Every
    node of a cluster must have maml-rl (and the same Python packages) installed.
    """

    backend = "ray"

    def __init__(self, spec: RolloutSpec, num_workers: int, address: str | None) -> None:
        ray = _import_ray()
        super().__init__(spec, num_workers)
        self._ray = ray
        self._owns_runtime, local = _ray_acquire(ray, address, num_workers)
        self._actors: list[Any] = []
        try:
            # On a cluster each actor claims a CPU, so Ray spreads them over the
            # nodes. On our private one-machine runtime CPU accounting would only make
            # a second sampler (e.g. an evaluation's) wait forever for the first's.
            actor_cls = ray.remote(num_cpus=0 if local else 1, max_restarts=0)(RayWorker)
            spec_bytes = pickle.dumps(spec)
            self._actors = [actor_cls.remote(spec_bytes) for _ in range(num_workers)]
            try:
                ray.get([a.pid.remote() for a in self._actors], timeout=RAY_START_TIMEOUT_S)
            except ray.exceptions.GetTimeoutError:
                cpus = ray.cluster_resources().get("CPU", 0)
                raise RuntimeError(
                    f"{num_workers} Ray sampler workers (1 CPU each) did not start within "
                    f"{RAY_START_TIMEOUT_S:.0f} s; the cluster has {cpus:g} CPUs in all"
                ) from None
            except ray.exceptions.RayError as exc:
                raise RuntimeError(f"a Ray sampler worker failed to start: {exc}") from None
        except BaseException:
            self.close()
            raise

    def worker_pids(self) -> list[int]:
        """Process ids of the actors (for diagnostics)."""
        return list(self._ray.get([a.pid.remote() for a in self._actors]))

    def _collect(self, request: SampleRequest, layout: BatchLayout) -> dict[str, np.ndarray]:
        ray = self._ray
        shards = partition(request.num_tasks, request.episodes_per_task, self._num_workers)
        request_ref = ray.put(request)  # the parameters travel once, shared by all actors
        refs = [
            a.run.remote(s, request_ref, layout) for a, s in zip(self._actors, shards, strict=False)
        ]
        try:
            blocks = ray.get(refs)
        except ray.exceptions.RayActorError as exc:
            self.close()
            raise RuntimeError(
                f"a Ray sampler worker died while sampling ({type(exc).__name__}); "
                "the sampler is closed, create a new one"
            ) from None
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            raise RuntimeError(f"a Ray sampler worker failed: {cause!r}\n{exc}") from None
        arrays = layout.allocate()
        for shard, block in zip(shards, blocks, strict=True):
            for name, dst in BatchLayout.block(arrays, shard).items():
                dst[...] = block[name]
        return arrays

    def close(self) -> None:
        if not self._closed:
            for actor in self._actors:
                with contextlib.suppress(Exception):  # already dead or runtime gone
                    self._ray.kill(actor)
            self._actors = []
            if self._owns_runtime:
                self._owns_runtime = False
                _ray_release(self._ray)
        super().close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: best effort
            self.close()
