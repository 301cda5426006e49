"""Shared test fixtures: the presets, tiny run sizes, a small Gaussian policy, the CLI, a
tiny trained run for the evaluation tests.

Imported by the test modules as ``from conftest import ...`` (pytest puts ``tests/`` on
``sys.path``). Tests marked ``slow`` start processes (``process``/Ray workers, the CLI in a
subprocess, a fresh interpreter) or train SB3: ``python -m pytest -m "not slow" tests`` is
the fast development loop; the full suite is what CI and the README run.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from maml_rl.agents.maml import MAMLConfig
from maml_rl.agents.maml_ppo import MAMLPPO, PPOConfig
from maml_rl.agents.maml_trpo import MAMLTRPO, TRPOConfig
from maml_rl.agents.policies import GaussianMLPPolicy, Policy
from maml_rl.checkpoint import save_checkpoint
from maml_rl.config import Config, load_config
from maml_rl.evaluation import EvalSettings
from maml_rl.factories import build_policy
from maml_rl.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ALL_PRESETS = sorted(CONFIGS.glob("*.yaml"))
#: Presets of families that need an optional extra (tests/test_metaworld.py checks them).
METAWORLD_PRESETS = [p for p in ALL_PRESETS if p.name.startswith("metaworld_")]
#: The MAML paper's presets, on the built-in families.
PRESETS = [p for p in ALL_PRESETS if p not in METAWORLD_PRESETS]

#: Config overrides for runs of a few seconds (Navigation2D, the embedded default).
TINY = [
    "env.max_episode_steps=5",
    "maml.meta_batch_size=2",
    "maml.fast_batch_size=2",
    "policy.hidden_sizes=[8, 8]",
    "trpo.cg_iters=3",
    "update_threads=1",  # the test machine is shared: spinning OpenMP threads only slow it
]


def make_policy(dtype: torch.dtype = torch.float64, activation: str = "tanh") -> GaussianMLPPolicy:
    """A 2-d Navigation2D policy, 2 x 8 hidden units, with a non-trivial mean.

    The default init makes the output layer almost zero; here it is not, and the biases are
    non-zero: with zero biases every ReLU sits exactly at its kink for the start observation
    (0, 0), where the inner gradient jumps.
    """
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(8, 8), activation=activation, init_std=0.5)
    torch.nn.init.normal_(policy.head.weight, std=0.5)
    for layer in policy.layers:
        torch.nn.init.normal_(layer.bias, std=0.1)
    return policy.to(dtype)


def run_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run the installed ``maml-rl`` command in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "maml_rl.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def agent_configs(outer: type, kwargs: dict[str, Any]) -> tuple[MAMLConfig, Any, Any]:
    """Split flat keyword arguments (``fast_lr=0.5, max_kl=0.02, device="cpu"``) into the
    ``maml`` section, the agent's own section (``outer``) and the device."""
    kwargs = dict(kwargs)
    device = kwargs.pop("device", "cpu")
    inner = {f.name for f in dataclasses.fields(MAMLConfig)}
    own = {f.name for f in dataclasses.fields(outer)}
    unknown = set(kwargs) - inner - own
    if unknown:
        raise TypeError(f"not a setting of maml or {outer.__name__}: {sorted(unknown)}")
    maml = MAMLConfig(**{k: v for k, v in kwargs.items() if k in inner})
    return maml, outer(**{k: v for k, v in kwargs.items() if k in own}), device


def trpo_agent(policy: Policy, **kwargs: Any) -> MAMLTRPO:
    """``MAMLTRPO`` from flat settings (see :func:`agent_configs`)."""
    maml, trpo, device = agent_configs(TRPOConfig, kwargs)
    return MAMLTRPO(policy, maml, trpo, device=device)


def ppo_agent(policy: Policy, **kwargs: Any) -> MAMLPPO:
    """``MAMLPPO`` from flat settings (see :func:`agent_configs`)."""
    maml, ppo, device = agent_configs(PPOConfig, kwargs)
    return MAMLPPO(policy, maml, ppo, device=device)


# -- evaluation ------------------------------------------------------------------------------

NAV = "MetaRL/Navigation2D-v0"
EVAL_HORIZON = 10
#: The evaluation tests' runs: 10-step episodes, 3 tasks × 2 episodes, 2 iterations.
EVAL_TINY = [
    f"env.max_episode_steps={EVAL_HORIZON}",
    "maml.meta_batch_size=3",
    "maml.fast_batch_size=2",
    "policy.hidden_sizes=[8, 8]",
    "trpo.cg_iters=3",
    "num_batches=2",
    "checkpoint_every=0",
]


def tiny_eval_config(tmp: Path, **overrides: Any) -> Config:
    """The config of :func:`tiny_run` (run folder ``tmp/tiny``), with ``overrides``."""
    return load_config(None, [*EVAL_TINY, f"logdir={tmp}", "run_name=tiny"]).replace(overrides)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny) MAML-TRPO run trained for 2 iterations by the trainer."""
    config = tiny_eval_config(tmp_path_factory.mktemp("runs"))
    trainer = Trainer(config, console=False)
    trainer.train()
    return trainer.run_dir


def quick_eval(**kwargs: Any) -> EvalSettings:
    """Evaluation settings of a few seconds: 3 tasks, 2 steps, 2 episodes per step."""
    base: dict[str, Any] = dict(num_tasks=3, adapt_steps=2, episodes_per_step=2, progress=False)
    return EvalSettings(**{**base, **kwargs})


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
