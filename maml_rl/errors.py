"""Errors that end a command part-way, with nothing lost.

The CLI prints such an error as one line on stderr and exits with status 1 (a user's
input refused before any work is a ``ValueError``: status 2).
"""

from __future__ import annotations

__all__ = ["RunStopped"]


class RunStopped(RuntimeError):
    """Training stopped part-way; its message (one line) says why, where the last good
    checkpoint is and what to do next."""
