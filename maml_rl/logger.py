"""Loggers: where per-iteration metrics go.

A logger has two methods, ``write(metrics, step)`` and ``close()`` (Acme's
contract). The trainer writes one flat ``dict[str, float]`` per meta-iteration
with ``step`` = cumulative environment steps (the x-axis of every curve).
Loggers are *composed*, not subclassed: :class:`MultiLogger` fans one write out
to a TensorBoard, a JSON-lines and a console logger.

Metric keys are TensorBoard tags (``rollout/return_pre_adapt``, ``train/kl``,
``time/sample_s``, ...; see STYLE.md §9). A key without a ``/`` (``iteration``)
is a counter: it goes to ``metrics.jsonl`` and the console, not to TensorBoard.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np

from maml_rl.divergence import REJECTION_TAG, rejection_text

__all__ = [
    "ConsoleLogger",
    "InMemoryLogger",
    "JsonlLogger",
    "Logger",
    "MultiLogger",
    "TensorBoardLogger",
    "encode_gif",
    "read_jsonl",
]


class Logger(Protocol):
    """Anything with ``write(metrics, step)`` and ``close()``."""

    def write(self, metrics: Mapping[str, float], step: int) -> None:
        """Record ``metrics`` at x-axis position ``step`` (cumulative env steps)."""

    def close(self) -> None:
        """Flush and release resources; no writes after this."""


class MultiLogger:
    """Writes to several loggers in turn; closes them all."""

    def __init__(self, loggers: Sequence[Logger]) -> None:
        self.loggers = list(loggers)

    def write(self, metrics: Mapping[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.write(metrics, step)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


class InMemoryLogger:
    """Keeps every write as ``(step, metrics)`` in :attr:`records` (benchmarks, tests)."""

    def __init__(self) -> None:
        self.records: list[tuple[int, dict[str, float]]] = []

    def write(self, metrics: Mapping[str, float], step: int) -> None:
        self.records.append((int(step), dict(metrics)))

    def close(self) -> None:
        pass


class JsonlLogger:
    """One JSON object per write (``{"env_steps": step, **metrics}``) appended to a file.

    Each line is flushed, so the file is complete up to the last finished
    iteration even after a crash. The lines are strict JSON: a non-finite value (a
    diverged run's NaN loss) is written as ``null``. A rejected step's
    ``train/step_rejected_reason`` code comes with its text, ``step_rejected_reason``.

    Args:
        path: the ``metrics.jsonl`` file (created with its parent folders).
        keep_until_iteration: on resume, first drop the records whose ``iteration``
            is larger (they were written after the checkpoint being resumed and the
            resumed run writes them again).
    """

    def __init__(self, path: str | Path, *, keep_until_iteration: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if keep_until_iteration is not None and self.path.exists():
            kept = [
                r for r in read_jsonl(self.path) if r.get("iteration", 0) <= keep_until_iteration
            ]
            tmp = self.path.with_name(self.path.name + ".tmp")
            try:
                tmp.write_text(
                    "".join(json.dumps(r, allow_nan=False) + "\n" for r in kept), encoding="utf-8"
                )
                tmp.replace(self.path)
            except BaseException:  # a full disk: metrics.jsonl stays as it was, no leftover
                tmp.unlink(missing_ok=True)
                raise
        self._file: TextIO | None = self.path.open("a", encoding="utf-8")

    def write(self, metrics: Mapping[str, float], step: int) -> None:
        if self._file is None:
            raise ValueError(f"JsonlLogger({self.path}) is closed")
        record = {"env_steps": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        reason = rejection_text(metrics.get(REJECTION_TAG, 0.0))
        if reason is not None:
            record["step_rejected_reason"] = reason
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (a torn last line is skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # only the last line can be torn (killed mid-write)
    return records


def _plain(value: Any) -> Any:
    """A strict-JSON scalar (numpy/torch scalars become Python numbers, non-finite
    ones ``None``)."""
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    value = float(value)
    return value if math.isfinite(value) else None


class TensorBoardLogger:
    """Scalars to TensorBoard event files in ``logdir`` (x-axis: ``step``).

    Only keys with a ``/`` are written (counters such as ``iteration`` are not
    curves). The run's resolved config is written once as a text table
    (``config``) and as hyperparameters (the HPARAMS tab), so runs can be compared.

    Args:
        logdir: folder for the event files (usually the run folder).
        config: the resolved config as a flat ``{"dotted.key": value}`` dict.
        purge_step: on resume, TensorBoard hides events of earlier files from this
            step on (they were logged after the checkpoint and are logged again).
    """

    #: Metrics shown in the HPARAMS tab next to the hyperparameters.
    hparam_metrics = ("rollout/return_pre_adapt", "rollout/return_post_adapt")

    def __init__(
        self,
        logdir: str | Path,
        *,
        config: Mapping[str, Any] | None = None,
        purge_step: int | None = None,
    ) -> None:
        # Imported here: TensorBoard pulls in a lot and only this logger needs it.
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = Path(logdir)
        self._writer = SummaryWriter(str(self.logdir), purge_step=purge_step)
        if config is not None and purge_step is None:
            self._write_config(config)

    def _write_config(self, config: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        rows = "\n".join(f"| `{k}` | `{v}` |" for k, v in config.items())
        self._writer.add_text("config", f"| key | value |\n|---|---|\n{rows}", global_step=0)
        hp = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in config.items()}
        # The hparams summaries go into this run's own event file (add_hparams would
        # make a separate sub-run); the metrics are read from the scalars logged here.
        experiment, session_start, session_end = hparams(
            hp, {tag: math.nan for tag in self.hparam_metrics}
        )
        file_writer = self._writer._get_file_writer()
        for summary in (experiment, session_start, session_end):
            file_writer.add_summary(summary)

    def write(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in metrics.items():
            if "/" in key:
                self._writer.add_scalar(key, float(value), global_step=int(step))
        self._writer.flush()

    def write_video(
        self, tag: str, frames: Sequence[np.ndarray], step: int, fps: float = 20.0
    ) -> None:
        """An animated image summary ``tag`` at ``step``: ``frames`` (``[H, W, 3]`` uint8)
        as a looping GIF, shown (and played) in TensorBoard's *Images* tab.

        This is the summary ``SummaryWriter.add_video`` writes, encoded with Pillow
        instead of moviepy (which ``add_video`` needs and whose 2.x API it no longer fits).
        """
        from tensorboard.compat.proto.summary_pb2 import Summary

        if not frames:
            raise ValueError(f"write_video({tag!r}) needs at least one frame")
        h, w = frames[0].shape[:2]
        image = Summary.Image(
            height=h, width=w, colorspace=3, encoded_image_string=encode_gif(frames, fps)
        )
        summary = Summary(value=[Summary.Value(tag=tag, image=image)])
        self._writer._get_file_writer().add_summary(summary, global_step=int(step))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def encode_gif(frames: Sequence[np.ndarray], fps: float) -> bytes:
    """``frames`` (``[H, W, 3]`` uint8) as a looping GIF at ``fps`` (Pillow)."""
    import io

    from PIL import Image

    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(20, round(1000 / fps)),  # ms per frame; browsers slow down < 20 ms
        loop=0,
    )
    return buffer.getvalue()


class ConsoleLogger:
    """One clean line per iteration: returns (and success rates, where the family
    reports them) before/after adaptation, KL, timings.

    ``[ 12/40] steps 960,000 | return pre -35.21 post -28.40 | kl 0.0093 | 4.1 s
    (sample 3.0 + update 1.1)``, and ``| step rejected: <why>`` after a rejected
    meta-step. Lines (not a progress bar) read well in terminals, in CI logs and in
    files.
    """

    def __init__(self, num_batches: int | None = None, stream: TextIO | None = None) -> None:
        self.num_batches = num_batches
        self.stream = stream if stream is not None else sys.stdout

    def write(self, metrics: Mapping[str, float], step: int) -> None:
        it = metrics.get("iteration")
        parts = []
        if it is not None:
            width = len(str(self.num_batches)) if self.num_batches else 0
            total = f"/{self.num_batches}" if self.num_batches else ""
            parts.append(f"[{int(it):>{width}d}{total}]")
        parts.append(f"steps {int(step):,}")
        pre, post = (
            metrics.get("rollout/return_pre_adapt"),
            metrics.get("rollout/return_post_adapt"),
        )
        if pre is not None and post is not None:
            parts.append(f"| return pre {pre:8.2f} post {post:8.2f}")
        pre, post = (
            metrics.get("rollout/success_pre_adapt"),
            metrics.get("rollout/success_post_adapt"),
        )
        if pre is not None and post is not None:  # families reporting info["success"]
            parts.append(f"| success pre {100 * pre:5.1f} % post {100 * post:5.1f} %")
        if "train/kl" in metrics:
            parts.append(f"| kl {metrics['train/kl']:.4f}")
        if "time/iteration_s" in metrics:
            parts.append(
                f"| {metrics['time/iteration_s']:.1f} s "
                f"(sample {metrics.get('time/sample_s', math.nan):.1f} + "
                f"update {metrics.get('time/update_s', math.nan):.1f})"
            )
        reason = rejection_text(metrics.get(REJECTION_TAG, 0.0))
        if reason is not None:
            parts.append(f"| step rejected: {reason}")
        print(" ".join(parts), file=self.stream, flush=True)

    def close(self) -> None:
        pass
