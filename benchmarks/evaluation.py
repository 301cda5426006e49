"""Fast adaptation of a trained run with the MAML paper's test settings, vs the paper.

    python benchmarks/evaluation.py runs/Navigation2D-v0-maml_trpo-20250101-120000
    python benchmarks/evaluation.py runs/HalfCheetahDir-v0-maml_trpo-… --baselines all \\
        --sb3-multipliers 1,10 --sb3-tasks 10 --sampler process --workers 8

Runs :func:`maml_rl.evaluation.evaluate` on the run's checkpoint with the paper's
protocol for the family — Navigation2D: 0..3 steps; HalfCheetahDir: 0..1 step; the
run's ``eval`` section if its config has one (``configs/navigation2d_trpo_original.yaml``:
40 episodes per step, step sizes 0.5, 0.2, 0.1), else its ``fast_batch_size`` episodes
per task and step (20 in the presets) and step sizes ``fast_lr`` then half of it (0.1
then 0.05) — on 40 held-out tasks
(HalfCheetahDir has only its two directions: both, 20 times each), with the chosen
baselines on the same tasks. Prints a markdown table of mean return ± 95 % CI per
adaptation step next to the MAML paper's numbers (Table 4 / Table 5 of App. C.2);
the full results go to ``<run>/eval-paper/eval.json`` with the plot. The last line
is a JSON object.

The paper's numbers are only comparable if the env matches it: Navigation2D here has
the original code's dynamics (actions in [-1, 1] moving at most 0.1 per coordinate,
the episode ending within 0.01 of the goal) and reward (−distance; the paper's text
says −squared distance) over at most 100 steps; HalfCheetahDir uses 200-step episodes
like the paper.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from maml_rl.cli import evaluate_settings
from maml_rl.evaluation import evaluate, load_run

#: Average return on new tasks after k = 0, 1, 2, 3 gradient steps (MAML paper, App. C.2).
PAPER = {
    "MetaRL/Navigation2D-v0": [-40.41, -11.68, -3.33, -3.23],
    "MetaRL/HalfCheetahDir-v0": [-50.69, 293.19, 313.48, 315.65],
}
#: Adaptation steps the paper's tables are usually quoted for.
PAPER_STEPS = {"MetaRL/Navigation2D-v0": 3, "MetaRL/HalfCheetahDir-v0": 1}


def _cell(mean: float | None, half: float | None = None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.2f} ± {half:.2f}" if half is not None else f"{mean:.2f}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run folder or checkpoint file")
    parser.add_argument("--adapt-steps", type=int, help="default: the paper's for the family")
    parser.add_argument("--num-tasks", type=int, default=40)
    parser.add_argument("--episodes-per-step", type=int, help="default: the run's")
    parser.add_argument("--fast-lr-schedule", help="default: the run's")
    parser.add_argument(
        "--baselines", default="random,pretrained,oracle", help="or all (adds sb3_ppo)"
    )
    parser.add_argument("--pretrain-iterations", type=int, help="default: the run's iterations")
    parser.add_argument("--sb3-multipliers", default="1,10,100")
    parser.add_argument("--sb3-tasks", type=int, help="SB3 PPO on the first N tasks only")
    parser.add_argument("--sampler", choices=("sync", "process", "ray"))
    parser.add_argument("--workers", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="default: <run>/eval-paper")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    try:
        run = load_run(args.run)
        env_id = run.config.env.id
        if args.adapt_steps is None:
            args.adapt_steps = PAPER_STEPS.get(env_id, 3)
        k = args.adapt_steps
        settings = evaluate_settings(args)
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    out = Path(args.out) if args.out else run.path.parent / "eval-paper"
    t0 = time.perf_counter()
    result = evaluate([args.run], settings, out)
    wall = time.perf_counter() - t0

    paper = PAPER.get(env_id)
    curve = result["runs"][0]["curve"]
    rows: list[tuple[str, list[str]]] = [
        (f"ours ({run.label}, iteration {run.iteration})",
         [_cell(m, h) for m, h in zip(curve["mean"], curve["ci95"], strict=True)]),
    ]  # fmt: skip
    if paper is not None:
        rows.append(("MAML paper", [_cell(paper[i] if i < len(paper) else None)
                                    for i in range(k + 1)]))  # fmt: skip
    for name, b in result["baselines"].items():
        if "curve" in b:
            c = b["curve"]
            rows.append((name, [_cell(m, h) for m, h in zip(c["mean"], c["ci95"], strict=True)]))
    print(f"## {env_id}: {result['task_set']['num_tasks']} tasks "
          f"({'held out' if result['task_set']['held_out'] else 'all of them'}), "
          f"{result['settings']['episodes_per_step']} episodes/step, step sizes "
          f"{result['settings']['step_fast_lr']}\n")  # fmt: skip
    print("| method | " + " | ".join(f"{s} steps" for s in range(k + 1)) + " |")
    print("|---" * (k + 2) + "|")
    for name, cells in rows:
        print(f"| {name} | " + " | ".join(cells) + " |")
    sb3 = result["baselines"].get("sb3_ppo")
    if sb3:
        print(f"\nSB3 PPO from scratch on {sb3['num_tasks']} tasks (the adaptation used "
              f"{sb3['adaptation_budget_env_steps']:,} env steps per task):\n")  # fmt: skip
        print("| budget | env steps per task | return |\n|---|---|---|")
        for p in sb3["points"]:
            print(f"| {p['multiplier']:g}× | {p['env_steps']:,.0f} | "
                  f"{_cell(p['mean'], p['ci95'])} |")  # fmt: skip
    print(f"\nfull results: {out / 'eval.json'} (plot: {out / 'adaptation.png'}); {wall:.0f} s")

    summary: dict[str, Any] = {
        "benchmark": "evaluation",
        "env_id": env_id,
        "run": str(run.path),
        "iteration": run.iteration,
        "adapt_steps": k,
        "num_tasks": result["task_set"]["num_tasks"],
        "held_out": result["task_set"]["held_out"],
        "ours": curve["mean"],
        "ours_ci95": curve["ci95"],
        "paper": paper[: k + 1] if paper else None,
        "baselines": {
            n: b["curve"]["mean"] for n, b in result["baselines"].items() if "curve" in b
        },
        "sb3_ppo": [
            {"multiplier": p["multiplier"], "env_steps": p["env_steps"], "mean": p["mean"]}
            for p in (sb3["points"] if sb3 else [])
        ],
        "eval_json": str(out / "eval.json"),
        "wall_s": wall,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
