"""The ``ray`` backend: ``num_workers`` Ray actors, on a local runtime or a cluster.

Ray is imported only when such a sampler is built (``pip install 'maml-rl[ray]'``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import threading
from typing import Any

import numpy as np
import torch

from maml_rl.samplers.base import Sampler
from maml_rl.samplers.engine import RolloutEngine
from maml_rl.samplers.layout import BatchLayout, Shard, partition
from maml_rl.samplers.spec import RolloutSpec, SampleRequest

__all__ = ["RAY_START_TIMEOUT_S", "RaySampler", "RayWorker"]


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
