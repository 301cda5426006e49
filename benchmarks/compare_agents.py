"""MAML-TRPO vs MAML-PPO vs ProMP: learning curves on one task family, same seed and budget.

    python benchmarks/compare_agents.py --num-batches 200                    # Navigation2D
    python benchmarks/compare_agents.py --env halfcheetah_dir --num-batches 300 --workers 8
    python benchmarks/compare_agents.py --num-batches 5 maml.meta_batch_size=4  # smoke run
    python benchmarks/compare_agents.py --env halfcheetah_dir --from-runs trpo=RUN ppo=RUN promp=RUN

Each agent trains from its preset (``configs/<family>_{trpo,ppo,promp}.yaml``) through
the real trainer, with the same seed, the same number of meta-iterations and the same
``KEY=VALUE`` overrides, so all three see the same tasks in the same order and sample
the same number of episodes per iteration. The run folders (TensorBoard, metrics.jsonl,
checkpoint) stay under ``--logdir``.

Writes one PNG with two panels: the post-adaptation return (mean episode return of the
validation batch, sampled with the adapted θ'_i) against cumulative environment steps,
and against wall-clock seconds (the running sum of the iterations' ``time/iteration_s``:
sampling, adaptation and update; logging and checkpoints excluded). Thin lines are the
raw per-iteration values, thick lines their trailing mean over ``--smooth`` iterations.

Prints, per agent: the final post-adaptation return (mean of the last ``--window``
iterations), the best smoothed one, and the env steps and seconds at which the smoothed
curve first reaches ``--threshold`` (default on Navigation2D: −12, about the MAML paper's
−11.68 after one step on new tasks). The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from maml_rl.config import load_config
from maml_rl.logger import InMemoryLogger
from maml_rl.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FAMILIES = ("navigation2d", "halfcheetah_vel", "halfcheetah_dir", "ant_vel", "ant_dir", "ant_goal")
#: Preset suffix and the label each agent gets in plots and figures.
AGENTS = {"trpo": "MAML-TRPO", "ppo": "MAML-PPO", "promp": "ProMP"}
DEFAULT_THRESHOLD = {"navigation2d": -12.0}


class _Progress:
    """A logger that prints a line every ``every`` iterations (the trainer's console
    logger prints every one)."""

    def __init__(self, label: str, total: int, every: int) -> None:
        self.label, self.total, self.every = label, total, max(every, 1)

    def write(self, metrics: Mapping[str, float], step: int) -> None:
        i = int(metrics["iteration"])
        if i % self.every == 0 or i == self.total:
            print(
                f"  {self.label:<9} [{i}/{self.total}] {step:,} env steps, return post "
                f"{metrics['rollout/return_post_adapt']:.2f}",
                flush=True,
            )

    def close(self) -> None:
        pass


def trailing_mean(values: Sequence[float], window: int) -> list[float]:
    """``out[i]`` = mean of ``values[max(0, i − window + 1) : i + 1]``."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def train_curve(
    family: str, kind: str, overrides: Sequence[str], logdir: Path, stamp: str
) -> list[dict[str, float]]:
    """Train one agent from its preset; its per-iteration metrics, with ``env_steps`` and
    cumulative ``wall_s`` added."""
    memory = InMemoryLogger()
    config = load_config(CONFIGS / f"{family}_{kind}.yaml", overrides)
    config = config.replace(
        {"logdir": str(logdir), "run_name": f"{family}-{kind}-seed{config.seed}-{stamp}"}
    )
    progress = _Progress(AGENTS[kind], config.num_batches, every=max(config.num_batches // 10, 1))
    with Trainer(config, console=False, loggers=[memory, progress]) as trainer:
        trainer.train()
    records, wall = [], 0.0
    for step, metrics in memory.records:
        wall += metrics["time/iteration_s"]
        records.append({**metrics, "env_steps": float(step), "wall_s": wall})
    return records


def load_curve(run_dir: Path) -> list[dict[str, float]]:
    """A finished (or stopped) run's per-iteration metrics from its ``metrics.jsonl``,
    with cumulative ``wall_s`` added, as :func:`train_curve` returns them."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"compare_agents: no metrics.jsonl in {run_dir} (is it a run folder?)")
    records, wall = [], 0.0
    with path.open() as f:
        for line in f:
            if line.strip():
                metrics = json.loads(line)
                wall += metrics["time/iteration_s"]
                records.append({**metrics, "wall_s": wall})
    if not records:
        raise SystemExit(f"compare_agents: {path} is empty")
    return records


def summarize(
    records: Sequence[Mapping[str, float]], window: int, smooth: int, threshold: float | None
) -> dict[str, Any]:
    """Final and best returns, and when the smoothed curve first reaches ``threshold``."""
    post = [r["rollout/return_post_adapt"] for r in records]
    smoothed = trailing_mean(post, smooth)
    reached = None
    if threshold is not None:
        reached = next((i for i, v in enumerate(smoothed) if v >= threshold), None)
    last = records[-window:]
    return {
        "iterations": len(records),
        "env_steps": int(records[-1]["env_steps"]),
        "wall_s": round(records[-1]["wall_s"], 2),
        "final_return_pre_adapt": round(
            statistics.fmean(r["rollout/return_pre_adapt"] for r in last), 3
        ),
        "final_return_post_adapt": round(statistics.fmean(post[-window:]), 3),
        "best_smoothed_return_post_adapt": round(max(smoothed), 3),
        "env_steps_to_threshold": None if reached is None else int(records[reached]["env_steps"]),
        "wall_s_to_threshold": None if reached is None else round(records[reached]["wall_s"], 2),
        "mean_update_s": round(statistics.fmean(r["time/update_s"] for r in records), 4),
    }


def plot(
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    title: str,
    smooth: int,
    threshold: float | None,
    out: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True)
    for (kind, records), color in zip(curves.items(), ("C0", "C1", "C2"), strict=False):
        post = [r["rollout/return_post_adapt"] for r in records]
        for ax, key in zip(axes, ("env_steps", "wall_s"), strict=True):
            x = [r[key] for r in records]
            ax.plot(x, post, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(x, trailing_mean(post, smooth), color=color, label=AGENTS[kind])
    for ax, label in zip(axes, ("environment steps", "wall-clock seconds"), strict=True):
        if threshold is not None:
            ax.axhline(threshold, color="gray", linestyle="--", linewidth=0.8)
            low, high = ax.get_ylim()
            ax.set_ylim(low, max(high, threshold + 0.05 * (high - low)))  # keep it in view
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"return after adaptation (thick: mean of {smooth})")
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", choices=FAMILIES, default="navigation2d", help="task family")
    parser.add_argument("--agents", default="trpo,ppo,promp", help="comma-separated subset")
    parser.add_argument("--num-batches", type=int, default=100, help="meta-iterations per agent")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sampler", choices=("sync", "process", "ray"), default=None)
    parser.add_argument("--workers", type=int, default=None, help="sampler workers")
    parser.add_argument("--update-threads", type=int, default=1, help="torch threads, update")
    parser.add_argument("--logdir", default="runs/compare_agents", help="parent of run folders")
    parser.add_argument("--out", default=None, help="PNG (default: <logdir>/compare_<env>.png)")
    parser.add_argument("--window", type=int, default=10, help="iterations in the final mean")
    parser.add_argument("--smooth", type=int, default=5, help="trailing-mean window of curves")
    parser.add_argument(
        "--threshold", type=float, default=None, help="return to reach (navigation2d: -12)"
    )
    parser.add_argument(
        "--from-runs",
        nargs="+",
        metavar="AGENT=RUN_DIR",
        help="plot existing runs (e.g. trpo=runs/a ppo=runs/b) instead of training: for "
        "runs too long for one sitting, trained with `maml-rl train` and --resume",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="for every agent")
    args = parser.parse_args(argv)

    kinds = [k.strip() for k in args.agents.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(AGENTS))
    if unknown or not kinds:
        parser.error(f"--agents takes a subset of {','.join(AGENTS)}, got {args.agents!r}")
    for name in ("num_batches", "window", "smooth"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(args, name)}")
    threshold = args.threshold if args.threshold is not None else DEFAULT_THRESHOLD.get(args.env)
    overrides = [
        *args.overrides,
        f"num_batches={args.num_batches}",
        f"seed={args.seed}",
        f"update_threads={args.update_threads}",
        "checkpoint_every=0",
    ]
    if args.sampler is not None:
        overrides.append(f"sampler.backend={args.sampler}")
    if args.workers is not None:
        overrides.append(f"sampler.num_workers={args.workers}")
    logdir = Path(args.logdir)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")

    curves: dict[str, list[dict[str, float]]] = {}
    if args.from_runs:
        for item in args.from_runs:
            kind, sep, run = item.partition("=")
            if not sep or kind not in AGENTS:
                parser.error(f"--from-runs takes AGENT=RUN_DIR with AGENT in {set(AGENTS)}")
            curves[kind] = load_curve(Path(run))
        kinds = list(curves)
        args.num_batches = max(len(c) for c in curves.values())
    else:
        for kind in kinds:
            print(f"training {AGENTS[kind]} ({args.env}_{kind}.yaml)", flush=True)
            curves[kind] = train_curve(args.env, kind, overrides, logdir, stamp)

    config = load_config(CONFIGS / f"{args.env}_{kinds[0]}.yaml", overrides)
    m = config.maml
    lengths = {len(c) for c in curves.values()}
    iterations = (
        f"{args.num_batches} iterations"
        if len(lengths) == 1
        else "iterations " + ", ".join(f"{AGENTS[k]} {len(c)}" for k, c in curves.items())
    )
    title = (
        f"{config.env.id}: {m.meta_batch_size} tasks x {m.fast_batch_size} episodes, "
        f"{iterations}, " + ("existing runs" if args.from_runs else f"seed {args.seed}")
    )
    out = Path(args.out) if args.out else logdir / f"compare_{args.env}.png"
    plot(curves, title, args.smooth, threshold, out)

    results = {k: summarize(c, args.window, args.smooth, threshold) for k, c in curves.items()}
    print(title)
    reach = f" to reach {threshold:g}" if threshold is not None else ""
    print(f"  {'agent':<10} {'final post':>10} {'best':>9} {'env steps' + reach:>24} {'s':>8}")
    for kind, r in results.items():
        steps = r["env_steps_to_threshold"]
        secs = r["wall_s_to_threshold"]
        print(
            f"  {AGENTS[kind]:<10} {r['final_return_post_adapt']:>10.2f} "
            f"{r['best_smoothed_return_post_adapt']:>9.2f} "
            f"{'-' if threshold is None else 'never' if steps is None else f'{steps:,}':>24} "
            f"{'-' if secs is None else f'{secs:.1f}':>8}"
        )
    print(f"  plot: {out}")
    summary = {
        "benchmark": "compare_agents",
        "env": config.env.id,
        "seed": args.seed,
        "num_batches": args.num_batches,
        "overrides": list(args.overrides),
        "threshold": threshold,
        "smooth": args.smooth,
        "window": args.window,
        "agents": {AGENTS[k]: v for k, v in results.items()},
        "png": str(out),
    }
    print(json.dumps(_nan_to_none(summary)))  # NaN is not JSON: a diverged run reports null
    return summary


def _nan_to_none(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by ``None``."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


if __name__ == "__main__":
    main(sys.argv[1:])
