"""torch's intra-op thread count, set for a block and restored after it.

Rollouts evaluate tiny per-step matmuls: extra OpenMP threads only cost there, and idle
ones busy-wait, which slows everything else on the machine (the sampler therefore runs
its loop on one thread, in every process). The meta-update may use more
(``update_threads``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["torch_threads"]


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
