"""Seconds per meta-iteration at the MAML paper's sizes, split into sampling and update.

    python benchmarks/meta_iteration.py                        # Navigation2D: 20 x 20 x 100
    python benchmarks/meta_iteration.py --env halfcheetah-dir  # 40 tasks x 20 eps x 200 steps
    python benchmarks/meta_iteration.py --sampler process --workers 4 --device cuda
    python benchmarks/meta_iteration.py trpo.hvp_dtype=bfloat16 trpo.hvp_subsample=0.25 \
        update_threads=2                                       # the README's 0.58 s row

Runs ``--warmup + --iterations`` meta-iterations of the real trainer (sampler,
MAML-TRPO, loggers) with the preset's settings and reports medians over the
timed iterations: the whole iteration, the sample calls (all inner steps and the
validation batch), the inner adaptation steps between them, and the outer update
(``agent.step``). The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from maml_rl.config import load_config
from maml_rl.logger import InMemoryLogger
from maml_rl.malloc import tune_malloc
from maml_rl.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ENVS = {
    "navigation": CONFIGS / "navigation2d_trpo.yaml",
    "halfcheetah-dir": CONFIGS / "halfcheetah_dir_trpo.yaml",
    "halfcheetah-vel": CONFIGS / "halfcheetah_vel_trpo.yaml",
    "ant-dir": CONFIGS / "ant_dir_trpo.yaml",
}
PHASES = ("iteration_s", "sample_s", "adapt_s", "update_s", "env_steps_per_s")
UPDATE_PHASES = ("trpo_gradient_s", "trpo_cg_s", "trpo_line_search_s")


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", choices=sorted(ENVS), default="navigation")
    parser.add_argument("--iterations", type=int, default=5, help="timed meta-iterations")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first iterations")
    parser.add_argument("--sampler", choices=["sync", "process", "ray"], default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default=None)
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's thresholds as they are (maml-rl train raises them: maml_rl.malloc)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.warmup < 0:
        parser.error("--iterations must be ≥ 1 and --warmup ≥ 0")

    overrides: dict[str, object] = {"num_batches": args.warmup + args.iterations}
    overrides["seed"] = args.seed
    overrides["checkpoint_every"] = 0
    if args.sampler is not None:
        overrides["sampler.backend"] = args.sampler
    if args.workers is not None:
        overrides["sampler.num_workers"] = args.workers
    if args.device is not None:
        overrides["device"] = args.device
    config = load_config(ENVS[args.env], args.overrides).replace(overrides)
    malloc_tuned = False if args.default_malloc else tune_malloc()

    memory = InMemoryLogger()
    with tempfile.TemporaryDirectory(prefix="maml-rl-bench-") as tmp:
        trainer = Trainer(config, Path(tmp) / "run", console=False, loggers=[memory])
        device = str(trainer.device)
        trainer.train()
    timed = [m for _, m in memory.records[args.warmup :]]
    medians = {p: statistics.median(m[f"time/{p}"] for m in timed) for p in PHASES}
    # The update's own phases, where the agent reports them (MAML-TRPO does).
    for p in UPDATE_PHASES:
        if all(f"time/{p}" in m for m in timed):
            medians[p] = statistics.median(m[f"time/{p}"] for m in timed)
    if all("train/line_search_steps" in m for m in timed):
        medians["line_search_steps"] = statistics.mean(m["train/line_search_steps"] for m in timed)

    m = config.maml
    horizon = config.env.max_episode_steps
    print(
        f"{config.env.id}: {m.meta_batch_size} tasks x {m.fast_batch_size} episodes x "
        f"{horizon} steps, {m.num_adapt_steps} inner step(s); sampler {config.sampler.backend} "
        f"({config.sampler.num_workers} worker(s)); update on {device} "
        f"({config.update_threads} thread(s)); malloc tuned {malloc_tuned}; "
        f"median of {args.iterations} iteration(s) after {args.warmup} warm-up"
    )
    for p, v in medians.items():
        unit = {"env_steps_per_s": "steps/s", "line_search_steps": "(mean)"}.get(p, "s")
        indent = "    " if p in UPDATE_PHASES or p == "line_search_steps" else "  "
        print(f"{indent}{p:<{24 - len(indent)}} {v:>12.3f} {unit}")
    result = {
        "benchmark": "meta_iteration",
        "env": config.env.id,
        "meta_batch_size": m.meta_batch_size,
        "fast_batch_size": m.fast_batch_size,
        "horizon": horizon,
        "sampler": config.sampler.backend,
        "num_workers": config.sampler.num_workers,
        "device": device,
        "iterations": args.iterations,
        **{f"median_{p}": round(v, 4) for p, v in medians.items()},
        "torch": torch.__version__,
        "update_threads": config.update_threads,
        "malloc_tuned": malloc_tuned,
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
