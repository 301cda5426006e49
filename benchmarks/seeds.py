"""Fast adaptation over seeds: train a preset for several seeds, evaluate them together.

    python benchmarks/seeds.py --config configs/navigation2d_trpo_original.yaml --seeds 1-10
    python benchmarks/seeds.py --config configs/navigation2d_trpo_original.yaml --seeds 1,2 \\
        --jobs 2 num_batches=50
    python benchmarks/seeds.py --from-runs runs/seeds/seed1 runs/seeds/seed2 --seed 1

Trains every seed with the real trainer, each in its own ``maml-rl train`` process
(``--jobs`` at a time; one run folder per seed under ``--out``; a seed whose run
folder already holds a checkpoint of the requested length is not trained again),
then evaluates all runs on the same held-out tasks with
:func:`maml_rl.evaluation.evaluate` — the protocol is the runs' ``eval:`` section
unless the flags set it — and prints, per adaptation step, the mean over seeds with
its 95 % confidence interval over seeds, the range over seeds, every seed's value,
and the MAML paper's number with its ±10 % bound where the paper reports one. The
whole evaluation goes to ``<out>/eval/eval.json``. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from maml_rl.config import load_config
from maml_rl.evaluation import (
    EvalSettings,
    evaluate,
    load_run,
    mean_confidence_interval,
    parse_fast_lr_schedule,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluation import PAPER  # the sibling benchmark's table of the paper

_TRAIN = "import sys; from maml_rl.cli import main; sys.exit(main(sys.argv[1:]))"


def parse_seeds(text: str) -> list[int]:
    """``"1-10"``, ``"1,3,5"`` or a mix (``"1-3,7"``) → sorted distinct seeds ≥ 0."""
    seeds: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            first, last = int(lo), int(hi) if hi else int(lo)
            if first < 0 or last < first:
                raise ValueError
            seeds.update(range(first, last + 1))
    except ValueError:
        raise ValueError(f"--seeds takes seeds ≥ 0 like 1-10 or 1,3,5; got {text!r}") from None
    return sorted(seeds)


def _trained(run_dir: Path, num_batches: int) -> bool:
    checkpoint = run_dir / "checkpoint.pt"
    return checkpoint.is_file() and load_run(checkpoint).iteration >= num_batches


def train_seeds(
    config: str, seeds: list[int], out: Path, overrides: list[str], jobs: int
) -> list[Path]:
    """Train the seeds missing under ``out`` (``jobs`` processes at a time)."""
    num_batches = load_config(config, overrides).num_batches  # also checks the overrides
    runs = [out / f"seed{s}" for s in seeds]
    todo = [(s, r) for s, r in zip(seeds, runs, strict=True) if not _trained(r, num_batches)]
    running: list[tuple[int, subprocess.Popen[bytes], Path]] = []
    while todo or running:
        while todo and len(running) < jobs:
            seed, run = todo.pop(0)
            if run.exists():
                raise SystemExit(f"{run} exists without a finished checkpoint; remove it first")
            log = out / f"seed{seed}.log"
            cmd = [sys.executable, "-c", _TRAIN, "train", "--config", config, "--seed",
                   str(seed), "--logdir", str(out), f"run_name=seed{seed}", *overrides]  # fmt: skip
            print(f"training seed {seed} (log: {log})", flush=True)
            with log.open("wb") as fh:
                running.append((seed, subprocess.Popen(cmd, stdout=fh, stderr=fh), log))
        time.sleep(1.0)
        for item in list(running):
            seed, proc, log = item
            if proc.poll() is not None:
                running.remove(item)
                if proc.returncode != 0:
                    tail = log.read_text(errors="replace").strip().splitlines()[-1:]
                    raise SystemExit(f"seed {seed} failed: {' '.join(tail)} (log: {log})")
    return runs


def summarize(result: dict[str, Any], paper: list[float] | None) -> dict[str, Any]:
    """Mean over seeds ± 95 % CI over seeds, range, per-seed values, per step."""
    per_seed = np.array([r["curve"]["mean"] for r in result["runs"]])  # [S, K + 1]
    steps = []
    for k in range(per_seed.shape[1]):
        mean, half = mean_confidence_interval(per_seed[:, k])
        row: dict[str, Any] = {
            "step": k, "mean": mean, "ci95": half, "min": float(per_seed[:, k].min()),
            "max": float(per_seed[:, k].max()), "per_seed": per_seed[:, k].tolist(),
        }  # fmt: skip
        if paper is not None and k < len(paper):
            # "within 10 %": no worse than the paper's number by a tenth of its size.
            row["paper"], row["bound"] = paper[k], paper[k] - 0.1 * abs(paper[k])
        steps.append(row)
    return {"labels": [r["label"] for r in result["runs"]], "steps": steps}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="preset to train (with --seeds)")
    parser.add_argument("--seeds", default="1-10", help="e.g. 1-10 or 1,3,5 (default 1-10)")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at a time (default 1)")
    parser.add_argument("--out", help="parent of the run folders (default runs/seeds-<preset>)")
    parser.add_argument("--from-runs", nargs="+", metavar="RUN", help="evaluate these runs only")
    parser.add_argument("--num-tasks", type=int, default=40)
    parser.add_argument("--adapt-steps", type=int, default=3)
    parser.add_argument("--episodes-per-step", type=int, help="default: the runs'")
    parser.add_argument("--fast-lr-schedule", help="default: the runs'")
    parser.add_argument("--seed", type=int, default=0, help="evaluation seed (task set)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="training overrides")
    args = parser.parse_args(argv)
    if (args.config is None) == (args.from_runs is None):
        parser.error("give --config (train and evaluate) or --from-runs (evaluate only)")
    try:
        settings = EvalSettings(
            num_tasks=args.num_tasks,
            adapt_steps=args.adapt_steps,
            episodes_per_step=args.episodes_per_step,
            fast_lr_schedule=(
                parse_fast_lr_schedule(args.fast_lr_schedule) if args.fast_lr_schedule else None
            ),
            seed=args.seed,
            progress=False,
        )
        if args.jobs < 1:
            raise ValueError(f"--jobs must be ≥ 1, got {args.jobs}")
        seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")

    t0 = time.perf_counter()
    if args.from_runs:
        runs = [Path(r) for r in args.from_runs]
        out = Path(args.out) if args.out else runs[0].parent
    else:
        out = Path(args.out) if args.out else Path("runs") / f"seeds-{Path(args.config).stem}"
        out.mkdir(parents=True, exist_ok=True)
        try:
            runs = train_seeds(args.config, seeds, out, args.overrides, args.jobs)
        except ValueError as exc:  # a bad preset or override: one line
            parser.exit(2, f"{parser.prog}: error: {exc}\n")
    train_s = time.perf_counter() - t0
    try:
        result = evaluate(runs, settings, out / "eval")
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    summary = summarize(result, PAPER.get(result["env_id"]))

    s = result["settings"]
    print(f"\n## {result['env_id']}: {len(runs)} runs, {result['task_set']['num_tasks']} tasks "
          f"(evaluation seed {s['seed']}), {s['episodes_per_step']} episodes per step, "
          f"step sizes {s['step_fast_lr']}\n")  # fmt: skip
    print("| step | mean ± 95 % CI over seeds | range | paper | 10 % bound |")
    print("|---|---|---|---|---|")
    for row in summary["steps"]:
        ci = f" ± {row['ci95']:.2f}" if row["ci95"] is not None else ""
        paper = f"{row['paper']:.2f} | {row['bound']:.2f}" if "paper" in row else "– | –"
        print(f"| {row['step']} | {row['mean']:.2f}{ci} | {row['min']:.2f} … {row['max']:.2f} "
              f"| {paper} |")  # fmt: skip
    print("\nper seed:")
    for i, label in enumerate(summary["labels"]):
        print(f"  {label}: " + " / ".join(f"{r['per_seed'][i]:.2f}" for r in summary["steps"]))
    print(f"\nfull results: {out / 'eval' / 'eval.json'}; training {train_s:.0f} s")
    record = {"benchmark": "seeds", "env_id": result["env_id"], "runs": [str(r) for r in runs],
              "settings": s, **summary, "train_s": train_s}  # fmt: skip
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
