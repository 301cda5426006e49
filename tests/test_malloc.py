"""glibc keeps freed large blocks once maml_rl.malloc.tune_malloc has run (mallinfo2)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROBE = """
import ctypes, sys, torch
class Info(ctypes.Structure):  # struct mallinfo2
    names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(n, ctypes.c_size_t) for n in names.split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
if sys.argv[1] == "tuned":
    from maml_rl.malloc import tune_malloc
    assert tune_malloc()
a = torch.empty(16 * 1024 * 1024)  # 64 MB, a HalfCheetah-sized activation
a.fill_(1.0)
during = libc.mallinfo2().hblkhd  # bytes in mmapped blocks
del a
print(during >> 20, libc.mallinfo2().fordblks >> 20)  # then: free bytes kept in the heap
"""


def _megabytes(mode: str) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    mapped, kept = out.stdout.split()
    return int(mapped), int(kept)


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_freed_large_blocks_stay_in_the_heap_for_reuse() -> None:
    # By default the 64 MB block is its own mmap, unmapped when freed (and the next one
    # faults in page by page).
    mapped, kept = _megabytes("default")
    assert mapped >= 64 and kept < 64
    # Tuned, it comes from the heap and stays there, free, for the next allocation.
    mapped, kept = _megabytes("tuned")
    assert mapped < 64 and kept >= 64
