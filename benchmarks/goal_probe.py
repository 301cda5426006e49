"""How close a meta-trained policy gets to its goal, before and after adaptation.

    python benchmarks/goal_probe.py benchmarks/results/checkpoints/ant_goal.pt --adapt-steps 3
    python benchmarks/goal_probe.py runs/ant/ant_goal_trpo --goals "2,2;-2.5,0.5;0,-3"

For a family whose task is a goal position reported in ``info`` (``MetaRL/AntGoal-v0``:
``x_position``, ``y_position``): for each goal, the distance from the torso to the goal
at the end of the episode (m), mean over ``--episodes`` episodes, after 0, 1, ...
``--adapt-steps`` inner steps with the evaluation's step sizes. A policy that adapts
ends nearer its goals after the steps; the unadapted one walks the same way whatever
the goal (it cannot observe it). The inner steps and the episodes are
``velocity_probe.py``'s (its ``probe``). One goal's change after one step is noisy (the
step's gradient comes from ``--episodes`` episodes, and a goal's sample seeds depend on
its place in ``--goals``): read the mean over the goals. The last line is JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

import numpy as np
import torch
from velocity_probe import add_probe_arguments, probe

from maml_rl.evaluation import load_run
from maml_rl.tasks import Task, family_class

#: A spread of goals in AntGoal's square [-3, 3]²: the four diagonals at two radii.
DEFAULT_GOALS = "1,1;-1,1;-1,-1;1,-1;2.5,2.5;-2.5,2.5;-2.5,-2.5;2.5,-2.5"


def parse_goals(text: str) -> list[tuple[float, float]]:
    """``"x,y;x,y"`` → goals; a one-line ``ValueError`` for anything else."""
    goals = []
    for part in text.split(";"):
        xy = part.split(",")
        try:
            x, y = (float(v) for v in xy)
        except ValueError:
            raise ValueError(
                f"--goals: {part!r} is not 'x,y' (e.g. --goals \"2,2;-1,0.5\")"
            ) from None
        goals.append((x, y))
    return goals


def final_distance(task: Task, infos: list[dict[str, Any]]) -> list[float]:
    """The torso's distance to the task's goal at the episode's last step."""
    goal_x, goal_y = task.goal  # type: ignore[attr-defined]
    last = infos[-1]
    return [float(np.hypot(last["x_position"] - goal_x, last["y_position"] - goal_y))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_probe_arguments(parser)
    parser.add_argument("--goals", default=DEFAULT_GOALS, help='goal positions, "x,y;x,y" (m)')
    args = parser.parse_args()
    torch.set_num_threads(1)

    try:
        goals = parse_goals(args.goals)
    except ValueError as exc:
        parser.error(str(exc))
    run = load_run(args.run)
    family = family_class(run.config.env.id)
    if "goal" not in {f.name for f in dataclasses.fields(family.task_cls)}:
        parser.error(f"{run.config.env.id}'s tasks have no goal position")
    tasks = [family.task_cls(goal=g) for g in goals]  # type: ignore[call-arg]
    labels = [f"{x:g},{y:g}" for x, y in goals]
    fast_lrs, table = probe(args, run, tasks, labels, final_distance, "distance (m)")
    before = float(np.mean([rows[0][0] for rows in table.values()]))
    after = float(np.mean([rows[-1][0] for rows in table.values()]))
    print(f"mean distance to the goal at the episode's end: {before:.2f} m -> {after:.2f} m")
    print(
        json.dumps(
            {
                "run": str(run.path),
                "iteration": run.iteration,
                "fast_lrs": fast_lrs,
                "distance_and_length_by_goal": table,
                "mean_distance_before_after": [before, after],
            }
        )
    )


if __name__ == "__main__":
    main()
