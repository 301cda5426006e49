"""Errors that end a command, and the checks that raise them before any work starts.

The CLI prints each as one line on stderr: a ``ValueError`` (input refused before any
work, exit status 2) or a :class:`RunStopped` (a run that had to stop part-way, its last
good state checkpointed, exit status 1). Filesystem errors a user can cause — an output
folder that is a file, or not writable, a full disk — become one of these, naming the
path and the fix.
"""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path

__all__ = ["RunStopped", "check_writable_folder", "os_reason", "os_remedy"]


class RunStopped(RuntimeError):
    """Training stopped part-way; its message (one line) says why, where the last good
    checkpoint is and what to do next."""


def os_reason(exc: OSError) -> str:
    """``"permission denied"``, ``"no space left on device"``, ...: what the system said."""
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def os_remedy(exc: OSError) -> str:
    """The usual fix for a failed write, as an imperative."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free space on that disk"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "make that folder writable"
    return "check that path and its disk"


def check_writable_folder(path: str | Path, what: str, fix: str) -> None:
    """Check, without creating anything, that ``path`` is or can become a writable folder.

    The nearest existing folder on the way to ``path`` must be a folder (not a file) where
    a file can be created (a temporary one, removed at once: permissions, read-only
    filesystems and ACLs all show).

    Args:
        path: the output folder.
        what: what it is, for the message (``"logdir"``, ``"output folder"``).
        fix: how to fix it, for the message (``"pass a writable folder with --out"``).

    Raises:
        ValueError: one line naming ``path``, what is wrong and ``fix``.
    """
    target = Path(path)
    probe = target
    try:
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        is_dir = probe.is_dir()
    except OSError as exc:
        raise ValueError(f"cannot use {what} {str(path)!r}: {os_reason(exc)}; {fix}") from None
    if not is_dir:
        where = "is a file" if probe == target else f"is inside the file {str(probe)!r}"
        raise ValueError(f"{what} {str(path)!r} {where}, not a folder; {fix}")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        inside = "" if probe == target else f" (in {str(probe)!r})"
        raise ValueError(
            f"cannot write {what} {str(path)!r}{inside}: {os_reason(exc)}; {fix}"
        ) from None
