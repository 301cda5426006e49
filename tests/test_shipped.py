"""The trained policies shipped under ``benchmarks/results/checkpoints/``.

Each ``<family>.pt`` is the final checkpoint of a training run reported in the README:
it loads, names the family its file is called after, and adapts — on 2 held-out tasks,
one step (three on a family whose one-step gain is within the noise), the return after
adaptation is above the return before (the README's
``maml-rl evaluate benchmarks/results/checkpoints/<family>.pt --adapt-steps 3`` gives
the table's numbers with the full settings).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from maml_rl.checkpoint import load_checkpoint
from maml_rl.evaluation import EvalSettings, evaluate

CHECKPOINTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "checkpoints"
SHIPPED = sorted(CHECKPOINTS.glob("*.pt"))

#: File name → family id.
FAMILIES = {
    "halfcheetah_vel": "MetaRL/HalfCheetahVel-v0",
    "halfcheetah_dir": "MetaRL/HalfCheetahDir-v0",
    "ant_vel": "MetaRL/AntVel-v0",
    "ant_dir": "MetaRL/AntDir-v0",
    "ant_goal": "MetaRL/AntGoal-v0",
    "navigation2d_sparse": "MetaRL/Navigation2DSparse-v0",
    "halfcheetah_vel_sparse": "MetaRL/HalfCheetahVelSparse-v0",
    "halfcheetah_rand_params": "MetaRL/HalfCheetahRandParams-v0",
    "hopper_rand_params": "MetaRL/HopperRandParams-v0",
    "walker2d_rand_params": "MetaRL/Walker2dRandParams-v0",
    "humanoid_dir": "MetaRL/HumanoidDir-v0",
    "humanoid_fwdback": "MetaRL/HumanoidFwdBack-v0",
}


#: Tasks per check: a sparse reward is 0 on most tasks before and after one step, so its
#: adaptation shows only on a mean over more of them.
NUM_TASKS = {"navigation2d_sparse": 10}

#: Inner steps per check: on a random-physics family the gain of one step is within the
#: per-task noise (the README reports it beyond zero after two and three steps).
ADAPT_STEPS = {"halfcheetah_rand_params": 3}


def test_checkpoints_are_shipped() -> None:
    assert "halfcheetah_vel" in {p.stem for p in SHIPPED}


@pytest.mark.slow
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_a_shipped_policy_adapts(path: Path) -> None:
    state = load_checkpoint(path)
    assert state["config"]["env"]["id"] == FAMILIES[path.stem]
    steps = ADAPT_STEPS.get(path.stem, 1)
    result = evaluate(
        [path], EvalSettings(num_tasks=NUM_TASKS.get(path.stem, 2), adapt_steps=steps), out=""
    )
    mean = result["runs"][0]["curve"]["mean"]
    assert len(mean) == steps + 1 and mean[-1] > mean[0], mean


@pytest.mark.slow
def test_the_shipped_halfcheetah_vel_policy_adapts_its_speed_towards_the_target() -> None:
    """``benchmarks/velocity_probe.py``: one inner step slows the trained cheetah down for
    a slow target and speeds it up for a fast one (before adaptation it runs at one
    speed whatever the target)."""
    script = CHECKPOINTS.parents[1] / "velocity_probe.py"
    checkpoint = CHECKPOINTS / "halfcheetah_vel.pt"
    done = subprocess.run(
        [sys.executable, str(script), str(checkpoint), "--targets", "0.3,1.8"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    table = json.loads(done.stdout.splitlines()[-1])["velocity_and_length_by_target"]
    (slow_before, _), (slow_after, _) = table["0.3"]
    (fast_before, _), (fast_after, _) = table["1.8"]
    assert slow_before == fast_before  # θ, same seeds: the target is unobserved
    assert slow_after < slow_before < fast_after, table
    assert abs(slow_after - 0.3) < abs(slow_before - 0.3)
    assert abs(fast_after - 1.8) < abs(fast_before - 1.8)
