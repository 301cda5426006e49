"""The trained policies shipped under ``benchmarks/results/checkpoints/``.

Each ``<family>.pt`` is the final checkpoint of a training run reported in the README:
it loads, names the family its file is called after, and adapts — on 2 held-out tasks,
one step, the return after adaptation is above the return before (the README's
``maml-rl evaluate benchmarks/results/checkpoints/<family>.pt --adapt-steps 3`` gives
the table's numbers with the full settings).
"""

from __future__ import annotations

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
}


#: Tasks per check: a sparse reward is 0 on most tasks before and after one step, so its
#: adaptation shows only on a mean over more of them.
NUM_TASKS = {"navigation2d_sparse": 10}


def test_checkpoints_are_shipped() -> None:
    assert "halfcheetah_vel" in {p.stem for p in SHIPPED}


@pytest.mark.slow
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_a_shipped_policy_adapts(path: Path) -> None:
    state = load_checkpoint(path)
    assert state["config"]["env"]["id"] == FAMILIES[path.stem]
    result = evaluate(
        [path], EvalSettings(num_tasks=NUM_TASKS.get(path.stem, 2), adapt_steps=1), out=""
    )
    mean = result["runs"][0]["curve"]["mean"]
    assert len(mean) == 2 and mean[1] > mean[0], mean
