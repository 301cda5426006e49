"""Loggers: TensorBoard tags on the env-step axis, metrics.jsonl, console lines."""

from __future__ import annotations

import io
import math
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from maml_rl.logger import (
    ConsoleLogger,
    InMemoryLogger,
    JsonlLogger,
    MultiLogger,
    TensorBoardLogger,
    read_jsonl,
)

METRICS = {
    "iteration": 1,
    "rollout/return_pre_adapt": -40.0,
    "rollout/return_post_adapt": -12.5,
    "train/kl": 0.009,
    "time/iteration_s": 2.0,
    "time/sample_s": 1.5,
    "time/update_s": 0.5,
}


def test_tensorboard_scalars_use_env_steps_and_skip_counters(tmp_path: Path) -> None:
    tb = TensorBoardLogger(tmp_path, config={"seed": 1, "maml.fast_lr": 0.1, "env.kwargs": {}})
    tb.write(METRICS, step=4000)
    tb.write({**METRICS, "iteration": 2, "train/kl": 0.005}, step=8000)
    tb.close()
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    assert set(scalars) == {k for k in METRICS if "/" in k}
    kl = acc.Scalars("train/kl")
    assert [e.step for e in kl] == [4000, 8000]
    assert math.isclose(kl[1].value, 0.005, rel_tol=1e-6)
    assert "config/text_summary" in acc.Tags()["tensors"]


def test_jsonl_lines_and_resume_truncation(tmp_path: Path) -> None:
    path = tmp_path / "run" / "metrics.jsonl"
    log = JsonlLogger(path)
    for i in range(1, 5):
        log.write({**METRICS, "iteration": i}, step=1000 * i)
    log.close()
    records = read_jsonl(path)
    assert [r["iteration"] for r in records] == [1, 2, 3, 4]
    assert records[2]["env_steps"] == 3000 and records[2]["train/kl"] == 0.009

    # A resume from the checkpoint after iteration 2 drops what came after it.
    log = JsonlLogger(path, keep_until_iteration=2)
    log.write({**METRICS, "iteration": 3}, step=3001)
    log.close()
    assert [(r["iteration"], r["env_steps"]) for r in read_jsonl(path)] == [
        (1, 1000),
        (2, 2000),
        (3, 3001),
    ]


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 1}\n{"iterat')
    assert read_jsonl(path) == [{"iteration": 1}]


def test_console_line_and_composition() -> None:
    stream = io.StringIO()
    memory = InMemoryLogger()
    log = MultiLogger([ConsoleLogger(num_batches=40, stream=stream), memory])
    log.write(METRICS, step=1_234_567)
    log.close()
    line = stream.getvalue()
    assert line.count("\n") == 1
    assert "[ 1/40]" in line and "1,234,567" in line
    assert "pre   -40.00" in line and "post   -12.50" in line
    assert "success" not in line
    assert memory.records == [(1_234_567, METRICS)]


def test_console_line_shows_success_rates_where_reported() -> None:
    stream = io.StringIO()
    success = {"rollout/success_pre_adapt": 0.25, "rollout/success_post_adapt": 0.875}
    ConsoleLogger(num_batches=40, stream=stream).write({**METRICS, **success}, step=10)
    assert "| success pre  25.0 % post  87.5 % |" in stream.getvalue()
