"""Trainer: per-iteration seeding, metrics, resume == uninterrupted, Ctrl-C checkpoints.

Everything runs the real sampler and MAML-TRPO on Navigation2D with tiny sizes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from maml_rl.agents.base import Agent
from maml_rl.checkpoint import load_checkpoint
from maml_rl.config import Config, load_config
from maml_rl.factories import build_agent, build_policy
from maml_rl.logger import InMemoryLogger, read_jsonl
from maml_rl.seeding import iteration_seeds
from maml_rl.trainer import Interrupted, Trainer

from conftest import PRESETS
from conftest import TINY as BASE_TINY

TINY = [*BASE_TINY, "maml.meta_batch_size=3", "num_batches=2", "checkpoint_every=1"]


def tiny(**overrides: Any) -> Config:
    return load_config(None, TINY).replace(overrides)


def without_timings(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]


def test_iteration_seeds_depend_only_on_seed_and_iteration() -> None:
    def draw(seed: int, it: int) -> tuple[list[float], list[int], int]:
        rng, seeds, torch_seed = iteration_seeds(seed, it, 2)
        return rng.random(3).tolist(), seeds, torch_seed

    assert draw(1, 3) == draw(1, 3)
    assert draw(1, 3) != draw(1, 4)
    # No `seed + i` overlap: run seed 2 at iteration 0 must not replay seed 1's iteration 1.
    assert draw(1, 1) != draw(2, 0)
    _, seeds, _ = draw(1, 0)
    assert len(set(seeds)) == 2 and all(0 <= s < 2**63 for s in seeds)


class _InterruptOn:
    """A logger that raises KeyboardInterrupt (as Ctrl-C would) on a given iteration."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def write(self, metrics: Mapping[str, float], step: int) -> None:
        if metrics["iteration"] == self.iteration:
            raise KeyboardInterrupt

    def close(self) -> None:
        pass


def test_metrics_and_run_folder(tmp_path: Path) -> None:
    cfg = tiny()
    memory = InMemoryLogger()
    trainer = Trainer(cfg, tmp_path / "run", console=False, loggers=[memory])
    last = trainer.train()
    assert [m["iteration"] for _, m in memory.records] == [1, 2]
    # Navigation never terminates early: every episode runs the full horizon.
    per_iteration = 3 * 2 * 5 * (cfg.maml.num_adapt_steps + 1)
    assert [step for step, _ in memory.records] == [per_iteration, 2 * per_iteration]
    assert last == memory.records[-1][1]
    for key in [
        "rollout/return_pre_adapt",
        "rollout/return_post_adapt",
        "rollout/episode_length",
        "train/kl",
        "time/sample_s",
        "time/update_s",
        "time/env_steps_per_s",
    ]:
        assert np.isfinite(last[key]), key
    assert last["rollout/episode_length"] == 5.0
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.yaml", "metrics.jsonl", "checkpoint.pt"} <= files
    assert any(name.startswith("events.out.tfevents") for name in files)
    assert load_config(tmp_path / "run" / "config.yaml") == cfg
    state = load_checkpoint(tmp_path / "run")
    assert (state["iteration"], state["env_steps"]) == (2, 2 * per_iteration)
    assert state["config"] == cfg.to_dict()
    assert trainer.policy.params().keys() == state["policy"].keys()


@pytest.mark.slow
def test_resume_gives_the_metrics_of_an_uninterrupted_run(tmp_path: Path) -> None:
    Trainer(tiny(num_batches=4), tmp_path / "full", console=False).train()

    Trainer(tiny(num_batches=2), tmp_path / "split", console=False).train()
    # The second half even runs on worker processes: every backend gives the same episodes.
    resumed = Trainer.resume(
        tmp_path / "split",
        {"num_batches": 4, "sampler.backend": "process", "sampler.num_workers": 2},
        console=False,
    )
    assert resumed.iteration == 2
    resumed.train()

    full = read_jsonl(tmp_path / "full" / "metrics.jsonl")
    split = read_jsonl(tmp_path / "split" / "metrics.jsonl")
    assert [r["iteration"] for r in split] == [1, 2, 3, 4]
    assert without_timings(split) == without_timings(full)
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "split")
    for name in a["policy"]:
        assert torch.equal(a["policy"][name], b["policy"][name]), name


def test_ctrl_c_checkpoints_the_last_finished_iteration(tmp_path: Path) -> None:
    Trainer(tiny(num_batches=3), tmp_path / "full", console=False).train()

    cfg = tiny(num_batches=3, checkpoint_every=0)  # only the interrupt writes a checkpoint
    trainer = Trainer(cfg, tmp_path / "run", console=False, loggers=[_InterruptOn(2)])
    with pytest.raises(Interrupted, match="interrupted after iteration 1/3") as info:
        trainer.train()
    assert "--resume" in str(info.value)
    assert load_checkpoint(tmp_path / "run")["iteration"] == 1
    # The metrics line of iteration 2 was written before the interrupt; the resumed run
    # replaces it, and the result equals a run that was never interrupted.
    Trainer.resume(tmp_path / "run", console=False).train()
    assert without_timings(read_jsonl(tmp_path / "run" / "metrics.jsonl")) == without_timings(
        read_jsonl(tmp_path / "full" / "metrics.jsonl")
    )


def test_resume_refuses_what_would_change_the_run(tmp_path: Path) -> None:
    Trainer(tiny(), tmp_path / "run", console=False).train()
    with pytest.raises(ValueError, match=r"maml\.fast_lr would change from 0\.1 to 0\.05"):
        Trainer.resume(tmp_path / "run", {"maml.fast_lr": 0.05})
    with pytest.raises(ValueError, match="already finished 2 of 2 iterations"):
        Trainer.resume(tmp_path / "run")
    # The curvature approximation may change part-way (a long run switching to exact
    # Fisher-vector products); the objective and the trust region may not.
    resumed = Trainer.resume(tmp_path / "run", {"num_batches": 3, "trpo.hvp_subsample": 1.0})
    assert resumed.config.trpo.hvp_subsample == 1.0 and resumed.iteration == 2
    resumed.close()
    with pytest.raises(ValueError, match=r"trpo\.max_kl would change from 0\.01 to 0\.02"):
        Trainer.resume(tmp_path / "run", {"num_batches": 3, "trpo.max_kl": 0.02})
    with pytest.raises(ValueError, match=r"has no checkpoint\.pt"):
        Trainer.resume(tmp_path)


def test_unknown_env_id_suggests_the_closest(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="did you mean 'MetaRL/Navigation2D-v0'"):
        Trainer(tiny().replace({"env.id": "MetaRL/Navigation2d-v0"}), tmp_path / "run")


def test_new_run_folder_is_not_reused(tmp_path: Path) -> None:
    cfg = tiny(logdir=str(tmp_path), run_name="a", num_batches=1)
    Trainer(cfg, console=False).train()
    with pytest.raises(ValueError, match="already exists and is not empty"):
        Trainer(cfg, console=False)


def test_kept_checkpoints_are_those_of_their_iterations(tmp_path: Path) -> None:
    # Every 2nd iteration's state is kept beside the latest one; resuming from a kept
    # checkpoint replays the run from there (so each is the state of its iteration).
    cfg = tiny(num_batches=4, checkpoint_every=0, keep_checkpoint_every=2)
    Trainer(cfg, tmp_path / "run", console=False).train()
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert kept == ["iteration_000002.pt", "iteration_000004.pt"]
    two = load_checkpoint(tmp_path / "run" / "checkpoints" / "iteration_000002.pt")
    four = load_checkpoint(tmp_path / "run" / "checkpoints" / "iteration_000004.pt")
    final = load_checkpoint(tmp_path / "run")
    assert (two["iteration"], four["iteration"]) == (2, 4)
    assert all(torch.equal(four["policy"][k], v) for k, v in final["policy"].items())
    assert not all(torch.equal(two["policy"][k], v) for k, v in final["policy"].items())

    branch = tmp_path / "branch"
    branch.mkdir()
    (branch / "checkpoint.pt").write_bytes(
        (tmp_path / "run" / "checkpoints" / "iteration_000002.pt").read_bytes()
    )
    (branch / "config.yaml").write_bytes((tmp_path / "run" / "config.yaml").read_bytes())
    Trainer.resume(branch, console=False).train()
    again = load_checkpoint(branch)
    assert all(torch.equal(again["policy"][k], v) for k, v in final["policy"].items())


def test_runs_started_together_get_their_own_folders(tmp_path: Path) -> None:
    # Two presets launched in the same second once shared (and overwrote) one folder.
    from maml_rl.trainer import new_run_dir

    cfg = tiny(logdir=str(tmp_path / "runs"))
    first, second = new_run_dir(cfg), new_run_dir(cfg)
    assert first != second and first.is_dir() and second.is_dir()


def test_a_run_that_fails_to_start_leaves_no_folder(tmp_path: Path) -> None:
    cfg = tiny(logdir=str(tmp_path / "runs"))
    with pytest.raises(ValueError, match="takes no argument 'tsk'; did you mean 'task'"):
        Trainer(cfg.replace({"env.kwargs": {"tsk": None}}), console=False)
    assert not (tmp_path / "runs").exists()  # nothing is created before the sampler runs


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_every_preset_builds_its_policy_and_agent(path: Path) -> None:
    import gymnasium as gym

    cfg = load_config(path)
    policy = build_policy(cfg)
    env = gym.make(cfg.env.id)
    assert policy.obs_dim == env.observation_space.shape[0]
    assert policy.act_dim == env.action_space.shape[0]
    assert policy.hidden_sizes == (100, 100) and policy.activation == "relu"
    env.close()
    agent = build_agent(cfg, policy, torch.device("cpu"))
    assert isinstance(agent, Agent)  # the role the trainer relies on
    if cfg.agent == "maml_trpo":
        assert (agent.trpo.max_kl, agent.trpo.cg_iters) == (0.01, 10)
    else:  # the PPO/ProMP presets: tests/test_ppo.py checks their settings
        assert agent.ppo == cfg.ppo


@pytest.mark.parametrize("env_id", ["MetaRL/Navigation2D-v0", "MetaRL/TabularMDP-v0"])
def test_policy_init_comes_from_the_config(env_id: str) -> None:
    cfg = tiny(**{"env.id": env_id})
    default, xavier = build_policy(cfg), build_policy(cfg.replace({"policy.init": "xavier"}))
    assert (default.init, xavier.init) == ("default", "xavier")
    assert all(torch.count_nonzero(layer.bias) == 0 for layer in xavier.layers)
    assert all(torch.count_nonzero(layer.bias) > 0 for layer in default.layers)
    with pytest.raises(ValueError, match=r"policy\.init must be one of 'default', 'xavier'"):
        cfg.replace({"policy.init": "glorot"})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_update_on_cuda(tmp_path: Path) -> None:
    memory = InMemoryLogger()
    trainer = Trainer(tiny(device="cuda"), tmp_path / "run", console=False, loggers=[memory])
    trainer.train()
    assert next(trainer.policy.parameters()).device.type == "cuda"
    assert np.isfinite(memory.records[-1][1]["rollout/return_post_adapt"])
    assert load_checkpoint(tmp_path / "run")["policy"]["log_std"].device.type == "cpu"
