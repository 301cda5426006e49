"""Thread counts: the cores available, and torch's intra-op count set for a block.

Rollouts evaluate tiny per-step matmuls: extra OpenMP threads only cost there, and idle
ones busy-wait, which slows everything else on the machine (the sampler therefore runs
its loop on one thread, in every process). The meta-update may use more
(``update_threads``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

__all__ = ["available_cores", "torch_threads"]


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def torch_threads(num_threads: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(num_threads)``; restore the count after."""
    if num_threads < 1:
        raise ValueError(f"num_threads must be ≥ 1, got {num_threads}")
    before = torch.get_num_threads()
    if before != num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
