"""The baselines: the registry, each runner end to end, and what they are built from (the
oracle family, multi-task TRPO, SB3 PPO).

Everything runs for real on Navigation2D with tiny sizes (see ``conftest``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import kl_divergence

from maml_rl.agents.maml import TaskSamples, detach_distribution
from maml_rl.agents.multitask_trpo import MultiTaskTRPO
from maml_rl.config import load_config
from maml_rl.envs.oracle import TaskObservation, oracle_env_id, task_vector
from maml_rl.evaluation import (
    BASELINES,
    EvalContext,
    evaluate,
    format_summary,
    parse_baselines,
    register_baseline,
)
from maml_rl.evaluation import baselines as baselines_module
from maml_rl.evaluation.report import CurveBaselineEntry
from maml_rl.evaluation.sb3 import sb3_hyperparameters, sb3_ppo_on_task
from maml_rl.factories import build_policy
from maml_rl.optim import flatten, unflatten
from maml_rl.samplers import make_sampler
from maml_rl.tasks import family_class, make_family, unwrap_family

from conftest import EVAL_HORIZON, EVAL_TINY, NAV, quick_eval


def numbers(result: dict[str, Any]) -> dict[str, Any]:
    """Everything of an eval.json except wall-clock timings and paths."""
    out = {k: v for k, v in result.items() if k != "timing_s"}
    out["runs"] = [{k: v for k, v in r.items() if k != "path"} for r in result["runs"]]
    return out


# -- the registry ------------------------------------------------------------------------------


def test_the_registry_holds_the_papers_baselines_in_order() -> None:
    assert tuple(BASELINES) == ("random", "pretrained", "oracle", "sb3_ppo")
    assert parse_baselines("all") == tuple(BASELINES)
    assert [b.name for b in BASELINES.values() if b.pretrains] == ["pretrained", "oracle"]
    with pytest.raises(ValueError, match="drop sb3_ppo"):
        quick_eval(adapt_steps=0, baselines=("sb3_ppo",))  # the sb3_ppo runner's own check
    for bad in ("all", "none", "a,b", "", " x"):
        with pytest.raises(ValueError, match="cannot name a baseline"):
            register_baseline(bad)
    with pytest.raises(ValueError, match="'random' is already registered"):
        register_baseline("random")(BASELINES["random"].run)


def test_a_registered_baseline_is_evaluated_like_the_papers(tiny_run: Path, tmp_path: Path) -> None:
    """Adding a baseline is registering one runner: it is parsed, run on the shared tasks
    and seeds, summarised, logged and plotted, and changes no other number."""

    @register_baseline("zero_init")
    def zero_init(ctx: EvalContext) -> CurveBaselineEntry:
        policy = build_policy(ctx.config)
        with torch.no_grad():
            for p in policy.parameters():
                p.zero_()
        return {"curve": ctx.curve(policy, "baseline zero_init").to_dict()}

    try:
        assert parse_baselines("zero_init,random") == ("random", "zero_init")
        with pytest.raises(ValueError, match="did you mean 'zero_init'"):
            parse_baselines("zero_int")
        result = evaluate([tiny_run], quick_eval(baselines=("random", "zero_init")), tmp_path)
    finally:
        baselines_module._REGISTRY.pop("zero_init")
    assert list(result["baselines"]) == ["random", "zero_init"]
    assert list(result["timing_s"]) == ["tiny", "random", "zero_init"]
    curve = result["baselines"]["zero_init"]["curve"]
    assert np.asarray(curve["per_task_mean"]).shape == (3, 3) and curve["fast_lr"][1] == 0.1
    assert "| zero_init |" in format_summary(result)
    assert (tmp_path / "tensorboard" / "baseline-zero_init").is_dir()
    assert (tmp_path / "adaptation.png").is_file()
    alone = evaluate([tiny_run], quick_eval(baselines=("random",)), out="")
    assert alone["baselines"]["random"] == result["baselines"]["random"]
    assert alone["runs"][0]["curve"] == result["runs"][0]["curve"]


# -- the paper's baselines, end to end -----------------------------------------------------


ALL = dict(
    num_tasks=2,
    adapt_steps=1,
    baselines=("random", "pretrained", "oracle", "sb3_ppo"),
    pretrain_iterations=1,
    sb3_multipliers=(1.0, 5.0),
)


@pytest.fixture(scope="module")
def all_baselines(tiny_run: Path) -> dict[str, Any]:
    return evaluate([tiny_run], quick_eval(**ALL), out="")


def test_every_baseline_runs_end_to_end(all_baselines: dict[str, Any]) -> None:
    b = all_baselines["baselines"]
    assert set(b) == {"random", "pretrained", "oracle", "sb3_ppo"}
    for name in ("random", "pretrained", "oracle"):
        curve = b[name]["curve"]
        assert np.asarray(curve["per_task_mean"]).shape == (2, 2)
        assert all(math.isfinite(m) for m in curve["mean"])
    # Pretrained/oracle: one TRPO iteration on the run's 3 training tasks × 2 episodes
    # (fewer steps only if an episode ended at its goal).
    assert 0 < b["pretrained"]["train_env_steps"] <= 3 * 2 * EVAL_HORIZON
    assert b["oracle"]["env_id"] == "MetaRLOracle/Navigation2D-v0"
    # The oracle sees the task and is not adapted; the other baselines are.
    assert b["oracle"]["curve"]["fast_lr"] == [None, 0.0]
    assert b["pretrained"]["curve"]["fast_lr"] == b["random"]["curve"]["fast_lr"] == [None, 0.1]
    sb3 = b["sb3_ppo"]
    assert sb3["adaptation_budget_env_steps"] == 1 * 2 * EVAL_HORIZON
    assert [p["budget_env_steps"] for p in sb3["points"]] == [20, 100]
    for p in sb3["points"]:
        assert p["env_steps"] >= p["budget_env_steps"] and len(p["per_task_mean"]) == 2
        assert p["mean"] == pytest.approx(np.mean(p["per_task_mean"]))
    # All methods start from the same states with the same action noise (common random
    # numbers), but different policies: their step-0 returns differ.
    step0 = {n: b[n]["curve"]["mean"][0] for n in ("random", "pretrained", "oracle")}
    assert len(set(step0.values())) == 3


def test_same_seed_same_numbers(tiny_run: Path, all_baselines: dict[str, Any]) -> None:
    again = evaluate([tiny_run], quick_eval(**ALL), out="")
    assert numbers(again) == numbers(all_baselines)
    other = evaluate([tiny_run], quick_eval(**ALL, seed=1), out="")
    assert other["tasks"] != all_baselines["tasks"]


# -- interrupted pretraining -------------------------------------------------------------


PRETRAINING = dict(num_tasks=2, adapt_steps=1, baselines=("pretrained", "oracle"))


def count_trpo_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patch MultiTaskTRPO.step to count its calls (the pretrainings' iterations)."""
    calls: list[int] = []
    original_step = MultiTaskTRPO.step

    def counting_step(self: MultiTaskTRPO, batch: Any) -> dict[str, float]:
        calls.append(1)
        return original_step(self, batch)

    monkeypatch.setattr(MultiTaskTRPO, "step", counting_step)
    return calls


def test_an_interrupted_pretraining_continues_bit_for_bit(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pretraining stopped after 2 of 4 iterations (its saved state is what an
    interruption leaves) trains the 2 left and ends exactly where an uninterrupted
    one does."""
    whole = evaluate([tiny_run], quick_eval(**PRETRAINING, pretrain_iterations=4), tmp_path / "a")
    stopped = tmp_path / "b"
    evaluate([tiny_run], quick_eval(**PRETRAINING, pretrain_iterations=2), stopped)
    for name in ("pretrained", "oracle"):
        state = torch.load(stopped / "baselines" / f"{name}.pt", weights_only=True)
        assert state["iteration"] == 2
    calls = count_trpo_steps(monkeypatch)
    resumed = evaluate([tiny_run], quick_eval(**PRETRAINING, pretrain_iterations=4), stopped)
    assert len(calls) == 2 * 2  # two iterations each of pretrained and oracle
    assert resumed["baselines"] == whole["baselines"]
    for name in ("pretrained", "oracle"):
        state = torch.load(stopped / "baselines" / f"{name}.pt", weights_only=True)
        assert state["iteration"] == 4
        assert state["env_steps"] == whole["baselines"][name]["train_env_steps"]


def test_a_finished_pretraining_is_reused_and_other_settings_retrain(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = quick_eval(**PRETRAINING, pretrain_iterations=2)
    first = evaluate([tiny_run], settings, tmp_path)
    calls = count_trpo_steps(monkeypatch)
    again = evaluate([tiny_run], settings, tmp_path)
    assert calls == [] and again["baselines"] == first["baselines"]
    # Another evaluation seed is another training: the saved states do not fit it.
    other = evaluate([tiny_run], quick_eval(**PRETRAINING, pretrain_iterations=2, seed=1), tmp_path)
    assert len(calls) == 2 * 2
    assert other["baselines"]["pretrained"] != first["baselines"]["pretrained"]
    # Fewer iterations than were saved cannot continue from the state either.
    calls.clear()
    evaluate([tiny_run], quick_eval(**PRETRAINING, pretrain_iterations=1, seed=1), tmp_path)
    assert len(calls) == 2
    # A torn state file is retrained over, not an error.
    (tmp_path / "baselines" / "pretrained.pt").write_bytes(b"torn")
    calls.clear()
    evaluate([tiny_run], quick_eval(num_tasks=2, adapt_steps=1, baselines=("pretrained",),
                                    pretrain_iterations=1, seed=1), tmp_path)  # fmt: skip
    assert len(calls) == 1
    state = torch.load(tmp_path / "baselines" / "pretrained.pt", weights_only=True)
    assert state["iteration"] == 1


def test_an_evaluation_without_an_output_folder_saves_no_state(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    evaluate([tiny_run], quick_eval(**PRETRAINING, pretrain_iterations=1), out="")
    assert not list(tmp_path.rglob("*.pt"))


# -- the oracle family ---------------------------------------------------------------------


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


@pytest.mark.parametrize(
    "backend",
    ["process", pytest.param("ray", marks=[pytest.mark.slow, pytest.mark.ray])],
)
def test_oracle_family_samples_alike_on_every_backend(backend: str) -> None:
    """The generated oracle class reaches spawned workers and Ray actors by name (pickled
    by reference from :mod:`maml_rl.envs.oracle`)."""
    if backend == "ray":
        pytest.importorskip("ray", reason="ray is not installed (pip install 'maml-rl[ray]')")
    oracle = oracle_env_id(NAV)
    config = load_config(None, [*EVAL_TINY, f"env.id={oracle}"])
    policy = build_policy(config)
    tasks = family_class(NAV).sample_tasks(3, np.random.default_rng(0))
    batches = []
    for name, workers in (("sync", 1), (backend, 2)):
        with make_sampler(oracle, policy, backend=name, num_workers=workers,
                          max_episode_steps=EVAL_HORIZON) as sampler:  # fmt: skip
            batches.append(sampler.sample(tasks, policy.params(), 2, seed=11))
    assert batches[0].equal(batches[1])
    goals = batches[0].observations[:, :, :, 2:]
    for i, task in enumerate(tasks):
        assert torch.all(goals[i] == torch.tensor(task.goal, dtype=torch.float32))


def test_gym_registry_is_clean_of_duplicates() -> None:
    """Registering the oracle twice is a no-op (evaluations may run many times)."""
    assert oracle_env_id(NAV) == oracle_env_id(NAV)
    assert gym.spec(oracle_env_id(NAV)).max_episode_steps == gym.spec(NAV).max_episode_steps


# -- multi-task TRPO and SB3 PPO -------------------------------------------------------------


def test_multitask_trpo_improves_its_surrogate_within_the_trust_region() -> None:
    # tanh units: no dead ReLU whose revival would make the quadratic KL model useless.
    config = load_config(
        None, [*EVAL_TINY, "policy.activation=tanh", "policy.hidden_sizes=[16, 16]"]
    )
    policy = build_policy(config)
    tasks = family_class(NAV).sample_tasks(4, np.random.default_rng(0))
    with make_sampler(NAV, policy, max_episode_steps=EVAL_HORIZON) as sampler:
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


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_multitask_trpo_hand_derived_curvature_is_the_double_backward(activation: str) -> None:
    """The Gaussian MLP's Gauss-Newton products equal ``∇²KL v`` by autograd at θ."""
    config = load_config(
        None, [*EVAL_TINY, f"policy.activation={activation}", "policy.hidden_sizes=[16, 16]"]
    )
    policy = build_policy(config)
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-0.3, 0.4]))  # σ ≠ 1, per dimension
    tasks = family_class(NAV).sample_tasks(3, np.random.default_rng(1))
    with make_sampler(NAV, policy, max_episode_steps=EVAL_HORIZON) as sampler:
        batch = sampler.sample(tasks, policy.params(), 4, seed=1)
    samples = TaskSamples.from_batch(batch, 0.99, 1.0)
    theta = dict(policy.named_parameters())
    dist = policy(samples.observations, theta)
    learner = MultiTaskTRPO(policy)
    fast = learner._fisher_vector(samples, theta, detach_distribution(dist), dist)
    kl = (kl_divergence(detach_distribution(dist), dist) * samples.weights).sum(1).mean()
    grad_kl = flatten(torch.autograd.grad(kl, list(theta.values()), create_graph=True))
    for seed in range(3):
        v = torch.randn(grad_kl.numel(), generator=torch.Generator().manual_seed(seed))
        reference = flatten(
            torch.autograd.grad(grad_kl, list(theta.values()), grad_outputs=v, retain_graph=True)
        )
        torch.testing.assert_close(fast(v), reference, rtol=1e-4, atol=1e-6)


def test_multitask_trpo_reused_buffers_change_no_step() -> None:
    """The curvature products keep their buffers across steps: a learner stepping on
    batches of two shapes lands exactly where a fresh learner does at each step."""
    config = load_config(None, [*EVAL_TINY, "policy.hidden_sizes=[16, 16]"])
    policy = build_policy(config)
    family = family_class(NAV)
    with make_sampler(NAV, policy, max_episode_steps=EVAL_HORIZON) as sampler:
        batches = [
            sampler.sample(
                family.sample_tasks(n, np.random.default_rng(n)), policy.params(), m, seed=n
            )
            for n, m in ((3, 4), (2, 5))
        ]

    def params() -> torch.Tensor:
        return flatten([p.detach().clone() for p in policy.parameters()])

    start = params()
    reused = MultiTaskTRPO(policy)
    after_reused = []
    for batch in batches:
        reused.step(batch)
        after_reused.append(params())
    unflat = unflatten(start, dict(policy.named_parameters()))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            p.copy_(unflat[name])
    for batch, expected in zip(batches, after_reused, strict=True):
        MultiTaskTRPO(policy).step(batch)
        assert torch.equal(params(), expected)
    assert not torch.equal(after_reused[0], start)  # the steps moved θ


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


def test_sb3_ppo_leaves_no_folders_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where SB3 puts its folders
    result = sb3_ppo_on_task(
        NAV, family_class(NAV).sample_tasks(1, np.random.default_rng(0))[0], budget=20,
        eval_seeds=[1, 2], seed=0, max_episode_steps=10,
    )  # fmt: skip
    assert result.returns.shape == (2,) and result.env_steps >= 20
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("SB3-")] == []
