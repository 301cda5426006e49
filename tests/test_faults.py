"""Fault injection: every failure is one line on stderr, and nothing is lost.

Each case asserts the single line, the exit status (2: refused before any work; 1: a run
that had to stop, its last good state checkpointed; 130: interrupted) and, where a
checkpoint exists, that it still loads and the run resumes bit-identically: a diverged
training, filesystem errors, a dead sampler worker, an unreachable Ray cluster, inputs
that used to be accepted silently, and unreadable or unsafe checkpoints.

The faults are real where they can be: a worker is killed with SIGKILL; a read-only
filesystem, a full disk and a file-size limit are mounts in a private mount namespace
(``unshare``) or ``RLIMIT_FSIZE`` of a CLI subprocess, and a ``chmod``-ed folder is
written by a process without ``CAP_DAC_OVERRIDE``. In-process CLI calls see no Python
warning (pytest captures those), so the cases where a library warns on the way to the
failure run with warnings as errors or in a subprocess.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pickle
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from maml_rl.agents.maml_ppo import MAMLPPO
from maml_rl.checkpoint import load_checkpoint
from maml_rl.cli import main
from maml_rl.config import load_config
from maml_rl.divergence import REJECTION_TAG, StepRejection
from maml_rl.logger import ConsoleLogger, JsonlLogger, read_jsonl
from maml_rl.optim import trust_region_step
from maml_rl.samplers import ProcessSampler
from maml_rl.samplers.ray import check_ray_address
from maml_rl.trainer import Diverged, Trainer, likely_cause

from conftest import TINY, run_cli


def one_line(capsys: pytest.CaptureFixture[str], argv: Sequence[str]) -> tuple[int, str, str]:
    """Run the CLI in-process; ``(exit status, stdout, the single stderr line)``."""
    rc = main(list(argv))
    out, err = capsys.readouterr()
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return rc, out, err.rstrip("\n")


def strict_records(path: Path) -> list[dict[str, Any]]:
    """``metrics.jsonl`` read by a strict JSON parser (a bare ``NaN`` token fails)."""

    def refuse(token: str) -> None:
        raise ValueError(f"not strict JSON: {token}")

    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line, parse_constant=refuse) for line in lines]


def without_timings(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]


def same_state(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- 1. divergence ----------------------------------------------------------------------------

#: Sizes at which each divergent setting below fails in every iteration.
DIVERGE = [
    "env.max_episode_steps=10",
    "maml.meta_batch_size=4",
    "maml.fast_batch_size=4",
    "trpo.cg_iters=3",
    "update_threads=1",
    "num_batches=8",
]


@pytest.mark.parametrize(
    ("overrides", "reason", "cause"),
    [
        (
            ["trpo.max_kl=1e6"],
            StepRejection.UPDATE,
            "the outer step with trpo.max_kl=1e6 makes the policy's outputs non-finite; "
            "lower trpo.max_kl",
        ),
        (
            ["maml.fast_lr=1e30"],
            StepRejection.ADAPTED,
            "inner step α=1e30 makes the adapted policy non-finite; lower maml.fast_lr",
        ),
        (
            ["maml.fast_lr=1e6"],
            StepRejection.ADAPTED,
            "inner step α=1e6 makes the adapted policy non-finite; lower maml.fast_lr",
        ),
        (
            ["agent=maml_ppo", "ppo.meta_lr=1e6"],
            StepRejection.UPDATE,
            "the outer step with ppo.meta_lr=1e6 makes the policy's outputs non-finite; "
            "lower ppo.meta_lr",
        ),
        (
            ["agent=maml_ppo", "maml.fast_lr=1e6"],
            StepRejection.ADAPTED,
            "inner step α=1e6 makes the adapted policy non-finite; lower maml.fast_lr",
        ),
    ],
    ids=["max_kl", "fast_lr_1e30", "fast_lr_1e6", "ppo_meta_lr", "ppo_fast_lr"],
)
def test_divergence_rejects_every_step_then_stops_with_the_cause(
    overrides: list[str],
    reason: StepRejection,
    cause: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, out, err = one_line(capsys, ["train", *DIVERGE, *overrides, f"logdir={tmp_path}"])
    assert rc == 1
    assert err.startswith(
        "maml-rl train: error: training stopped: the steps of iterations 1-5 were all rejected"
    )
    assert f"({reason.text} ×5)" in err and f"likely cause: {cause};" in err
    (run_dir,) = tmp_path.iterdir()
    assert err.endswith(f"the checkpoint in {run_dir} holds θ as of iteration 0")
    lines = [line for line in out.splitlines() if line.startswith("[")]
    assert len(lines) == 5 and all(
        line.endswith(f"| step rejected: {reason.text}") for line in lines
    )

    records = strict_records(run_dir / "metrics.jsonl")
    assert [r[REJECTION_TAG] for r in records] == [float(reason)] * 5
    assert all(r["step_rejected_reason"] == reason.text for r in records)
    # No step was taken: the checkpoint holds the initial θ (and PPO's untouched Adam).
    state = load_checkpoint(run_dir)
    assert state["iteration"] == 5
    config = load_config(run_dir / "config.yaml")
    fresh = Trainer(config, tmp_path / "fresh", console=False)
    fresh.close()
    assert same_state(state["policy"], fresh.policy.state_dict())
    if config.agent == "maml_ppo":
        assert state["agent"]["optimizer"]["state"] == {}


@pytest.mark.parametrize("agent", ["maml_trpo", "maml_ppo"])
def test_a_tiny_initial_std_stops_the_run_and_is_named_as_the_cause(
    agent: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Whether σ = 1e-30 makes the meta-gradient overflow or vanish depends on the CPU's
    # float path (inf on the Intel machine of earlier CI runs; exactly 0 on an AMD EPYC,
    # where a − μ rounds to 0): either way the run stops after 5 iterations, naming σ.
    rc, _, err = one_line(
        capsys,
        ["train", *DIVERGE, f"agent={agent}", "policy.init_std=1e-30", f"logdir={tmp_path}"],
    )
    assert rc == 1
    (run_dir,) = tmp_path.iterdir()
    (reason,) = {
        StepRejection(int(r[REJECTION_TAG])) for r in read_jsonl(run_dir / "metrics.jsonl")
    }
    assert reason in (StepRejection.GRADIENT, StepRejection.ZERO_GRADIENT)
    effect = "non-finite" if reason == StepRejection.GRADIENT else "vanish"
    assert f"({reason.text} ×5)" in err
    assert (
        f"likely cause: policy.init_std=1e-30 makes the meta-gradient {effect}; raise "
        "policy.init_std;" in err
    )
    assert err.endswith(f"the checkpoint in {run_dir} holds θ as of iteration 0")


def test_a_zero_meta_gradient_is_rejected_and_named() -> None:
    calls: list[object] = []
    result, theta = _region(
        torch.ones(3), lambda p: calls.append(p) or (0.0, 0.0), grad=torch.zeros(3)
    )
    assert result.rejected == StepRejection.ZERO_GRADIENT and result.rejected.abnormal
    assert calls == [] and torch.equal(theta, torch.ones(3))  # nothing tried, θ unchanged
    assert not StepRejection.NO_IMPROVEMENT.abnormal
    healthy = load_config(None, [])
    assert likely_cause(StepRejection.ZERO_GRADIENT, healthy).startswith(
        "within every task the episodes scored alike"
    )


def test_diverged_run_resumes_bit_identically(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [*DIVERGE, "maml.fast_lr=1e6", "num_batches=4"]
    rc, _, err = one_line(
        capsys, ["train", *base, "max_rejected_iterations=2", f"logdir={tmp_path}", "run_name=a"]
    )
    assert rc == 1 and "iterations 1-2 were all rejected" in err
    assert load_checkpoint(tmp_path / "a")["iteration"] == 2
    assert main(["train", "--resume", str(tmp_path / "a"), "max_rejected_iterations=0"]) == 0
    assert (
        main(["train", *base, "max_rejected_iterations=0", f"logdir={tmp_path}", "run_name=b"]) == 0
    )
    a, b = (without_timings(read_jsonl(tmp_path / r / "metrics.jsonl")) for r in "ab")
    assert a == b and len(a) == 4
    assert same_state(
        load_checkpoint(tmp_path / "a")["policy"], load_checkpoint(tmp_path / "b")["policy"]
    )


def test_only_a_streak_with_a_non_finite_rejection_stops_the_run(tmp_path: Path) -> None:
    # Iteration 2 diverges alone; 4-6 are TRPO line searches that found no better step
    # (finite, never a reason to stop); 7 diverges: 4-7 are 4 ≥ 3 rejections, one non-finite.
    reasons = [0, 3, 0, 1, 1, 1, 4, 0]
    config = load_config(None, [*TINY, "num_batches=8", "max_rejected_iterations=3"])
    trainer = Trainer(config, tmp_path / "run", console=False)
    theta = {k: v.detach().clone() for k, v in trainer.policy.state_dict().items()}

    def step(*_: object) -> dict[str, float]:
        code = reasons[trainer.iteration]
        return {"train/step_accepted": float(code == 0), REJECTION_TAG: float(code)}

    trainer.agent.step = step  # type: ignore[method-assign]
    with pytest.raises(Diverged) as info:
        trainer.train()
    message = str(info.value)
    assert "\n" not in message
    assert (
        "iterations 4-7 were all rejected (no better step within the trust region ×3, " in message
    )
    assert "the outer loss is non-finite ×1)" in message
    assert message.endswith("holds θ as of iteration 3")
    state = load_checkpoint(tmp_path / "run")
    assert state["iteration"] == 7 and same_state(state["policy"], theta)


def test_rejected_ppo_step_leaves_theta_and_adam_untouched(tmp_path: Path) -> None:
    config = load_config(None, [*TINY, "agent=maml_ppo", "num_batches=3"])
    trainer = Trainer(config, tmp_path / "run", console=False)
    try:
        assert trainer.run_iteration()["train/step_accepted"] == 1.0  # Adam has moments now
        agent = trainer.agent
        assert isinstance(agent, MAMLPPO)
        theta = {k: v.detach().clone() for k, v in trainer.policy.state_dict().items()}
        adam = agent.optimizer.state_dict()
        adam_state = {i: {k: v.clone() for k, v in s.items()} for i, s in adam["state"].items()}
        agent.ppo = dataclasses.replace(agent.ppo, meta_lr=1e6)
        metrics = trainer.run_iteration()
        assert metrics[REJECTION_TAG] == float(StepRejection.UPDATE)
        assert metrics["train/step_accepted"] == 0.0 and metrics["train/step_norm"] == 0.0
        assert same_state(trainer.policy.state_dict(), theta)
        after = agent.optimizer.state_dict()["state"]
        assert after.keys() == adam_state.keys()
        assert all(same_state(after[i], adam_state[i]) for i in adam_state)
    finally:
        trainer.close()


def _region(
    theta: torch.Tensor, evaluate: Any, *, loss: float = 1.0, grad: Any = None, **kwargs: Any
) -> Any:
    params = {"w": theta.clone()}
    g = torch.full_like(theta, -1.0) if grad is None else grad
    settings = dict(max_kl=0.01, damping=0.0, cg_iters=1, ls_max_steps=10, ls_backtrack_ratio=0.8)
    settings.update(kwargs)
    hvp = settings.pop("hvp", lambda v: v)
    result = trust_region_step(params, loss, g, hvp, evaluate, **settings)  # type: ignore[arg-type]
    return result, params["w"]


def test_trust_region_never_evaluates_a_non_finite_candidate() -> None:
    seen: list[torch.Tensor] = []

    def evaluate(candidate: Mapping[str, torch.Tensor]) -> tuple[float, float]:
        seen.append(candidate["w"].clone())
        return 0.5, 0.0

    # θ near float32's largest value; a step of 1e38 overflows until shrunk to ≤ 0.33 of it.
    theta = torch.tensor([3e38])
    result, after = _region(theta, evaluate, max_kl=5e75)
    assert all(bool(torch.isfinite(c).all()) for c in seen) and len(seen) == 1
    assert result.accepted and result.line_search_steps == 6 and bool(torch.isfinite(after).all())

    # A full step that is itself infinite: nothing is evaluated, θ stays.
    seen.clear()
    result, after = _region(torch.tensor([1.0]), evaluate, max_kl=1e300)
    assert not seen and not result.accepted and result.rejected == StepRejection.UPDATE
    assert torch.equal(after, torch.tensor([1.0]))


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"loss": math.nan}, StepRejection.LOSS),
        ({"grad": torch.tensor([math.inf])}, StepRejection.GRADIENT),
        ({"hvp": lambda v: v * math.nan}, StepRejection.DIRECTION),
        ({"value": (math.nan, math.nan)}, StepRejection.UPDATE),
        ({"value": (2.0, 0.0)}, StepRejection.NO_IMPROVEMENT),
    ],
    ids=["loss", "gradient", "direction", "candidates", "no_improvement"],
)
def test_trust_region_says_why_it_rejected(kwargs: dict[str, Any], reason: StepRejection) -> None:
    value = kwargs.pop("value", (math.nan, math.nan))
    result, after = _region(torch.tensor([1.0, 2.0]), lambda _: value, **kwargs)
    assert not result.accepted and result.rejected == reason
    assert torch.equal(after, torch.tensor([1.0, 2.0]))


def test_metrics_jsonl_is_strict_json_and_names_the_rejection(tmp_path: Path) -> None:
    logger = JsonlLogger(tmp_path / "metrics.jsonl")
    logger.write({"iteration": 1, "train/kl": math.nan, "train/grad_norm": math.inf}, step=10)
    logger.write({"iteration": 2, REJECTION_TAG: float(StepRejection.LOSS)}, step=20)
    logger.close()
    first, second = strict_records(tmp_path / "metrics.jsonl")
    assert first == {"env_steps": 10, "iteration": 1, "train/kl": None, "train/grad_norm": None}
    assert second["step_rejected_reason"] == "the outer loss is non-finite"

    class Lines:
        text = ""

        def write(self, s: str) -> None:
            self.text += s

        def flush(self) -> None:
            pass

    stream = Lines()
    console = ConsoleLogger(2, stream)  # type: ignore[arg-type]
    console.write({"iteration": 2, REJECTION_TAG: float(StepRejection.GRADIENT)}, step=20)
    assert stream.text.rstrip().endswith("| step rejected: the meta-gradient is non-finite")


# -- 2. filesystem errors ---------------------------------------------------------------------

LOGDIR_FIX = "pass a writable folder with --logdir DIR (or logdir=DIR)"


CLI = f"{shlex.quote(sys.executable)} -m maml_rl.cli"


@functools.cache
def _mount_namespace() -> tuple[str, ...] | None:
    """The ``unshare`` prefix that runs a command in a private mount namespace where it may
    mount filesystems (as root, or in a user namespace), or None where neither works."""
    if shutil.which("unshare") is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        for prefix in (
            ("unshare", "--mount", "--propagation", "private"),
            ("unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"),
        ):
            probe = [*prefix, "mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", folder]
            if subprocess.run(probe, capture_output=True).returncode == 0:
                return prefix
    return None


def with_mounts(script: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run the shell ``script`` in a private mount namespace: its mounts (a read-only
    filesystem, a tiny one) are real, and vanish with it."""
    prefix = _mount_namespace()
    if prefix is None:
        pytest.skip("mounting a filesystem needs root or user namespaces (unshare --mount)")
    return subprocess.run(
        [*prefix, "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def read_only_tmpfs(folder: Path) -> str:
    """Shell: mount an empty read-only filesystem on ``folder``."""
    return f"mount -t tmpfs -o ro,size=64k tmpfs {shlex.quote(str(folder))}"


def cli_args(args: Sequence[str | Path]) -> str:
    return " ".join(shlex.quote(str(a)) for a in args)


def without_root_override() -> list[str]:
    """A command prefix under which a ``chmod``-ed folder is not writable: none for a
    user; for root, ``setpriv`` dropping the capabilities that bypass permissions."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("as root, a chmod 555 folder stays writable without setpriv")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


def test_logdir_that_is_a_file_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "afile"
    file.write_text("")
    rc, out, err = one_line(capsys, ["train", *TINY, "--logdir", str(file)])
    assert rc == 2 and out == ""
    assert err == f"maml-rl train: error: logdir '{file}' is a file, not a folder; {LOGDIR_FIX}"
    rc, _, err = one_line(capsys, ["train", *TINY, "--logdir", str(file / "sub")])
    assert rc == 2 and err.endswith(f"is inside the file '{file}', not a folder; {LOGDIR_FIX}")
    assert sorted(tmp_path.iterdir()) == [file]


@pytest.mark.slow
def test_logdir_on_a_read_only_filesystem_is_refused_before_any_work(tmp_path: Path) -> None:
    mnt = tmp_path / "ro"
    mnt.mkdir()
    logdir = mnt / "runs"
    done = with_mounts(
        f"{read_only_tmpfs(mnt)} && exec {CLI} train {cli_args([*TINY, '--logdir', logdir])}"
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        f"maml-rl train: error: cannot write logdir '{logdir}' (in '{mnt}'): read-only file "
        f"system; {LOGDIR_FIX}\n"
    )


@pytest.mark.slow
def test_logdir_in_a_folder_without_write_permission_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        done = subprocess.run(
            [
                *without_root_override(),
                sys.executable,
                "-m",
                "maml_rl.cli",
                "train",
                *TINY,
                "--logdir",
                str(locked / "runs"),
            ],
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
    finally:
        locked.chmod(0o755)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        f"maml-rl train: error: cannot write logdir '{locked / 'runs'}' (in '{locked}'): "
        f"permission denied; {LOGDIR_FIX}\n"
    )
    assert not any(locked.iterdir())


def test_resume_takes_the_checkpoint_file_of_a_run_or_says_what_to_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["train", *TINY, f"logdir={tmp_path}", "keep_checkpoint_every=1"]
    assert main([*base, "num_batches=2", "run_name=a"]) == 0
    assert main([*base, "num_batches=3", "run_name=b"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "a" / "checkpoint.pt"), "num_batches=3"]) == 0
    assert "resuming" in capsys.readouterr().out
    a, b = (without_timings(read_jsonl(tmp_path / r / "metrics.jsonl")) for r in "ab")
    assert a == b and len(a) == 3

    kept = tmp_path / "a" / "checkpoints" / "iteration_000001.pt"
    rc, _, err = one_line(capsys, ["train", "--resume", str(kept)])
    assert rc == 2
    assert err == (
        f"maml-rl train: error: resume takes a run folder, and '{kept}' is a file: to continue "
        "from this checkpoint, copy it as checkpoint.pt into a new folder and resume that "
        "folder (maml-rl evaluate takes the file as it is)"
    )


@pytest.mark.slow
def test_resuming_a_run_on_a_read_only_filesystem_is_refused_before_any_work(
    tmp_path: Path,
) -> None:
    base = ["train", *TINY, f"logdir={tmp_path}"]
    assert main([*base, "num_batches=1", "run_name=a"]) == 0
    assert main([*base, "num_batches=2", "run_name=b"]) == 0
    run = tmp_path / "a"
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    q = shlex.quote(str(run))  # the run folder, bound read-only onto itself
    done = with_mounts(
        f"mount --bind {q} {q} && mount -o remount,bind,ro {q} && "
        f"exec {CLI} train --resume {q} num_batches=2"
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        f"maml-rl train: error: cannot write run folder '{run}': read-only file system; make it "
        "writable, or copy the run and resume the copy\n"
    )
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    # Writable again, the run resumes and ends where the uninterrupted one did.
    assert main(["train", "--resume", str(run), "num_batches=2"]) == 0
    a, b = (without_timings(read_jsonl(tmp_path / r / "metrics.jsonl")) for r in "ab")
    assert a == b and len(a) == 2
    assert same_state(load_checkpoint(run)["policy"], load_checkpoint(tmp_path / "b")["policy"])


def no_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if an evaluation starts (the output checks come first)."""

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the evaluation ran before its output folder was checked")

    monkeypatch.setattr("maml_rl.evaluation.EvalSamplers", refuse)


EVAL = ["--num-tasks", "2", "--adapt-steps", "1", "--episodes-per-step", "2", "--no-progress"]


def test_evaluate_out_that_is_a_file_is_refused_before_the_evaluation(
    tiny_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    no_evaluation(monkeypatch)
    file = tmp_path / "afile"
    file.write_text("")
    rc, out, err = one_line(capsys, ["evaluate", str(tiny_run), "--out", str(file), *EVAL])
    assert rc == 2 and out == ""
    assert err == (
        f"maml-rl evaluate: error: output folder '{file}' is a file, not a folder; pass a "
        "writable folder with --out DIR"
    )


@pytest.mark.slow
def test_evaluate_out_on_a_read_only_filesystem_is_refused_before_the_evaluation(
    tiny_run: Path, tmp_path: Path
) -> None:
    mnt = tmp_path / "ro"
    mnt.mkdir()
    out_dir = mnt / "eval"
    # The evaluation would take seconds and write into the run folder's neighbourhood
    # first; the refusal comes before it (no eval.json anywhere).
    done = with_mounts(
        f"{read_only_tmpfs(mnt)} && exec {CLI} evaluate "
        f"{cli_args([tiny_run, '--out', out_dir, *EVAL])}"
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        f"maml-rl evaluate: error: cannot write output folder '{out_dir}' (in '{mnt}'): "
        "read-only file system; pass a writable folder with --out DIR\n"
    )
    assert not list(tiny_run.rglob("eval.json"))


#: A run whose checkpoint (about 47 KB) is larger than the room left on a "full" disk,
#: while a line of metrics.jsonl and of the TensorBoard log (about 1 KB each) still fit.
FULL = [*TINY, "policy.hidden_sizes=[64, 64]", "checkpoint_every=1"]


def check_full_disk_stop(run: Path, copy: Path, err: str, reason: str, remedy: str) -> None:
    """The one line of a run stopped by a failed checkpoint write of iteration 3 and the
    state left: the checkpoint of iteration 2, no temporary file."""
    assert err == (
        f"maml-rl train: error: training stopped: cannot write '{run / 'checkpoint.pt'}' "
        f"({reason}); the checkpoint of iteration 2 in {run} is intact; {remedy}, then "
        f"continue with: maml-rl train --resume {run}\n"
    )
    assert not [p.name for p in copy.rglob("*.tmp")]
    assert load_checkpoint(copy)["iteration"] == 2


def resumes_like_uninterrupted(run: Path, tmp_path: Path) -> None:
    assert main(["train", "--resume", str(run), "num_batches=4"]) == 0
    assert main(["train", *FULL, f"logdir={tmp_path}", "num_batches=4", "run_name=b"]) == 0
    a, b = (without_timings(read_jsonl(r / "metrics.jsonl")) for r in (run, tmp_path / "b"))
    assert a == b and len(a) == 4
    assert same_state(load_checkpoint(run)["policy"], load_checkpoint(tmp_path / "b")["policy"])


@pytest.mark.slow
def test_full_disk_while_checkpointing_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    assert main(["train", *FULL, f"logdir={tmp_path}", "num_batches=2", "run_name=a"]) == 0
    disk, copy = tmp_path / "disk", tmp_path / "copy"
    disk.mkdir()
    d, run = shlex.quote(str(disk)), disk / "a"
    done = with_mounts(
        f"mount -t tmpfs -o size=1m tmpfs {d} && cp -a {shlex.quote(str(tmp_path / 'a'))} {d} && "
        f"(dd if=/dev/zero of={d}/fill bs=4k 2>/dev/null || true) && "  # the disk is full
        f"truncate -s -32k {d}/fill && "  # 32 KiB left
        f"{{ {CLI} train --resume {shlex.quote(str(run))} num_batches=4; rc=$?; }}; "
        f"cp -a {shlex.quote(str(run))} {shlex.quote(str(copy))}; exit $rc"
    )
    assert done.returncode == 1, done.stderr
    check_full_disk_stop(
        run, copy, done.stderr, "no space left on device", "free space on that disk"
    )
    resumes_like_uninterrupted(copy, tmp_path)


@pytest.mark.slow
def test_a_write_over_the_file_size_limit_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    assert main(["train", *FULL, f"logdir={tmp_path}", "num_batches=2", "run_name=a"]) == 0
    run = tmp_path / "a"
    assert (run / "checkpoint.pt").stat().st_size > 40_000
    limit = 24_000  # bytes per file: every file of the run but checkpoint.pt stays below

    def limit_file_size() -> None:  # Python ignores SIGXFSZ: the write fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    done = subprocess.run(
        [sys.executable, "-m", "maml_rl.cli", "train", "--resume", str(run), "num_batches=4"],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        preexec_fn=limit_file_size,
    )
    assert done.returncode == 1, done.stderr
    check_full_disk_stop(run, run, done.stderr, "file too large", "check that path and its disk")
    resumes_like_uninterrupted(run, tmp_path)


def test_stale_temporary_checkpoints_are_removed_at_the_next_start(tmp_path: Path) -> None:
    assert main(["train", *TINY, "num_batches=1", f"logdir={tmp_path}", "run_name=a"]) == 0
    run = tmp_path / "a"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])  # a writer killed mid-write
    gone.wait()
    stale = [run / f".checkpoint.pt.{gone.pid}.tmp", run / "checkpoints" / f".i.pt.{gone.pid}.tmp"]
    live = run / f".checkpoint.pt.{os.getppid()}.tmp"  # a writer that still runs
    for f in [*stale, live]:
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(b"torn")
    assert main(["train", "--resume", str(run), "num_batches=2"]) == 0
    assert not any(f.exists() for f in stale) and live.exists()
    assert load_checkpoint(run)["iteration"] == 2


# -- 3. a dead sampler worker -----------------------------------------------------------------


def kill_a_worker_before_call(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """SIGKILL ``process`` worker 0 just before the ``call``-th sample call (from 0)."""
    real = ProcessSampler.sample
    calls: list[int] = []

    def sample(self: ProcessSampler, *args: Any, **kwargs: Any) -> Any:
        if len(calls) == call:
            victim = self._pool.processes[0]
            os.kill(victim.pid, signal.SIGKILL)
            victim.join(timeout=10)
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ProcessSampler, "sample", sample)


PROCESS = ["--sampler", "process", "--workers", "2"]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_dead_worker_checkpoints_the_last_finished_iteration_and_says_how_to_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = [*TINY, f"logdir={tmp_path}", "checkpoint_every=0", "num_batches=3"]
    kill_a_worker_before_call(monkeypatch, 2)  # iteration 2's first sample call
    rc, _, err = one_line(capsys, ["train", *base, *PROCESS, "run_name=a"])
    run = tmp_path / "a"
    assert rc == 1
    assert re.fullmatch(
        rf"maml-rl train: error: training stopped: sampler worker 0 \(pid \d+\) died while "
        rf"sampling \(killed by SIGKILL\); the checkpoint of iteration 1 is in {run}; continue "
        rf"with: maml-rl train --resume {run} \(sampler.restart_workers=true replaces dead "
        rf"workers\)",
        err,
    )
    assert load_checkpoint(run)["iteration"] == 1
    # Every backend gives the same episodes: resume on sync, compare with a sync run.
    assert main(["train", "--resume", str(run), "--sampler", "sync"]) == 0
    assert main(["train", *base, "run_name=b"]) == 0
    a, b = (without_timings(read_jsonl(tmp_path / r / "metrics.jsonl")) for r in "ab")
    assert a == b and len(a) == 3
    ta, tb = (load_checkpoint(tmp_path / r)["policy"] for r in "ab")
    assert same_state(ta, tb)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_restarted_worker_repeats_the_sample_call_bit_identically(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = [*TINY, f"logdir={tmp_path}", "num_batches=3"]
    kill_a_worker_before_call(monkeypatch, 3)  # iteration 2's post-adaptation call
    restart = [*PROCESS, "sampler.restart_workers=true"]
    assert main(["train", *base, *restart, "run_name=a"]) == 0
    assert main(["train", *base, "run_name=b"]) == 0
    assert "died while sampling (killed by SIGKILL); restarted it" in caplog.text
    a, b = (without_timings(read_jsonl(tmp_path / r / "metrics.jsonl")) for r in "ab")
    assert a == b and len(a) == 3


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_kill_9_of_a_worker_is_one_line_and_a_checkpoint_that_resumes_bit_identically(
    tmp_path: Path,
) -> None:
    cmd = [sys.executable, "-m", "maml_rl.cli", "train", f"logdir={tmp_path}", *TINY, *PROCESS]
    proc = subprocess.Popen(
        [*cmd, "num_batches=100000", "checkpoint_every=0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.stdout is not None
    try:
        finished = 0
        for line in proc.stdout:
            finished += line.startswith("[") and "return pre" in line
            if finished == 2:
                break
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        workers = [
            int(pid)
            for pid in children
            if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
        ]
        os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    (line,) = err.strip().splitlines()
    assert f"(pid {workers[0]}) died while sampling (killed by SIGKILL)" in line
    assert "continue with: maml-rl train --resume" in line
    (run,) = tmp_path.iterdir()
    done = load_checkpoint(run)["iteration"]
    assert done >= 2
    # The checkpoint resumes (on sync: every backend gives the same episodes) to the same
    # metrics and θ as an uninterrupted run.
    n = f"num_batches={done + 1}"
    assert main(["train", "--resume", str(run), "--sampler", "sync", n]) == 0
    assert main(["train", *TINY, f"logdir={tmp_path}", n, "run_name=b"]) == 0
    a, b = (without_timings(read_jsonl(r / "metrics.jsonl")) for r in (run, tmp_path / "b"))
    assert a == b and len(a) == done + 1
    assert same_state(load_checkpoint(run)["policy"], load_checkpoint(tmp_path / "b")["policy"])


# -- 4. a Ray address where nothing listens ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(60)
def test_ray_address_where_nothing_listens_is_one_line_and_no_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ray", reason="ray is not installed (pip install 'maml-rl[ray]')")
    fix = (
        "start one with `ray start --head` (it prints the address to pass), or drop "
        "--ray-address for a local Ray runtime"
    )
    argv = ["train", *TINY, f"logdir={tmp_path}", "sampler.ray_connect_timeout_s=2"]
    rc, out, err = one_line(capsys, [*argv, "--sampler", "ray", "--ray-address", "127.0.0.1:1"])
    assert rc == 2 and out == ""
    assert (
        err == f"maml-rl train: error: no Ray cluster at 127.0.0.1:1: nothing listens there; {fix}"
    )

    with socket.socket() as server:  # listens, but never answers as Ray's GCS would
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        # (a hang here runs into the test's timeout: ray's own retries take minutes)
        rc, _, err = one_line(capsys, [*argv, "--ray-address", address])
    assert rc == 2
    assert err == (
        f"maml-rl train: error: no Ray cluster at {address}: something listens there but does "
        f"not answer as Ray's GCS within 2 s (sampler.ray_connect_timeout_s); {fix}"
    )
    assert not any(tmp_path.iterdir())  # no empty run folder


def test_ray_address_must_be_host_and_port() -> None:
    with pytest.raises(ValueError, match=r"sampler\.ray_address must be HOST:PORT") as info:
        check_ray_address("localhost", 1.0)
    assert "\n" not in str(info.value)


# -- 5. inputs that used to be accepted silently ----------------------------------------------


def test_non_finite_family_kwargs_are_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "nan.yaml"
    config.write_text("env:\n  id: MetaRL/HalfCheetahVel-v0\n  kwargs: {width: .nan}\n")
    logdir = tmp_path / "runs"
    rc, out, err = one_line(capsys, ["train", "--config", str(config), f"logdir={logdir}"])
    assert rc == 2 and out == ""
    assert err == "maml-rl train: error: env.kwargs.width must be finite, got nan"
    rc, _, err = one_line(capsys, ["train", *TINY, "env.kwargs={goal: [0.0, -.inf]}"])
    assert (
        rc == 2 and err == "maml-rl train: error: env.kwargs.goal must be finite, got [0.0, -inf]"
    )
    assert not logdir.exists()


def test_an_empty_config_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "empty.yaml"
    config.write_text("# nothing here yet\n\n")
    rc, out, err = one_line(
        capsys, ["train", "--config", str(config), f"logdir={tmp_path / 'runs'}"]
    )
    assert rc == 2 and out == ""
    assert err == (
        f"maml-rl train: error: config file '{config}' is empty; put config keys in it (see "
        "configs/) or drop --config for the embedded default"
    )
    assert not (tmp_path / "runs").exists()


def test_resume_refuses_an_edited_config_and_takes_resumable_edits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["train", *TINY, f"logdir={tmp_path}"]
    assert main([*base, "num_batches=1", "run_name=a"]) == 0
    assert main([*base, "num_batches=3", "run_name=b"]) == 0
    capsys.readouterr()
    run = tmp_path / "a"
    stored = (run / "config.yaml").read_text()
    assert "fast_lr: 0.1," in stored and "num_batches: 1\n" in stored

    edited = stored.replace("fast_lr: 0.1,", "fast_lr: 0.3,").replace(
        "num_batches: 1\n", "num_batches: 3\n"
    )
    (run / "config.yaml").write_text(edited)
    rc, out, err = one_line(capsys, ["train", "--resume", str(run)])
    assert rc == 2 and out == ""
    assert err.startswith(
        f"maml-rl train: error: {run / 'config.yaml'} differs from the config in the checkpoint: "
        "maml.fast_lr 0.1 → 0.3; a resumed run keeps its config (only num_batches, "
    )
    assert err.endswith(
        f"train a new run with it: maml-rl train --config {run / 'config.yaml'} run_name=NEW"
    )
    assert (run / "config.yaml").read_text() == edited  # the user's edit is not overwritten
    assert load_checkpoint(run)["iteration"] == 1

    # Undo the refused edit; the resumable one (num_batches) is taken, and said.
    (run / "config.yaml").write_text(stored.replace("num_batches: 1\n", "num_batches: 3\n"))
    assert main(["train", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"with the edits of {run / 'config.yaml'}: num_batches 1 → 3\n" in out
    a, b = (without_timings(read_jsonl(tmp_path / r / "metrics.jsonl")) for r in "ab")
    assert a == b and len(a) == 3
    assert same_state(load_checkpoint(run)["policy"], load_checkpoint(tmp_path / "b")["policy"])

    # An override on the command line wins over the file's edit.
    (run / "config.yaml").write_text(stored.replace("num_batches: 1\n", "num_batches: 5\n"))
    assert main(["train", "--resume", str(run), "num_batches=4"]) == 0
    out = capsys.readouterr().out
    assert "with the edits" not in out and load_checkpoint(run)["iteration"] == 4


@pytest.mark.parametrize(
    ("key", "meant"),
    [
        ("meta_batch_size", "maml.meta_batch_size"),  # the key's own section, not num_batches
        ("maml.num_batches", "num_batches"),
        ("trpo.fast_lr", "maml.fast_lr"),
        ("maml.fastlr", "maml.fast_lr"),  # a typo: the closest key of the same section
        ("ppo.clip_rang", "ppo.clip_range"),
    ],
)
def test_unknown_key_suggests_the_key_where_it_belongs(
    key: str, meant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = one_line(capsys, ["train", f"{key}=3"])
    assert rc == 2 and err.endswith(f"; did you mean '{meant}'?")


# -- 6. checkpoints that are truncated, damaged, foreign or would run code ----------------


class RunsCode:
    """Unpickled, this would create ``marker``: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


NOT_OURS = "is not a maml-rl checkpoint (or one that would run code on load); refused"
AGAIN = "copy it again from where it came from, or resume or evaluate another checkpoint"


def flip_a_data_byte(file: Path) -> None:
    """Flip the first byte of the largest member's data in the zip archive ``file``."""
    with zipfile.ZipFile(file) as archive:
        info = max(archive.infolist(), key=lambda i: i.compress_size)
    data = bytearray(file.read_bytes())
    name_len, extra_len = (
        int.from_bytes(data[info.header_offset + o : info.header_offset + o + 2], "little")
        for o in (26, 28)
    )
    data[info.header_offset + 30 + name_len + extra_len] ^= 0xFF
    file.write_bytes(bytes(data))


def bad_checkpoints(good: Path, folder: Path) -> dict[str, tuple[Path, str]]:
    """``{case: (file, the message's tail)}``."""
    size = good.stat().st_size
    cases: dict[str, tuple[Path, str]] = {}

    def case(name: str, content: bytes, tail: str) -> None:
        file = folder / f"{name}.pt"
        file.write_bytes(content)
        cases[name] = (file, tail)

    case("empty", b"", f"is empty (0 bytes); {AGAIN}")
    case("truncated", good.read_bytes()[: size // 2], f"is truncated ({size // 2} bytes, ")
    case("damaged", good.read_bytes(), "is damaged (a checksum mismatch in ")
    flip_a_data_byte(cases["damaged"][0])
    case("text", b"hello\n", NOT_OURS)
    case("pickle", pickle.dumps({"policy": {}}, protocol=4), NOT_OURS)
    state = load_checkpoint(good)
    torch.save({**state, "agent": RunsCode(folder / "pwned")}, folder / "code.pt")
    cases["code"] = (folder / "code.pt", NOT_OURS)
    torch.save({"weights": torch.zeros(2)}, folder / "foreign.pt")
    cases["foreign"] = (folder / "foreign.pt", NOT_OURS)
    return cases


CASES = ["empty", "truncated", "damaged", "text", "pickle", "code", "foreign"]


@pytest.mark.filterwarnings("error")  # torch's warnings on the way to a refusal stay inside
@pytest.mark.parametrize("case", CASES)
def test_a_bad_checkpoint_is_one_line_and_never_runs_code(
    case: str,
    tiny_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    no_evaluation(monkeypatch)
    file, tail = bad_checkpoints(tiny_run / "checkpoint.pt", tmp_path)[case]
    rc, out, err = one_line(capsys, ["evaluate", str(file), *EVAL])
    assert rc == 2 and out == ""
    assert err.startswith(f"maml-rl evaluate: error: checkpoint '{file}' ") or err.startswith(
        f"maml-rl evaluate: error: '{file}' "
    )
    assert tail in err and "weights_only" not in err
    assert not (tmp_path / "pwned").exists()


@pytest.mark.slow
def test_resuming_a_code_executing_checkpoint_is_refused_in_a_real_process(
    tiny_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(
        bad_checkpoints(tiny_run / "checkpoint.pt", tmp_path)["code"][0].read_bytes()
    )
    done = run_cli("train", "--resume", str(run))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"maml-rl train: error: '{run / 'checkpoint.pt'}' {NOT_OURS}\n"
    assert not (tmp_path / "pwned").exists()
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt"]  # nothing written


def test_a_truncated_checkpoint_names_the_fix_and_a_kept_one_resumes_bit_identically(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["train", *TINY, f"logdir={tmp_path}", "num_batches=2"]
    assert main([*base, "keep_checkpoint_every=1", "run_name=a"]) == 0
    assert main([*base, "run_name=b"]) == 0
    capsys.readouterr()
    run = tmp_path / "a"
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[:-100])  # a copy that stopped short
    rc, out, err = one_line(capsys, ["train", "--resume", str(run), "num_batches=3"])
    assert rc == 2 and out == ""
    assert err == (
        f"maml-rl train: error: checkpoint '{run / 'checkpoint.pt'}' is truncated "
        f"({len(data) - 100} bytes, the end of the archive is missing: an interrupted copy?); "
        f"{AGAIN}"
    )
    # The kept checkpoint of iteration 1, resumed, ends where the uninterrupted run did.
    again = tmp_path / "again"
    again.mkdir()
    (again / "checkpoint.pt").write_bytes(
        (run / "checkpoints" / "iteration_000001.pt").read_bytes()
    )
    assert main(["train", "--resume", str(again)]) == 0
    assert load_checkpoint(again)["iteration"] == 2
    assert same_state(load_checkpoint(again)["policy"], load_checkpoint(tmp_path / "b")["policy"])
