"""Keep freed large blocks in the process heap (glibc), so big tensors do not fault in anew.

glibc serves an allocation above its mmap threshold (32 MB at most, by default) with a
fresh ``mmap`` and unmaps it when freed, so every page of the next such tensor faults in
on first touch. A MAML-TRPO update at the paper's HalfCheetah size allocates and frees
tensors of that size dozens of times (40 tasks × 4000 steps × 100 units × 4 bytes =
64 MB per activation): measured here, a HalfCheetahDir meta-iteration takes 9.6 s by
default and 7.4 s with the thresholds raised (``benchmarks/meta_iteration.py``; the
meta-gradient 2.4 → 0.5 s). The memory is kept for reuse, not leaked: the process's peak
is unchanged, it is just not handed back to the system between iterations.

:func:`tune_malloc` is called by ``maml-rl train`` and ``maml-rl evaluate`` and by the
benchmarks; a library user can call it once at start-up. Elsewhere than glibc it does
nothing. The same effect from outside: ``MALLOC_MMAP_THRESHOLD_=1073741824
MALLOC_TRIM_THRESHOLD_=1073741824`` in the environment.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["tune_malloc"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from <malloc.h>
_THRESHOLD = 1 << 30


@functools.cache
def tune_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds to 1 GiB for this process (once).

    Returns:
        Whether both settings took (False where the C library is not glibc).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, TypeError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _THRESHOLD)
    )
