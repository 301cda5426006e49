"""``maml-rl train`` end to end: run folder contents, resume, Ctrl-C, one-line errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from maml_rl.checkpoint import load_checkpoint
from maml_rl.cli import main
from maml_rl.config import load_config
from maml_rl.logger import read_jsonl

from conftest import TINY, run_cli

TAGS = {
    "rollout/return_pre_adapt",
    "rollout/return_post_adapt",
    "rollout/episode_length",
    "train/surrogate_loss",
    "train/kl",
    "time/env_steps_per_s",
    "time/sample_s",
    "time/update_s",
}


@pytest.mark.slow
def test_two_iteration_run_writes_logs_metrics_and_checkpoint(tmp_path: Path) -> None:
    proc = run_cli("train", "--logdir", str(tmp_path), "--num-batches", "2", "--seed", "3", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "return pre" in proc.stdout and "post" in proc.stdout
    assert f"tensorboard --logdir {tmp_path}" in proc.stdout

    (run_dir,) = tmp_path.iterdir()
    assert run_dir.name.startswith("Navigation2D-v0-maml_trpo-")
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) >= TAGS
    steps = [e.step for e in acc.Scalars("rollout/return_post_adapt")]
    assert steps == [2 * 2 * 5 * 2, 2 * 2 * 2 * 5 * 2]  # x-axis: cumulative env steps

    records = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["iteration"] for r in records] == [1, 2]
    assert [r["env_steps"] for r in records] == steps
    config = load_config(run_dir / "config.yaml")
    assert (config.seed, config.num_batches, config.maml.meta_batch_size) == (3, 2, 2)
    assert load_checkpoint(run_dir)["iteration"] == 2

    # --resume continues the run in place (same folder, stored config).
    assert main(["train", "--resume", str(run_dir), "--num-batches", "3"]) == 0
    assert [r["iteration"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3]
    assert load_checkpoint(run_dir)["iteration"] == 3


@pytest.mark.slow
def test_user_errors_are_one_line_exit_2_no_traceback(tmp_path: Path) -> None:
    proc = run_cli("train", "maml.fast_lrr=0.1")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "maml-rl train: error: unknown config key 'maml.fast_lrr' in section 'maml'; "
        "did you mean 'maml.fast_lr'?"
    )
    assert proc.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "fast_lr"], "overrides must look like KEY=VALUE"),
        (["train", "--config", "missing.yaml"], "config file 'missing.yaml' not found"),
        (["train", "--resume", "no/such/run"], "no run folder or checkpoint at 'no/such/run'"),
        (["train", "--seed", "x"], "seed must be an integer, got str 'x'"),
        (["train", "--num-batches", "0"], "num_batches must be ≥ 1, got 0"),
        (["train", "--sampler", "thread"], "sampler.backend must be one of"),
        (["train", "maml.gamma=2"], "maml.gamma must be ≥ 0 and ≤ 1, got 2"),
        (["train", "env.id=MetaRL/Navigation2d-v0"], "did you mean 'MetaRL/Navigation2D-v0'"),
        (["train", "env.kwargs.tsk=1"], "env.kwargs.tsk: MetaRL/Navigation2D-v0 takes no argument"),
    ],
)
def test_bad_input(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*args, f"logdir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and err.startswith("maml-rl train: error: ")
    assert not any(tmp_path.iterdir())  # nothing was started


def test_resume_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "has no checkpoint.pt" in capsys.readouterr().err
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "is not a maml-rl checkpoint" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path), "--config", "x.yaml"]) == 2
    assert "drop --config" in capsys.readouterr().err


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "sigint_ignored"),
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["ctrl_c", "sigterm", "kill_int_background_job"],
)
def test_interrupt_checkpoints_stops_workers_and_exits_130(
    signum: signal.Signals, sigint_ignored: bool, tmp_path: Path
) -> None:
    def preexec() -> None:
        if sigint_ignored:  # what a shell does to `cmd &` without job control
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "maml_rl.cli",
            "train",
            "--logdir",
            str(tmp_path),
            "--num-batches",
            "100000",
            "checkpoint_every=0",
            "--sampler",
            "process",
            "--workers",
            "2",
            *TINY,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a shell job
        preexec_fn=preexec,
    )
    assert proc.stdout is not None
    try:
        # Wait until two iterations have finished: the checkpoint then holds at least the
        # first (the second may still be logging when the signal lands).
        finished = 0
        for line in proc.stdout:
            finished += line.startswith("[") and "return pre" in line
            if finished == 2:
                break
        if signum == signal.SIGINT and not sigint_ignored:
            os.killpg(proc.pid, signum)  # Ctrl-C in a terminal reaches the whole group
        else:
            proc.send_signal(signum)  # a scheduler's preemption, or `kill -INT PID`
        _, err = proc.communicate(timeout=60)
        # The workers are gone too (nothing left in the process group).
        for _ in range(100):
            if not _group_alive(proc.pid):
                break
            time.sleep(0.1)
        assert not _group_alive(proc.pid), "worker processes outlived the trainer"
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("maml-rl train: interrupted after iteration ")
    assert "--resume" in line
    (run_dir,) = tmp_path.iterdir()
    assert load_checkpoint(run_dir)["iteration"] >= 1
