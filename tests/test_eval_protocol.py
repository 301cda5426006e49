"""The evaluation protocol: user input, step sizes, the replayed training tasks and the
held-out (or, for a finite family, all) evaluation tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from maml_rl.evaluation import (
    EvalSettings,
    evaluate,
    finite_task_set,
    held_out_tasks,
    parse_baselines,
    parse_fast_lr_schedule,
    parse_multipliers,
    step_learning_rates,
    training_tasks,
)
from maml_rl.tasks import family_class
from maml_rl.trainer import Trainer

from conftest import NAV, hand_saved_run, quick_eval, tiny_eval_config

# -- user input ------------------------------------------------------------------------------


def test_schedule_and_baseline_parsing() -> None:
    assert parse_fast_lr_schedule("0.1, 0.05") == (0.1, 0.05)
    assert step_learning_rates((0.1, 0.05), 4) == [0.1, 0.05, 0.05, 0.05]
    assert step_learning_rates((0.1, 0.05, 0.01), 1) == [0.1]
    assert step_learning_rates((0.1,), 0) == []
    assert parse_baselines("oracle,random,oracle") == ("random", "oracle")
    assert parse_baselines("all") == ("random", "pretrained", "oracle", "sb3_ppo")
    assert parse_baselines("") == ()
    assert parse_multipliers("1, 10,100") == (1.0, 10.0, 100.0)
    assert parse_multipliers([2, 0.5]) == (2.0, 0.5)
    for bad in ("", "0.1,", "0.1,abc", "0", "-0.1", "nan", "inf"):
        with pytest.raises(ValueError, match=r"^--fast-lr-schedule .*step sizes"):
            parse_fast_lr_schedule(bad)
        with pytest.raises(ValueError, match=r"^--sb3-multipliers .*multipliers"):
            parse_multipliers(bad)
    with pytest.raises(ValueError, match=r"'abc' is not a number"):
        parse_multipliers("1,abc")
    with pytest.raises(ValueError, match=r"must be finite and > 0, got '-1'"):
        parse_fast_lr_schedule("0.1,-1")
    with pytest.raises(ValueError, match="did you mean 'pretrained'"):
        parse_baselines("random,pretrianed")


def test_settings_are_checked_and_put_in_canonical_form() -> None:
    settings = EvalSettings(baselines=("oracle", "random", "oracle"), fast_lr_schedule=[0.2, 1])
    assert settings.baselines == ("random", "oracle")
    assert settings.fast_lr_schedule == (0.2, 1.0)
    assert settings.sb3_multipliers == (1.0, 10.0, 100.0)
    for kwargs, message in (
        ({"num_tasks": 0}, "num_tasks must be an integer ≥ 1, got 0"),
        ({"adapt_steps": -1}, "--adapt-steps must be ≥ 0"),
        ({"adapt_steps": 1.5}, "adapt_steps must be an integer"),
        ({"seed": True}, "seed must be an integer ≥ 0, got True"),
        ({"baselines": ("orcale",)}, "did you mean 'oracle'"),
    ):
        with pytest.raises(ValueError, match=message):
            EvalSettings(**kwargs)


# -- tasks -----------------------------------------------------------------------------------


def test_training_tasks_replay_what_the_trainer_samples(tmp_path: Path) -> None:
    config = tiny_eval_config(tmp_path)
    seen: list[Any] = []
    with Trainer(config, console=False) as trainer:
        real_sample = trainer.sampler.sample

        def recording_sample(tasks: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(list(tasks))
            return real_sample(tasks, *args, **kwargs)

        trainer.sampler.sample = recording_sample  # type: ignore[method-assign]
        for _ in range(2):
            trainer.run_iteration()
    calls = config.maml.num_adapt_steps + 1
    trained = [seen[i * calls] for i in range(2)]
    assert all(seen[i * calls + j] == trained[i] for i in range(2) for j in range(calls))
    assert training_tasks(config, 2) == trained[0] + trained[1]


def test_held_out_tasks_are_disjoint_from_training_tasks(tmp_path: Path) -> None:
    config = tiny_eval_config(tmp_path, **{"maml.meta_batch_size": 20})
    train = training_tasks(config, 50)
    for seed in (0, 1, config.seed):
        held = held_out_tasks(NAV, 40, seed, exclude=train)
        assert held.held_out and len(held.tasks) == 40 and held.redrawn == 0
        assert held.training_tasks_checked == len(set(train)) == 1000
        assert not set(held.tasks) & set(train)
    # Deterministic in the seed, different across seeds.
    assert held_out_tasks(NAV, 5, 3).tasks == held_out_tasks(NAV, 5, 3).tasks
    assert held_out_tasks(NAV, 5, 3).tasks != held_out_tasks(NAV, 5, 4).tasks


def test_an_exact_collision_with_a_training_task_is_redrawn() -> None:
    fresh = held_out_tasks(NAV, 6, seed=7).tasks
    forced = held_out_tasks(NAV, 6, seed=7, exclude=fresh[1:3])
    assert forced.redrawn == 2
    assert not set(forced.tasks) & set(fresh[1:3])
    assert forced.tasks[:1] == fresh[:1] and len(forced.tasks) == 6


def test_finite_families_are_evaluated_on_all_their_tasks() -> None:
    task_cls = family_class("MetaRL/HalfCheetahDir-v0").task_cls
    assert sorted(t.direction for t in finite_task_set(task_cls)) == [-1.0, 1.0]
    assert finite_task_set(family_class(NAV).task_cls) is None
    held = held_out_tasks("MetaRL/HalfCheetahDir-v0", 5, seed=0)
    assert not held.held_out and "only 2 tasks" in held.rule
    assert len(held.tasks) == 6  # rounded up so both directions weigh the same
    assert sorted(t.direction for t in held.tasks) == [-1.0] * 3 + [1.0] * 3


def test_a_finite_family_is_evaluated_on_all_its_tasks(tmp_path: Path) -> None:
    config = tiny_eval_config(tmp_path, **{"env.id": "MetaRL/HalfCheetahDir-v0",
                                      "env.max_episode_steps": 5})  # fmt: skip
    run = hand_saved_run(tmp_path / "cheetah", config)
    result = evaluate([run], quick_eval(num_tasks=3, adapt_steps=1, episodes_per_step=1), out="")
    assert result["task_set"]["held_out"] is False
    assert [t["direction"] for t in result["tasks"]] == [-1.0, 1.0, -1.0, 1.0]
    per_task = np.asarray(result["runs"][0]["curve"]["per_task_mean"])
    assert per_task.shape == (2, 4) and np.isfinite(per_task).all()
    # Repeats of a task get their own episodes (other start states and action noise).
    assert per_task[0, 0] != per_task[0, 2]
