"""The ``ray`` backend: ``num_workers`` Ray actors, on a local runtime or a cluster.

Ray is imported only when such a sampler is built (``pip install 'maml-rl[ray]'``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import socket
import threading
import time
from typing import Any

import numpy as np
import torch

from maml_rl.samplers.base import Sampler, WorkerDied
from maml_rl.samplers.engine import RolloutEngine
from maml_rl.samplers.layout import BatchLayout, Shard, partition
from maml_rl.samplers.spec import RolloutSpec, SampleRequest

__all__ = [
    "RAY_CONNECT_TIMEOUT_S",
    "RAY_START_TIMEOUT_S",
    "RaySampler",
    "RayWorker",
    "check_ray_address",
]


#: How long to wait for Ray actors to start (they wait for free CPUs in a cluster).
RAY_START_TIMEOUT_S = 120.0

#: How long to wait for a cluster at a given address to answer (``sampler.ray_connect_timeout_s``).
RAY_CONNECT_TIMEOUT_S = 30.0


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


def check_ray_address(address: str, timeout_s: float) -> None:
    """Check that a Ray cluster answers at ``address`` within ``timeout_s`` seconds.

    ``ray.init`` retries an address where nothing answers for minutes; this fails at
    once where nothing listens, and after ``timeout_s`` where something listens but no
    gRPC server (a Ray cluster's GCS) answers. ``auto`` is checked by Ray itself.

    Raises:
        ValueError: one line naming the address and how to start a cluster.
    """
    target = address.removeprefix("ray://")
    if target == "auto":
        return
    fix = (
        "start one with `ray start --head` (it prints the address to pass), or drop "
        "--ray-address for a local Ray runtime"
    )
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(
            f"sampler.ray_address must be HOST:PORT, ray://HOST:PORT or auto, got {address!r}"
        )
    deadline = time.monotonic() + timeout_s
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except ConnectionRefusedError:
        raise ValueError(f"no Ray cluster at {address}: nothing listens there; {fix}") from None
    except TimeoutError:
        raise ValueError(
            f"no Ray cluster at {address}: no answer within {timeout_s:g} s "
            f"(sampler.ray_connect_timeout_s); {fix}"
        ) from None
    except OSError as exc:
        raise ValueError(f"no Ray cluster at {address}: {exc}; {fix}") from None
    try:
        import grpc
    except ImportError:  # pragma: no cover - Ray depends on it
        return
    channel = grpc.insecure_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=max(deadline - time.monotonic(), 1.0))
    except grpc.FutureTimeoutError:
        raise ValueError(
            f"no Ray cluster at {address}: something listens there but does not answer as "
            f"Ray's GCS within {timeout_s:g} s (sampler.ray_connect_timeout_s); {fix}"
        ) from None
    finally:
        channel.close()


def _ray_acquire(
    ray: Any, address: str | None, num_workers: int, connect_timeout_s: float
) -> tuple[bool, bool]:
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
            check_ray_address(address, connect_timeout_s)
            try:
                ray.init(address=address, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise ValueError(
                    f"cannot join the Ray cluster at {address}: {first}; check it with `ray "
                    "status` on its head node (same Python, torch and Ray versions as here)"
                ) from None
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

    Args:
        spec: what the workers run.
        num_workers: Ray actors.
        address: a cluster's address (``None``: a private local runtime), checked with
            :func:`check_ray_address` before ``ray.init``.
        restart_workers: Ray restarts a dead actor and reruns its task (the same
            episodes: they depend only on the seed); else a death raises
            :class:`~maml_rl.samplers.base.WorkerDied`.
        connect_timeout_s: how long to wait for a cluster at ``address`` to answer.
    """

    backend = "ray"

    def __init__(
        self,
        spec: RolloutSpec,
        num_workers: int,
        address: str | None,
        restart_workers: bool = False,
        connect_timeout_s: float = RAY_CONNECT_TIMEOUT_S,
    ) -> None:
        ray = _import_ray()
        super().__init__(spec, num_workers)
        self._ray = ray
        self._owns_runtime = False
        self._actors: list[Any] = []
        self._owns_runtime, local = _ray_acquire(ray, address, num_workers, connect_timeout_s)
        try:
            # On a cluster each actor claims a CPU, so Ray spreads them over the
            # nodes. On our private one-machine runtime CPU accounting would only make
            # a second sampler (e.g. an evaluation's) wait forever for the first's.
            restarts = 2 if restart_workers else 0
            actor_cls = ray.remote(
                num_cpus=0 if local else 1, max_restarts=restarts, max_task_retries=restarts
            )(RayWorker)
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
            raise WorkerDied(
                f"a Ray sampler worker died while sampling ({type(exc).__name__})"
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
