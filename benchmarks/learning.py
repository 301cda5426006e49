"""Learning curves: meta-train with a preset, plot returns before/after adaptation.

    python benchmarks/learning.py --config configs/navigation2d_trpo.yaml --num-batches 100
    python benchmarks/learning.py --config configs/halfcheetah_dir_trpo.yaml --out cheetah.png
    python benchmarks/learning.py --from-run runs/Navigation2D-v0-maml_trpo-20250101-120000

Trains with the real trainer (the run folder keeps TensorBoard logs, metrics.jsonl
and the checkpoint, so a long run can be resumed with ``maml-rl train --resume``),
or reads an existing run's ``metrics.jsonl`` with ``--from-run``. Writes a PNG of
the mean episode return before adaptation (the meta-policy θ) and after the inner
step(s) (θ'), against cumulative environment steps, and prints the final figures
(mean of the last ``--window`` iterations) next to the MAML paper's numbers where
it reports some. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from maml_rl.config import config_from_dict, load_config, parse_yaml
from maml_rl.logger import read_jsonl
from maml_rl.trainer import Trainer

#: Average return on new tasks before / after one gradient step (MAML paper, App. C.2).
PAPER = {
    "MetaRL/Navigation2D-v0": (-40.41, -11.68),
    "MetaRL/HalfCheetahDir-v0": (-50.69, 293.19),
}


def _plot(records: list[dict[str, Any]], title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    steps = [r["env_steps"] for r in records]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(steps, [r["rollout/return_pre_adapt"] for r in records], label="before adaptation")
    ax.plot(steps, [r["rollout/return_post_adapt"] for r in records], label="after adaptation")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("mean episode return")
    # Two lines: a long family id does not fit the plot's width on one.
    ax.set_title(title.replace(" (", "\n(", 1), fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="PATH", help="preset to train with")
    source.add_argument("--from-run", metavar="RUN_DIR", help="plot an existing run instead")
    parser.add_argument("--num-batches", type=int, default=None, help="meta-iterations")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--logdir", default="runs/learning", help="parent of the run folder")
    parser.add_argument("--out", default=None, help="PNG path (default: <run>/learning.png)")
    parser.add_argument("--window", type=int, default=10, help="iterations averaged at the end")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    args = parser.parse_args(argv)

    if args.from_run is not None:
        run_dir = Path(args.from_run)
        config = config_from_dict(parse_yaml((run_dir / "config.yaml").read_text()))
    else:
        overrides: dict[str, Any] = {"logdir": args.logdir}
        if args.num_batches is not None:
            overrides["num_batches"] = args.num_batches
        if args.seed is not None:
            overrides["seed"] = args.seed
        config = load_config(args.config, args.overrides).replace(overrides)
        trainer = Trainer(config)
        run_dir = trainer.run_dir
        print(f"run folder: {run_dir}", flush=True)
        trainer.train()

    records = read_jsonl(run_dir / "metrics.jsonl")
    if not records:
        raise SystemExit(f"{run_dir}/metrics.jsonl has no records")
    out = Path(args.out) if args.out else run_dir / "learning.png"
    m = config.maml
    title = (
        f"{config.agent} on {config.env.id} ({m.meta_batch_size} tasks x "
        f"{m.fast_batch_size} episodes, seed {config.seed})"
    )
    _plot(records, title, out)

    last = records[-args.window :]
    pre = statistics.fmean(r["rollout/return_pre_adapt"] for r in last)
    post = statistics.fmean(r["rollout/return_post_adapt"] for r in last)
    print(f"{title}: {len(records)} iterations, {records[-1]['env_steps']:,} env steps")
    print(f"  mean of the last {len(last)} iterations: before {pre:.2f}, after {post:.2f}")
    paper = PAPER.get(config.env.id)
    if paper is not None:
        print(f"  MAML paper (new tasks, 1 step): before {paper[0]:.2f}, after {paper[1]:.2f}")
    print(f"  plot: {out}")
    result = {
        "benchmark": "learning",
        "env": config.env.id,
        "agent": config.agent,
        "seed": config.seed,
        "iterations": len(records),
        "env_steps": records[-1]["env_steps"],
        "final_return_pre_adapt": round(pre, 3),
        "final_return_post_adapt": round(post, 3),
        "best_return_post_adapt": round(max(r["rollout/return_post_adapt"] for r in records), 3),
        "paper_pre_post": list(paper) if paper else None,
        "png": str(out),
        "run_dir": str(run_dir),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
