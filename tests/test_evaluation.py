"""Evaluation of fast adaptation: held-out tasks, statistics, eval.json, baselines, CLI.

Everything runs for real (trainer, sampler, MAML inner step, TRPO, SB3 PPO, MuJoCo
where a family needs it) on Navigation2D with tiny sizes: 10-step episodes, a few
tasks and episodes, one or two training iterations.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from maml_rl.agents.multitask_trpo import MultiTaskTRPO
from maml_rl.checkpoint import save_checkpoint
from maml_rl.cli import main
from maml_rl.config import Config, load_config
from maml_rl.envs.oracle import TaskObservation, oracle_env_id, task_vector
from maml_rl.evaluation import (
    EVAL_JSON,
    EvalSettings,
    evaluate,
    finite_task_set,
    format_summary,
    held_out_tasks,
    load_eval,
    mean_confidence_interval,
    parse_baselines,
    parse_fast_lr_schedule,
    parse_multipliers,
    step_learning_rates,
    training_tasks,
)
from maml_rl.evaluation.plot import plot_comparison
from maml_rl.evaluation.sb3 import sb3_hyperparameters, sb3_ppo_on_task
from maml_rl.factories import build_policy
from maml_rl.samplers import make_sampler
from maml_rl.tasks import family_class, make_family, unwrap_family
from maml_rl.trainer import Trainer

NAV = "MetaRL/Navigation2D-v0"
HORIZON = 10
TINY = [
    f"env.max_episode_steps={HORIZON}",
    "maml.meta_batch_size=3",
    "maml.fast_batch_size=2",
    "policy.hidden_sizes=[8, 8]",
    "trpo.cg_iters=3",
    "num_batches=2",
    "checkpoint_every=0",
]


def tiny_config(tmp: Path, **overrides: Any) -> Config:
    return load_config(None, [*TINY, f"logdir={tmp}", "run_name=tiny"]).replace(overrides)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny) MAML-TRPO run trained for 2 iterations by the trainer."""
    config = tiny_config(tmp_path_factory.mktemp("runs"))
    trainer = Trainer(config, console=False)
    trainer.train()
    return trainer.run_dir


def quick(**kwargs: Any) -> EvalSettings:
    base: dict[str, Any] = dict(num_tasks=3, adapt_steps=2, episodes_per_step=2, progress=False)
    return EvalSettings(**{**base, **kwargs})


def numbers(result: dict[str, Any]) -> dict[str, Any]:
    """Everything of an eval.json except wall-clock timings and paths."""
    out = {k: v for k, v in result.items() if k != "timing_s"}
    out["runs"] = [{k: v for k, v in r.items() if k != "path"} for r in result["runs"]]
    return out


# -- statistics ------------------------------------------------------------------------------


def _t_quantile_closed_form(p: float, df: int) -> float:
    """Student's t quantile where it has a closed form: ``df = 1`` is the Cauchy
    distribution, ``tan(π (p − ½))``; ``df = 2``: ``(2p − 1) / √(2 p (1 − p))``."""
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    assert df == 2
    return (2 * p - 1) / math.sqrt(2 * p * (1 - p))


@pytest.mark.parametrize(
    ("n", "confidence", "t"),
    [
        (2, 0.95, _t_quantile_closed_form(0.975, 1)),  # 12.7062...
        (2, 0.80, _t_quantile_closed_form(0.90, 1)),
        (3, 0.95, _t_quantile_closed_form(0.975, 2)),  # 4.3026...
        (3, 0.99, _t_quantile_closed_form(0.995, 2)),
        # Student's t quantiles to 17 digits (the regularised incomplete beta function
        # inverted at 30 digits with mpmath)
        (4, 0.95, 3.1824463052837084),
        (10, 0.95, 2.262157162798205),
        (11, 0.95, 2.2281388519862742),
        (40, 0.95, 2.0226909200367607),
        (6, 0.90, 2.0150483733330235),
        (21, 0.99, 2.8453397097861081),
    ],
)
def test_half_width_is_the_t_quantile_times_the_standard_error(
    n: int, confidence: float, t: float
) -> None:
    values = np.arange(n, dtype=np.float64)  # s² = n (n + 1) / 12
    sem = math.sqrt(n * (n + 1) / 12) / math.sqrt(n)
    mean, half = mean_confidence_interval(values, confidence)
    assert mean == (n - 1) / 2
    assert half == pytest.approx(t * sem, rel=1e-12)


def test_confidence_interval_on_a_hand_computed_sample() -> None:
    # mean 2.5; s² = (1.5² + 0.5² + 0.5² + 1.5²) / 3 = 5/3; sem = √(5/3) / 2;
    # t_{0.975, 3} = 3.1824463052837084 → half-width 2.0542603...
    mean, half = mean_confidence_interval([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert half == pytest.approx(3.1824463052837084 * math.sqrt(5 / 3) / 2, rel=1e-12)
    assert half == pytest.approx(2.05426, abs=1e-5)
    assert mean_confidence_interval([7.0]) == (7.0, None)
    assert mean_confidence_interval([3.0, 3.0, 3.0]) == (3.0, 0.0)
    with pytest.raises(ValueError, match="at least one value"):
        mean_confidence_interval([])
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\)"):
        mean_confidence_interval([1.0, 2.0], confidence=1.0)


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


def test_sb3_budget_is_met_by_whole_rollouts() -> None:
    for budget in (2, 20, 37, 300, 800, 2048, 2049, 6000, 123_457, 600_000):
        hp = sb3_hyperparameters(budget)
        rollouts = -(-budget // hp["n_steps"])
        assert hp["n_steps"] <= max(2048, budget) and hp["batch_size"] <= 64
        # PPO trains whole rollouts: at least the budget, overshooting by less than a
        # rollout's worth of rounding (< the number of rollouts).
        assert budget <= rollouts * hp["n_steps"] < budget + max(rollouts, 2)
    with pytest.raises(ValueError, match="budget"):
        sb3_hyperparameters(0)


# -- held-out tasks ------------------------------------------------------------------------


def test_training_tasks_replay_what_the_trainer_samples(tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
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
    config = tiny_config(tmp_path, **{"maml.meta_batch_size": 20})
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


def hand_saved_run(folder: Path, config: Config) -> Path:
    """A checkpoint of an untrained policy, written with the checkpoint module."""
    state = {
        "format_version": 1,
        "iteration": 1,
        "env_steps": 10,
        "config": config.to_dict(),
        "policy": build_policy(config).state_dict(),
        "agent": {},
        "rng": {"seed": config.seed, "torch": torch.get_rng_state()},
    }
    folder.mkdir(parents=True)
    save_checkpoint(folder / "checkpoint.pt", state)
    return folder


def test_a_finite_family_is_evaluated_on_all_its_tasks(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, **{"env.id": "MetaRL/HalfCheetahDir-v0",
                                      "env.max_episode_steps": 5})  # fmt: skip
    run = hand_saved_run(tmp_path / "cheetah", config)
    result = evaluate([run], quick(num_tasks=3, adapt_steps=1, episodes_per_step=1), out="")
    assert result["task_set"]["held_out"] is False
    assert [t["direction"] for t in result["tasks"]] == [-1.0, 1.0, -1.0, 1.0]
    per_task = np.asarray(result["runs"][0]["curve"]["per_task_mean"])
    assert per_task.shape == (2, 4) and np.isfinite(per_task).all()
    # Repeats of a task get their own episodes (other start states and action noise).
    assert per_task[0, 0] != per_task[0, 2]


# -- the evaluation and eval.json ----------------------------------------------------------


@pytest.fixture(scope="module")
def maml_eval(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("eval")
    return evaluate([run_dir], quick(), out), out


def test_eval_json_schema_and_values(run_dir: Path, maml_eval: tuple[dict, Path]) -> None:
    result, out = maml_eval
    data = load_eval(out)
    assert data == json.loads(json.dumps(result))  # the file is the returned result
    assert data["env_id"] == NAV and data["schema_version"] == 1
    s = data["settings"]
    assert (s["num_tasks"], s["adapt_steps"], s["episodes_per_step"]) == (3, 2, 2)
    assert s["step_fast_lr"] == [0.1, 0.05]  # the paper's rule from fast_lr = 0.1
    assert data["task_set"]["held_out"] is True
    config = tiny_config(run_dir.parent)
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
    # Cumulative steps of E episodes per step and task: each step adds at most E full
    # episodes, and fewer only when some reached the goal (Navigation2D ends there).
    steps = np.diff(curve["env_steps_per_task"], prepend=0.0)
    assert np.all(steps > 0) and np.all(steps <= 2 * HORIZON)
    # Rewards are −distances: every return is negative and at least −HORIZON · max distance.
    assert np.all(per_task < 0) and np.all(per_task > -HORIZON * 3)

    png = (out / "adaptation.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert "| tiny |" in format_summary(data)


def test_tensorboard_scalars(run_dir: Path, maml_eval: tuple[dict, Path]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result, out = maml_eval
    acc = EventAccumulator(str(out / "tensorboard" / "tiny"))
    acc.Reload()
    for k in range(3):
        (event,) = acc.Scalars(f"eval/return_step_{k}")
        assert event.step == result["runs"][0]["env_steps"]
        assert event.value == pytest.approx(result["runs"][0]["curve"]["mean"][k], rel=1e-6)


def test_curves_are_prefix_stable_in_k(run_dir: Path, maml_eval: tuple[dict, Path]) -> None:
    """Step k's numbers do not depend on how many steps follow (same seeds, same lrs)."""
    long_curve = maml_eval[0]["runs"][0]["curve"]
    short = evaluate([run_dir], quick(adapt_steps=1), out="")["runs"][0]["curve"]
    assert short["per_task_mean"] == long_curve["per_task_mean"][:2]
    none = evaluate([run_dir], quick(adapt_steps=0), out="")["runs"][0]["curve"]
    assert none["per_task_mean"] == long_curve["per_task_mean"][:1] and none["fast_lr"] == [None]


def test_every_sampler_backend_gives_the_same_evaluation(
    run_dir: Path, maml_eval: tuple[dict, Path]
) -> None:
    result = evaluate([run_dir], quick(sampler="process", num_workers=2), out="")
    assert result["runs"][0]["curve"] == maml_eval[0]["runs"][0]["curve"]


def test_the_schedule_changes_only_the_adapted_steps(run_dir: Path) -> None:
    a = evaluate([run_dir], quick(fast_lr_schedule=(0.1, 0.05)), out="")["runs"][0]["curve"]
    b = evaluate([run_dir], quick(fast_lr_schedule=(0.1, 0.5)), out="")["runs"][0]["curve"]
    assert a["per_task_mean"][:2] == b["per_task_mean"][:2]
    assert a["per_task_mean"][2] != b["per_task_mean"][2]
    assert b["fast_lr"] == [None, 0.1, 0.5]


def test_the_runs_eval_section_sets_the_defaults_and_flags_override_it(tmp_path: Path) -> None:
    protocol = {"eval.episodes_per_step": 3, "eval.fast_lr_schedule": [0.3, 0.2]}
    trainer = Trainer(tiny_config(tmp_path, **protocol, num_batches=1), console=False)
    trainer.train()
    settings: dict[str, Any] = dict(num_tasks=2, adapt_steps=3, progress=False)
    result = evaluate([trainer.run_dir], EvalSettings(**settings), out="")
    assert result["settings"]["episodes_per_step"] == 3
    assert result["settings"]["step_fast_lr"] == [0.3, 0.2, 0.2]
    # Three episodes per step were sampled: more steps than two whole episodes.
    assert result["runs"][0]["curve"]["env_steps_per_task"][0] > 2 * HORIZON
    flags = EvalSettings(**settings, episodes_per_step=2, fast_lr_schedule=(0.1,))
    result = evaluate([trainer.run_dir], flags, out="")
    assert result["settings"]["episodes_per_step"] == 2
    assert result["settings"]["step_fast_lr"] == [0.1, 0.1, 0.1]
    assert result["runs"][0]["curve"]["env_steps_per_task"][0] <= 2 * HORIZON


def test_several_runs_share_tasks_and_plot_together(
    run_dir: Path, maml_eval: tuple[dict, Path], tmp_path: Path
) -> None:
    copy = tmp_path / "tiny"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("eval"))
    result = evaluate([run_dir, copy / "checkpoint.pt"], quick(), tmp_path / "both")
    a, b = result["runs"]
    assert (a["label"], b["label"]) == ("tiny", "tiny-2")
    # The same weights on the same tasks with the same seeds: the same numbers.
    assert a["curve"] == b["curve"] == maml_eval[0]["runs"][0]["curve"]
    png = plot_comparison([maml_eval[1], tmp_path / "both" / EVAL_JSON], tmp_path / "cmp.png")
    assert png.read_bytes().startswith(b"\x89PNG")


def test_sb3_ppo_leaves_no_folders_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where SB3 puts its folders
    result = sb3_ppo_on_task(
        NAV, family_class(NAV).sample_tasks(1, np.random.default_rng(0))[0], budget=20,
        eval_seeds=[1, 2], seed=0, max_episode_steps=10,
    )  # fmt: skip
    assert result.returns.shape == (2,) and result.env_steps >= 20
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("SB3-")] == []


# -- baselines -------------------------------------------------------------------------------

ALL = dict(
    num_tasks=2,
    adapt_steps=1,
    baselines=("random", "pretrained", "oracle", "sb3_ppo"),
    pretrain_iterations=1,
    sb3_multipliers=(1.0, 5.0),
)


@pytest.fixture(scope="module")
def all_baselines(run_dir: Path) -> dict[str, Any]:
    return evaluate([run_dir], quick(**ALL), out="")


def test_every_baseline_runs_end_to_end(all_baselines: dict[str, Any]) -> None:
    b = all_baselines["baselines"]
    assert set(b) == {"random", "pretrained", "oracle", "sb3_ppo"}
    for name in ("random", "pretrained", "oracle"):
        curve = b[name]["curve"]
        assert np.asarray(curve["per_task_mean"]).shape == (2, 2)
        assert all(math.isfinite(m) for m in curve["mean"])
    # Pretrained/oracle: one TRPO iteration on the run's 3 training tasks × 2 episodes
    # (fewer steps only if an episode ended at its goal).
    assert 0 < b["pretrained"]["train_env_steps"] <= 3 * 2 * HORIZON
    assert b["oracle"]["env_id"] == "MetaRLOracle/Navigation2D-v0"
    # The oracle sees the task and is not adapted; the other baselines are.
    assert b["oracle"]["curve"]["fast_lr"] == [None, 0.0]
    assert b["pretrained"]["curve"]["fast_lr"] == b["random"]["curve"]["fast_lr"] == [None, 0.1]
    sb3 = b["sb3_ppo"]
    assert sb3["adaptation_budget_env_steps"] == 1 * 2 * HORIZON
    assert [p["budget_env_steps"] for p in sb3["points"]] == [20, 100]
    for p in sb3["points"]:
        assert p["env_steps"] >= p["budget_env_steps"] and len(p["per_task_mean"]) == 2
        assert p["mean"] == pytest.approx(np.mean(p["per_task_mean"]))
    # All methods start from the same states with the same action noise (common random
    # numbers), but different policies: their step-0 returns differ.
    step0 = {n: b[n]["curve"]["mean"][0] for n in ("random", "pretrained", "oracle")}
    assert len(set(step0.values())) == 3


def test_same_seed_same_numbers(run_dir: Path, all_baselines: dict[str, Any]) -> None:
    again = evaluate([run_dir], quick(**ALL), out="")
    assert numbers(again) == numbers(all_baselines)
    other = evaluate([run_dir], quick(**ALL, seed=1), out="")
    assert other["tasks"] != all_baselines["tasks"]


def test_oracle_observes_the_task() -> None:
    oracle = oracle_env_id(NAV)
    env = make_family(oracle)
    base = make_family(NAV)
    task = family_class(NAV).sample_tasks(1, np.random.default_rng(3))[0]
    unwrap_family(env).set_task(task)
    unwrap_family(base).set_task(task)
    obs, _ = env.reset(seed=5)
    base_obs, _ = base.reset(seed=5)
    expected = np.concatenate([base_obs, task_vector(task)]).astype(base_obs.dtype)
    np.testing.assert_array_equal(obs, expected)
    action = np.array([0.05, -0.02], dtype=np.float32)
    obs, reward, *_ = env.step(action)
    base_obs, base_reward, *_ = base.step(action)
    assert reward == base_reward
    np.testing.assert_array_equal(obs[:2], base_obs)
    wrapped = TaskObservation(make_family(NAV))
    assert wrapped.observation_space.shape == (4,)
    assert wrapped.observation_space.low[2:].tolist() == [-0.5, -0.5]


def test_oracle_family_samples_alike_on_every_backend() -> None:
    """The generated oracle class reaches spawned workers by name (pickled by reference)."""
    oracle = oracle_env_id(NAV)
    config = load_config(None, [*TINY, f"env.id={oracle}"])
    policy = build_policy(config)
    tasks = family_class(NAV).sample_tasks(3, np.random.default_rng(0))
    batches = []
    for backend, workers in (("sync", 1), ("process", 2)):
        with make_sampler(oracle, policy, backend=backend, num_workers=workers,
                          max_episode_steps=HORIZON) as sampler:  # fmt: skip
            batches.append(sampler.sample(tasks, policy.params(), 2, seed=11))
    assert batches[0].equal(batches[1])
    goals = batches[0].observations[:, :, :, 2:]
    for i, task in enumerate(tasks):
        assert torch.all(goals[i] == torch.tensor(task.goal, dtype=torch.float32))


def test_multitask_trpo_improves_its_surrogate_within_the_trust_region() -> None:
    # tanh units: no dead ReLU whose revival would make the quadratic KL model useless.
    config = load_config(None, [*TINY, "policy.activation=tanh", "policy.hidden_sizes=[16, 16]"])
    policy = build_policy(config)
    tasks = family_class(NAV).sample_tasks(4, np.random.default_rng(0))
    with make_sampler(NAV, policy, max_episode_steps=HORIZON) as sampler:
        batch = sampler.sample(tasks, policy.params(), 8, seed=0)
    before = {k: v.detach().clone() for k, v in policy.named_parameters()}
    learner = MultiTaskTRPO(policy, max_kl=0.01)
    metrics = learner.step(batch)
    assert metrics["train/step_accepted"] == 1.0
    assert 0.0 < metrics["train/kl"] <= 0.01
    assert metrics["train/surrogate_loss_after"] < metrics["train/surrogate_loss"]
    assert any(not torch.equal(before[k], v) for k, v in policy.named_parameters())
    # A trust region so small that the candidate rounds to θ in float32: no improvement,
    # so the step is rejected and the parameters stay as they are.
    before = {k: v.detach().clone() for k, v in policy.named_parameters()}
    tiny_region = MultiTaskTRPO(policy, max_kl=1e-30, ls_max_steps=1).step(batch)
    assert tiny_region["train/step_accepted"] == 0.0 and tiny_region["train/kl"] == 0.0
    assert all(torch.equal(before[k], v) for k, v in policy.named_parameters())


# -- errors ------------------------------------------------------------------------------------


def cli_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(["evaluate", *argv, "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_cli_errors_are_one_line(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "no run folder or checkpoint" in cli_error(capsys, str(tmp_path / "missing"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert "corrupt" in cli_error(capsys, str(tmp_path / "bad"))
    (tmp_path / "empty").mkdir()
    assert "no checkpoint.pt" in cli_error(capsys, str(tmp_path / "empty"))
    run = str(run_dir)
    err = cli_error(capsys, run, "--env", "MetaRL/HalfCheetahVel-v0")
    assert "trained on MetaRL/Navigation2D-v0" in err and "HalfCheetahVel" in err
    assert "≥ 0" in cli_error(capsys, run, "--adapt-steps", "-1")
    assert "fast-lr-schedule" in cli_error(capsys, run, "--fast-lr-schedule", "0.1,fast")
    assert "did you mean 'oracle'" in cli_error(capsys, run, "--baselines", "random,orcale")
    assert "did you mean" in cli_error(capsys, run, "--env", "MetaRL/Navigaton2D-v0")


def test_a_checkpoint_of_another_family_is_rejected(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, **{"env.id": "MetaRL/Bandit-5arm-v0"})
    run = hand_saved_run(tmp_path / "bandit", config)
    with pytest.raises(ValueError, match="trained on MetaRL/Bandit-5arm-v0, not the requested"):
        evaluate([run], quick(env_id=NAV), out="")
    # Runs of two families cannot be compared.
    other = hand_saved_run(tmp_path / "nav", tiny_config(tmp_path))
    with pytest.raises(ValueError, match="not the first run's family"):
        evaluate([run, other], quick(), out="")
    # Weights that do not fit the stored config's policy.
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["policy"] = {k: v[..., :1] for k, v in state["policy"].items()}
    save_checkpoint(tmp_path / "broken.pt", state)
    with pytest.raises(ValueError, match="does not fit"):
        evaluate([tmp_path / "broken.pt"], quick(), out="")


def test_cli_writes_eval_json(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    argv = [str(run_dir), "--num-tasks", "2", "--adapt-steps", "1", "--episodes-per-step", "2"]
    assert main(["evaluate", *argv, "--fast-lr-schedule", "0.2", "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "| tiny |" in printed and str(out) in printed
    data = load_eval(out)
    assert data["settings"]["step_fast_lr"] == [0.2] and len(data["tasks"]) == 2


def test_gym_registry_is_clean_of_duplicates() -> None:
    """Registering the oracle twice is a no-op (evaluations may run many times)."""
    assert oracle_env_id(NAV) == oracle_env_id(NAV)
    assert gym.spec(oracle_env_id(NAV)).max_episode_steps == gym.spec(NAV).max_episode_steps
