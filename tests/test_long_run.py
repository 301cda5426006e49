"""``benchmarks/long_run.py``: runs presets to their budget across invocations, resumes
from the checkpoint, never retrains what is finished, reports where each run stands.

Real subprocesses (the driver starts ``maml-rl train`` itself), a tiny Navigation2D
preset.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "long_run.py"


def long_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def iterations(run_dir: Path) -> list[int]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["iteration"] for line in lines]


@pytest.fixture
def preset(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_nav.yaml"
    body = ["agent: maml_trpo", "num_batches: 2", "env:", "  id: MetaRL/Navigation2D-v0"]
    path.write_text("\n".join(body) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_a_run_goes_to_its_budget_resumes_and_is_never_retrained(
    preset: Path, tmp_path: Path
) -> None:
    root = tmp_path / "runs"
    run_dir = root / "tiny_nav"
    args = ["run", str(preset), "--root", str(root), *TINY]

    first = long_run(*args)
    assert first.returncode == 0, first.stderr
    assert iterations(run_dir) == [1, 2]
    metrics = (run_dir / "metrics.jsonl").read_bytes()

    again = long_run(*args)  # finished at the preset's budget: nothing is trained
    assert again.returncode == 0, again.stderr
    assert "finished (2/2); skipped" in again.stdout
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics

    longer = long_run(*args, "num_batches=3")  # a larger budget continues the same run
    assert longer.returncode == 0, longer.stderr
    assert iterations(run_dir) == [1, 2, 3]
    metrics = (run_dir / "metrics.jsonl").read_bytes()

    # The same larger budget again: skipped (the trainer would refuse a finished run).
    same = long_run(*args, "num_batches=3")
    assert same.returncode == 0, same.stderr
    assert "finished (3/3); skipped" in same.stdout
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics

    status = long_run("status", "--root", str(root))
    assert status.returncode == 0, status.stderr
    (row,) = json.loads(status.stdout.splitlines()[-1])["runs"]
    assert row["run"] == "tiny_nav"
    assert row["iterations_done"] == 3 and row["num_batches"] == 3 and row["finished"]
    assert row["env_steps"] > 0


def test_a_missing_preset_is_one_line(tmp_path: Path) -> None:
    result = long_run("run", str(tmp_path / "nope.yaml"), "--root", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"long_run: preset {tmp_path / 'nope.yaml'} not found"


def test_the_overrides_passed_on_resume_are_the_trainers_resumable_keys() -> None:
    import importlib.util

    from maml_rl.trainer import _RESUMABLE_PREFIXES, RESUMABLE_KEYS

    spec = importlib.util.spec_from_file_location("long_run", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    passed = set(module.RESUMABLE_OVERRIDES)
    # Every key passed on is one the trainer takes on resume (else the resume fails)...
    assert passed <= {f"{k}=" for k in RESUMABLE_KEYS} | set(_RESUMABLE_PREFIXES)
    # ...and every one it takes that changes how a run trains is passed on.
    assert {
        f"{k}="
        for k in RESUMABLE_KEYS
        if k not in ("logdir", "run_name", "video_every", "video_tasks")
    } | set(_RESUMABLE_PREFIXES) <= passed


@pytest.mark.slow
def test_each_finished_run_is_evaluated_once(preset: Path, tmp_path: Path) -> None:
    """``--evaluate``: the run trains to its budget, then its evaluation writes
    ``eval-paper/``; started again, neither is redone; a longer budget redoes both."""
    root = tmp_path / "runs"
    run_dir = root / "tiny_nav"
    evaluation = "--num-tasks 2 --adapt-steps 1 --episodes-per-step 2 --no-progress"
    args = ["run", str(preset), "--root", str(root), *TINY, "--evaluate", evaluation]

    first = long_run(*args)
    assert first.returncode == 0, first.stderr
    result = run_dir / "eval-paper" / "eval.json"
    evaluated = json.loads(result.read_text(encoding="utf-8"))
    assert evaluated["runs"][0]["iteration"] == 2
    assert evaluated["settings"]["num_tasks"] == 2
    stamp = result.stat().st_mtime_ns

    again = long_run(*args)
    assert again.returncode == 0, again.stderr
    assert "eval-paper is up to date; skipped" in again.stdout
    assert result.stat().st_mtime_ns == stamp

    longer = long_run(*args, "num_batches=3")
    assert longer.returncode == 0, longer.stderr
    assert json.loads(result.read_text(encoding="utf-8"))["runs"][0]["iteration"] == 3

    # A queue's earlier stage, run again once a later one has trained past it: the
    # checkpoint (iteration 4) is not that stage's, so it is not evaluated there.
    trained_on = long_run("run", str(preset), "--root", str(root), *TINY, "num_batches=4")
    assert trained_on.returncode == 0, trained_on.stderr
    stamp = result.stat().st_mtime_ns
    earlier = long_run(*args, "num_batches=3")
    assert earlier.returncode == 0, earlier.stderr
    assert "is past this budget (4/3)" in earlier.stdout
    assert result.stat().st_mtime_ns == stamp
    assert json.loads(result.read_text(encoding="utf-8"))["runs"][0]["iteration"] == 3
