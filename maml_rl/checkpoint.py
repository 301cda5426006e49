"""Checkpoints: one ``checkpoint.pt`` per run folder, written atomically.

A checkpoint is a plain dict that :func:`torch.load` can read with
``weights_only=True`` — tensors, and Python containers of str/int/float/bool/None
— so loading one never executes code from the file:

=================== =============================================================
``format_version``  :data:`FORMAT_VERSION`
``maml_rl_version`` the package version that wrote it
``iteration``       meta-iterations completed
``env_steps``       cumulative environment steps
``config``          the run's config (:meth:`maml_rl.config.Config.to_dict`)
``policy``          the policy's ``state_dict`` (θ)
``agent``           the agent's ``state_dict`` (e.g. the outer optimiser)
``rng``             ``{"seed": int, "torch": ByteTensor}`` — the trainer derives every
                    per-iteration seed from ``(seed, iteration)``, so these and
                    ``iteration`` are the whole random state
=================== =============================================================

Writing goes to a temporary file in the same folder, which is then renamed over
the old checkpoint (:func:`os.replace` is atomic): a crash, Ctrl-C or a full disk
while saving leaves the previous checkpoint intact, never a torn file. A writer
killed outright (``kill -9``) leaves its temporary file behind;
:func:`remove_stale_temporaries` clears those when the run is resumed.
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from maml_rl.errors import os_reason

__all__ = [
    "CHECKPOINT_NAME",
    "FORMAT_VERSION",
    "checkpoint_path",
    "load_checkpoint",
    "remove_stale_temporaries",
    "save_checkpoint",
]

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1
_REQUIRED = ("format_version", "iteration", "env_steps", "config", "policy", "agent", "rng")


def checkpoint_path(run_dir_or_file: str | Path) -> Path:
    """The checkpoint file of a run folder (a path to a file is returned as is)."""
    p = Path(run_dir_or_file)
    return p / CHECKPOINT_NAME if p.is_dir() else p


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file + :func:`os.replace`).

    Args:
        path: the checkpoint file, or a run folder (then ``<folder>/checkpoint.pt``).
        state: the checkpoint dict (see the module docstring); only tensors and plain
            Python containers/scalars, so that ``weights_only`` loading accepts it.

    Returns:
        The path written.
    """
    path = checkpoint_path(path)
    tmp = _temporary(path, os.getpid())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Serialised in memory first: a failed write into torch's zip writer (a full disk)
        # surfaces as a RuntimeError of its end-of-archive check, the OSError only chained.
        buffer = io.BytesIO()
        torch.save(dict(state), buffer)
        with tmp.open("wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.replace(tmp, path)
    except BaseException as exc:  # including KeyboardInterrupt: never leave the temp file
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename in (None, str(tmp)):
            exc.filename = str(path)  # a failed write into the file object names no file
        raise
    _fsync_dir(path.parent)
    return path


def _temporary(path: Path, pid: int | str) -> Path:
    """Where :func:`save_checkpoint` writes ``path`` before renaming it."""
    return path.with_name(f".{path.name}.{pid}.tmp")


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files that a writer killed mid-write left behind.

    Looks in ``folder`` and its ``checkpoints/`` for :func:`save_checkpoint`'s temporary
    files of processes that no longer run (a live writer's file is left alone).

    Returns:
        The files removed.
    """
    removed = []
    for sub in (Path(folder), Path(folder) / "checkpoints"):
        for tmp in sub.glob(".*.pt.*.tmp"):
            pid = tmp.name.rsplit(".", 2)[-2]
            if pid.isdigit() and _alive(int(pid)):
                continue
            try:
                tmp.unlink()
            except FileNotFoundError:  # its writer finished after all
                continue
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (best effort: not every platform can open folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint (``weights_only=True``, tensors on CPU) and check its format.

    Args:
        path: a run folder or a checkpoint file.

    Raises:
        ValueError: one line — no such folder or file, the folder has no checkpoint,
            the file is unreadable, empty, truncated or damaged, or it is not a maml-rl
            checkpoint (which includes any pickle that would run code on load).
    """
    p = Path(path)
    if not p.exists():
        raise ValueError(f"no run folder or checkpoint at {str(path)!r}")
    file = checkpoint_path(p)
    if not file.is_file():
        raise ValueError(
            f"run folder {str(path)!r} has no {CHECKPOINT_NAME} (it is written every "
            "checkpoint_every iterations and at the end; nothing to resume)"
        )
    state = _load_refusing_code(file)
    if not isinstance(state, dict) or "format_version" not in state:
        raise ValueError(_NOT_OURS.format(file=str(file)))
    if state["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {str(file)!r} has format version {state['format_version']!r}; this "
            f"maml-rl reads version {FORMAT_VERSION}"
        )
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise ValueError(f"checkpoint {str(file)!r} is incomplete: missing {', '.join(missing)}")
    return state


#: A file that is no checkpoint of ours: anything that is not the zip archive torch.save
#: writes, or one whose pickle needs more than tensors and plain containers (a
#: code-executing pickle among them: it is refused, never loaded with weights_only=False).
_NOT_OURS = "{file!r} is not a maml-rl checkpoint (or one that would run code on load); refused"

_ZIP_MAGIC = b"PK\x03\x04"


def _load_refusing_code(file: Path) -> Any:
    """``torch.load(file, weights_only=True)`` with each failure as one line.

    The file is checked as a zip archive first (its table of contents and every member's
    CRC), so that a truncated or damaged file says so instead of miniz's or the
    unpickler's internals, and a file that is no zip archive at all (a plain or legacy
    pickle, text) is refused without unpickling a byte of it.
    """
    name = repr(str(file))
    try:
        size = file.stat().st_size
        with file.open("rb") as f:
            magic = f.read(len(_ZIP_MAGIC))
    except OSError as exc:
        raise ValueError(f"cannot read checkpoint {name}: {os_reason(exc)}") from None
    again = "copy it again from where it came from, or resume or evaluate another checkpoint"
    if size == 0:
        raise ValueError(f"checkpoint {name} is empty (0 bytes); {again}")
    if magic != _ZIP_MAGIC:
        raise ValueError(_NOT_OURS.format(file=str(file)))
    try:
        with zipfile.ZipFile(file) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, EOFError, ValueError):
        # A zip archive's table of contents is at its end: a cut-off file lost it.
        raise ValueError(
            f"checkpoint {name} is truncated ({size} bytes, the end of the archive is "
            f"missing: an interrupted copy?); {again}"
        ) from None
    except OSError as exc:
        raise ValueError(f"cannot read checkpoint {name}: {os_reason(exc)}") from None
    if damaged is not None:
        raise ValueError(
            f"checkpoint {name} is damaged (a checksum mismatch in {damaged}); {again}"
        )
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols on its way to refusing a foreign pickle.
            warnings.simplefilter("ignore")
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # The weights-only unpickler met a global it does not allow: never retried unsafely.
        raise ValueError(_NOT_OURS.format(file=str(file))) from None
    except OSError as exc:
        raise ValueError(f"cannot read checkpoint {name}: {os_reason(exc)}") from None
    except Exception as exc:  # a zip archive with some other content than torch.save's
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"checkpoint {name} is corrupt ({reason}); {again}") from None
