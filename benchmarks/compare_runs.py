"""Learning curves of existing runs side by side: the same preset with other settings.

    python benchmarks/compare_runs.py float32=runs/compare_f32/halfcheetah_dir_trpo \\
        bf16_quarter=runs/long/halfcheetah_dir_trpo --iterations 134 \\
        --out benchmarks/results/halfcheetah_dir_curvature.png

Each ``LABEL=RUN_DIR`` is a run folder (its ``metrics.jsonl``); ``--iterations N`` keeps
the first N iterations of each (a run that went on further is cut, so both are compared
on the same budget). Prints, per run, the post- and pre-adaptation returns averaged over
``--window`` iterations at every ``--every`` iterations, the final and best smoothed
post-adaptation return and the mean seconds per iteration, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_agents import load_curve, summarize, trailing_mean


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    parser.add_argument("--iterations", type=int, default=None, help="first N of each run")
    parser.add_argument("--window", type=int, default=10, help="iterations averaged")
    parser.add_argument("--every", type=int, default=30, help="table row every N iterations")
    parser.add_argument("--out", default=None, help="PNG path (default: none)")
    args = parser.parse_args(argv)
    curves: dict[str, list[dict[str, float]]] = {}
    for item in args.runs:
        label, sep, run = item.partition("=")
        if not sep or not label or not run:
            parser.error(f"{item!r}: expected LABEL=RUN_DIR")
        records = load_curve(Path(run))
        if args.iterations is not None:
            if len(records) < args.iterations:
                parser.error(f"{run} has {len(records)} iterations, fewer than {args.iterations}")
            records = records[: args.iterations]
        curves[label] = records

    n = min(len(r) for r in curves.values())
    marks = [*range(args.every, n, args.every), n]
    print(f"{'iteration':>9}  " + "  ".join(f"{label:>22}" for label in curves))
    for i in marks:
        cells = []
        for records in curves.values():
            last = records[max(0, i - args.window) : i]
            pre = statistics.fmean(r["rollout/return_pre_adapt"] for r in last)
            post = statistics.fmean(r["rollout/return_post_adapt"] for r in last)
            cells.append(f"pre {pre:7.1f} post {post:7.1f}")
        print(f"{i:>9}  " + "  ".join(f"{c:>22}" for c in cells))
    results = {}
    for label, records in curves.items():
        r = summarize(records, args.window, args.window, None)
        r["mean_iteration_s"] = round(statistics.fmean(x["time/iteration_s"] for x in records), 2)
        results[label] = r
        print(
            f"{label}: final post {r['final_return_post_adapt']:.2f}, best (mean of "
            f"{args.window}) {r['best_smoothed_return_post_adapt']:.2f}, "
            f"{r['mean_iteration_s']:.2f} s/iteration"
        )
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7.5, 4.4))
        for (label, records), color in zip(curves.items(), ("C0", "C1", "C2", "C3"), strict=False):
            x = [r["env_steps"] for r in records]
            for key, style in (
                ("rollout/return_post_adapt", "-"),
                ("rollout/return_pre_adapt", ":"),
            ):
                y = [r[key] for r in records]
                ax.plot(x, y, color=color, alpha=0.2, linewidth=0.8)
                kind = "after" if "post" in key else "before"
                ax.plot(x, trailing_mean(y, args.window), style, color=color,
                        label=f"{label}, {kind} adaptation")  # fmt: skip
        ax.set_xlabel("environment steps")
        ax.set_ylabel(f"return (thick: mean of {args.window})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=120)
        plt.close(fig)
        print(f"plot: {args.out}")
    summary = {"benchmark": "compare_runs", "iterations": n, "runs": results}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
