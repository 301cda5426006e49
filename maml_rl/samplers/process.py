"""The ``process`` backend: ``num_workers`` local worker processes, shared-memory output.

Each worker (spawned, so it imports everything afresh) builds one
:class:`~maml_rl.samplers.engine.RolloutEngine` and runs on one torch thread; each
sample call sends it its shard and the stacked parameters, and it writes its
episodes straight into one shared-memory block that the parent copies out.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import pickle
import signal
import threading
import traceback
import weakref
from collections.abc import Sequence
from multiprocessing import shared_memory
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np
import torch

from maml_rl.samplers.base import Sampler, WorkerDied
from maml_rl.samplers.engine import RolloutEngine
from maml_rl.samplers.layout import BatchLayout, Shard, partition
from maml_rl.samplers.spec import RolloutSpec, SampleRequest

__all__ = ["ProcessSampler", "process_worker_main"]

_log = logging.getLogger(__name__)


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
    makes :meth:`sample` raise :class:`~maml_rl.samplers.base.WorkerDied` as soon as
    the parent notices the process is gone (it waits on the process sentinels, not on
    a timeout) — or, with ``restart_workers``, is replaced by a fresh worker that plays
    its shard again: a shard's episodes depend only on the seed, so the batch is the
    same, bit for bit.
    """

    backend = "process"

    #: Restarts of dead workers one sample call may make before it gives up.
    max_restarts_per_call = 2

    def __init__(self, spec: RolloutSpec, num_workers: int, restart_workers: bool = False) -> None:
        super().__init__(spec, num_workers)
        self._pool = _WorkerPool()
        self._finalizer = weakref.finalize(self, self._pool.shutdown)
        self._restart_workers = restart_workers
        self._spec_bytes = pickle.dumps(spec)
        try:
            for w in range(num_workers):
                self._start_worker(w)
            self._await_ready(range(num_workers))
        except BaseException:
            self.close()
            raise

    def _start_worker(self, w: int) -> None:
        """Start worker ``w`` (in place of a dead one, if there was one)."""
        ctx = mp.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        proc = ctx.Process(
            target=process_worker_main,
            args=(child_conn, self._spec_bytes),
            name=f"maml-rl-sampler-{w}",
            daemon=True,
        )
        proc.start()
        child_conn.close()
        pool = self._pool
        if w < len(pool.processes):
            pool.conns[w].close()
            pool.processes[w], pool.conns[w] = proc, parent_conn
        else:
            pool.processes.append(proc)
            pool.conns.append(parent_conn)

    def _await_ready(self, workers: Sequence[int] | range) -> None:
        replies, _ = self._gather(list(workers), "starting")
        for w, (kind, payload) in replies.items():
            if kind != "ready":
                raise RuntimeError(f"sampler worker {w} failed to start:\n{payload}")

    def _gather(
        self, workers: Sequence[int], doing: str, *, tolerate_deaths: bool = False
    ) -> tuple[dict[int, tuple[str, Any]], dict[int, str]]:
        """One reply from each of ``workers``, and how each worker that died ended.

        Waits on the pipes *and* the process sentinels, so a killed worker is
        noticed at once instead of leaving the parent blocked on its pipe. A death
        closes the sampler and raises :class:`WorkerDied`, unless ``tolerate_deaths``
        (then the others' replies are still collected).
        """
        pool = self._pool
        waiting, hung_up = set(workers), set()
        replies: dict[int, tuple[str, Any]] = {}
        dead: dict[int, str] = {}
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
                summary = f"sampler worker {w} (pid {proc.pid}) died while {doing} "
                summary += f"({_describe_exit(proc)})"
                if tolerate_deaths:
                    dead[w] = summary
                    waiting.discard(w)
                    continue
                self.close()
                hint = (
                    " (see its error above; workers are spawned, so a script must start "
                    "sampling under `if __name__ == '__main__':`)"
                    if doing == "starting"
                    else ""
                )
                raise WorkerDied(summary, f"the sampler is closed, create a new one{hint}")
        return replies, dead

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
                replies = self._play(dict(enumerate(shards)), request, layout)
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

    def _play(
        self, shards: dict[int, Shard], request: SampleRequest, layout: BatchLayout
    ) -> dict[int, tuple[str, Any]]:
        """Send each worker its shard; collect the replies, replaying the shards of
        workers that died on restarted ones when ``restart_workers``."""
        pool = self._pool
        assert pool.shm is not None  # allocated by the caller
        replies: dict[int, tuple[str, Any]] = {}
        for attempt in range(self.max_restarts_per_call + 1):
            for w, shard in shards.items():
                with contextlib.suppress(OSError, ValueError):  # dead: _gather says so
                    pool.conns[w].send((shard, request, layout, pool.shm.name))
            got, dead = self._gather(list(shards), "sampling", tolerate_deaths=True)
            replies.update(got)
            if not dead:
                return replies
            if not self._restart_workers or attempt == self.max_restarts_per_call:
                break
            for w, summary in dead.items():  # a fresh worker replays the shard: same episodes
                _log.warning("%s; restarted it to play its episodes again", summary)
                pool.processes[w].join(timeout=1.0)
                self._start_worker(w)
            self._await_ready(list(dead))
            shards = {w: shards[w] for w in dead}
        self.close()
        again = f" after {attempt} restart(s)" if attempt else ""
        raise WorkerDied(next(iter(dead.values())) + again)

    def close(self) -> None:
        if not self._closed:
            self._finalizer()
        super().close()


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
