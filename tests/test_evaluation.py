"""Evaluation of fast adaptation end to end: eval.json, TensorBoard, the plot, the CLI.

Everything runs for real (trainer, sampler, MAML inner step) on Navigation2D with tiny
sizes: 10-step episodes, a few tasks and episodes, one or two training iterations.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from maml_rl.checkpoint import save_checkpoint
from maml_rl.cli import main
from maml_rl.evaluation import (
    EVAL_JSON,
    EvalSettings,
    evaluate,
    format_summary,
    held_out_tasks,
    load_eval,
    mean_confidence_interval,
    training_tasks,
)
from maml_rl.evaluation.plot import plot_comparison
from maml_rl.tasks import family_class
from maml_rl.trainer import Trainer

from conftest import EVAL_HORIZON, NAV, hand_saved_run, quick_eval, tiny_eval_config


@pytest.fixture(scope="module")
def maml_eval(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("eval")
    return evaluate([tiny_run], quick_eval(), out), out


def test_eval_json_schema_and_values(tiny_run: Path, maml_eval: tuple[dict, Path]) -> None:
    result, out = maml_eval
    data = load_eval(out)
    assert data == json.loads(json.dumps(result))  # the file is the returned result
    assert data["env_id"] == NAV and data["schema_version"] == 1
    s = data["settings"]
    assert (s["num_tasks"], s["adapt_steps"], s["episodes_per_step"]) == (3, 2, 2)
    assert s["step_fast_lr"] == [0.1, 0.05]  # the paper's rule from fast_lr = 0.1
    assert data["task_set"]["held_out"] is True
    config = tiny_eval_config(tiny_run.parent)
    train = training_tasks(config, 2)
    assert data["task_set"]["training_tasks_checked"] == len(set(train))
    task_cls = family_class(NAV).task_cls
    tasks = [task_cls.from_dict(t) for t in data["tasks"]]
    assert tasks == held_out_tasks(NAV, 3, 0, exclude=train).tasks

    (run,) = data["runs"]
    assert run["label"] == "tiny" and run["iteration"] == 2 and run["agent"] == "maml_trpo"
    curve = run["curve"]
    assert curve["step"] == [0, 1, 2] and curve["fast_lr"] == [None, 0.1, 0.05]
    per_task = np.asarray(curve["per_task_mean"])
    assert per_task.shape == (3, 3)  # [K + 1, N]
    for k in range(3):
        mean, half = mean_confidence_interval(per_task[k])
        assert curve["mean"][k] == pytest.approx(mean, rel=1e-12)
        assert curve["ci95"][k] == pytest.approx(half, rel=1e-12)
        assert curve["ci_low"][k] == pytest.approx(mean - half, rel=1e-12)
        assert len(curve["per_task_ci95"][k]) == 3
        # The paired gain: its mean is the difference of the means (linearity), its
        # interval the t-interval of the per-task differences, none at step 0.
        assert curve["gain"][k] == pytest.approx(curve["mean"][k] - curve["mean"][0], abs=1e-9)
        _, paired_half = mean_confidence_interval(per_task[k] - per_task[0])
        if k == 0:
            assert curve["gain"][0] == 0.0 and curve["gain_ci95"][0] is None
        else:
            assert curve["gain_ci95"][k] == pytest.approx(paired_half, rel=1e-12)
    # Cumulative steps of E episodes per step and task: each step adds at most E full
    # episodes, and fewer only when some reached the goal (Navigation2D ends there).
    steps = np.diff(curve["env_steps_per_task"], prepend=0.0)
    assert np.all(steps > 0) and np.all(steps <= 2 * EVAL_HORIZON)
    # Rewards are −distances: every return is negative and at least −EVAL_HORIZON · max distance.
    assert np.all(per_task < 0) and np.all(per_task > -EVAL_HORIZON * 3)

    png = (out / "adaptation.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    summary = format_summary(data)
    assert "| tiny |" in summary
    gain_row = next(line for line in summary.splitlines() if "gain over step 0" in line)
    assert f"{curve['gain'][2]:+.2f} ± {curve['gain_ci95'][2]:.2f}" in gain_row


def test_tensorboard_scalars(tiny_run: Path, maml_eval: tuple[dict, Path]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result, out = maml_eval
    acc = EventAccumulator(str(out / "tensorboard" / "tiny"))
    acc.Reload()
    for k in range(3):
        (event,) = acc.Scalars(f"eval/return_step_{k}")
        assert event.step == result["runs"][0]["env_steps"]
        assert event.value == pytest.approx(result["runs"][0]["curve"]["mean"][k], rel=1e-6)


def test_curves_are_prefix_stable_in_k(tiny_run: Path, maml_eval: tuple[dict, Path]) -> None:
    """Step k's numbers do not depend on how many steps follow (same seeds, same lrs)."""
    long_curve = maml_eval[0]["runs"][0]["curve"]
    short = evaluate([tiny_run], quick_eval(adapt_steps=1), out="")["runs"][0]["curve"]
    assert short["per_task_mean"] == long_curve["per_task_mean"][:2]
    none = evaluate([tiny_run], quick_eval(adapt_steps=0), out="")["runs"][0]["curve"]
    assert none["per_task_mean"] == long_curve["per_task_mean"][:1] and none["fast_lr"] == [None]


def test_every_sampler_backend_gives_the_same_evaluation(
    tiny_run: Path, maml_eval: tuple[dict, Path]
) -> None:
    result = evaluate([tiny_run], quick_eval(sampler="process", num_workers=2), out="")
    assert result["runs"][0]["curve"] == maml_eval[0]["runs"][0]["curve"]


def test_the_schedule_changes_only_the_adapted_steps(tiny_run: Path) -> None:
    a = evaluate([tiny_run], quick_eval(fast_lr_schedule=(0.1, 0.05)), out="")["runs"][0]["curve"]
    b = evaluate([tiny_run], quick_eval(fast_lr_schedule=(0.1, 0.5)), out="")["runs"][0]["curve"]
    assert a["per_task_mean"][:2] == b["per_task_mean"][:2]
    assert a["per_task_mean"][2] != b["per_task_mean"][2]
    assert b["fast_lr"] == [None, 0.1, 0.5]


def test_the_runs_eval_section_sets_the_defaults_and_flags_override_it(tmp_path: Path) -> None:
    protocol = {"eval.episodes_per_step": 3, "eval.fast_lr_schedule": [0.3, 0.2]}
    trainer = Trainer(tiny_eval_config(tmp_path, **protocol, num_batches=1), console=False)
    trainer.train()
    settings: dict[str, Any] = dict(num_tasks=2, adapt_steps=3, progress=False)
    result = evaluate([trainer.run_dir], EvalSettings(**settings), out="")
    assert result["settings"]["episodes_per_step"] == 3
    assert result["settings"]["step_fast_lr"] == [0.3, 0.2, 0.2]
    # Three episodes per step were sampled: more steps than two whole episodes.
    assert result["runs"][0]["curve"]["env_steps_per_task"][0] > 2 * EVAL_HORIZON
    flags = EvalSettings(**settings, episodes_per_step=2, fast_lr_schedule=(0.1,))
    result = evaluate([trainer.run_dir], flags, out="")
    assert result["settings"]["episodes_per_step"] == 2
    assert result["settings"]["step_fast_lr"] == [0.1, 0.1, 0.1]
    assert result["runs"][0]["curve"]["env_steps_per_task"][0] <= 2 * EVAL_HORIZON


def test_several_runs_share_tasks_and_plot_together(
    tiny_run: Path, maml_eval: tuple[dict, Path], tmp_path: Path
) -> None:
    copy = tmp_path / "tiny"
    shutil.copytree(tiny_run, copy, ignore=shutil.ignore_patterns("eval"))
    result = evaluate([tiny_run, copy / "checkpoint.pt"], quick_eval(), tmp_path / "both")
    a, b = result["runs"]
    assert (a["label"], b["label"]) == ("tiny", "tiny-2")
    # The same weights on the same tasks with the same seeds: the same numbers.
    assert a["curve"] == b["curve"] == maml_eval[0]["runs"][0]["curve"]
    png = plot_comparison([maml_eval[1], tmp_path / "both" / EVAL_JSON], tmp_path / "cmp.png")
    assert png.read_bytes().startswith(b"\x89PNG")


# -- errors and the CLI ------------------------------------------------------------------------


def cli_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(["evaluate", *argv, "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_cli_errors_are_one_line(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "no run folder or checkpoint" in cli_error(capsys, str(tmp_path / "missing"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert "is not a maml-rl checkpoint" in cli_error(capsys, str(tmp_path / "bad"))
    (tmp_path / "empty").mkdir()
    assert "no checkpoint.pt" in cli_error(capsys, str(tmp_path / "empty"))
    run = str(tiny_run)
    err = cli_error(capsys, run, "--env", "MetaRL/HalfCheetahVel-v0")
    assert "trained on MetaRL/Navigation2D-v0" in err and "HalfCheetahVel" in err
    assert "≥ 0" in cli_error(capsys, run, "--adapt-steps", "-1")
    assert "fast-lr-schedule" in cli_error(capsys, run, "--fast-lr-schedule", "0.1,fast")
    assert "did you mean 'oracle'" in cli_error(capsys, run, "--baselines", "random,orcale")
    assert "did you mean" in cli_error(capsys, run, "--env", "MetaRL/Navigaton2D-v0")


def test_a_checkpoint_of_another_family_is_rejected(tmp_path: Path) -> None:
    config = tiny_eval_config(tmp_path, **{"env.id": "MetaRL/Bandit-5arm-v0"})
    run = hand_saved_run(tmp_path / "bandit", config)
    with pytest.raises(ValueError, match="trained on MetaRL/Bandit-5arm-v0, not the requested"):
        evaluate([run], quick_eval(env_id=NAV), out="")
    # Runs of two families cannot be compared.
    other = hand_saved_run(tmp_path / "nav", tiny_eval_config(tmp_path))
    with pytest.raises(ValueError, match="not the first run's family"):
        evaluate([run, other], quick_eval(), out="")
    # Weights that do not fit the stored config's policy.
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["policy"] = {k: v[..., :1] for k, v in state["policy"].items()}
    save_checkpoint(tmp_path / "broken.pt", state)
    with pytest.raises(ValueError, match="does not fit"):
        evaluate([tmp_path / "broken.pt"], quick_eval(), out="")


def test_cli_writes_eval_json(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "cli"
    argv = [str(tiny_run), "--num-tasks", "2", "--adapt-steps", "1", "--episodes-per-step", "2"]
    assert main(["evaluate", *argv, "--fast-lr-schedule", "0.2", "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "| tiny |" in printed and str(out) in printed
    data = load_eval(out)
    assert data["settings"]["step_fast_lr"] == [0.2] and len(data["tasks"]) == 2
