"""Meta-World step cost in the sampler against a plain loop of Meta-World's own envs.

For one Meta-World family (default ``MetaWorld/ML1-reach-v3``) and ``tasks × episodes``
environments playing ``horizon`` steps, measured on the same machine in the same run:

* **loop**: Meta-World's own envs (``ALL_V3_ENVIRONMENTS[name]()``, each given its task
  with ``set_task`` and reset), stepped in a plain Python loop with precomputed random
  actions: nothing but Meta-World's ``step`` (no policy, no batch arrays);
* **sampler**: whole ``sampler.sample`` calls with a 2×128 tanh Gaussian policy (the
  preset's), per-task parameters, on ``sync`` (one process, like the loop) and on
  ``process`` workers; the first call, which builds the envs, is timed apart.

``ratio_sync_vs_loop`` is the share of Meta-World's own speed the sampler keeps on one
core (1.0: no overhead); ``ratio_process_vs_loop`` what the workers add on top.

Needs the extra (``pip install "maml-rl[metaworld]"``).

Usage::

    python benchmarks/metaworld_throughput.py            # 20 tasks × 10 episodes × 500 steps
    python benchmarks/metaworld_throughput.py --quick    # 4 × 5 × 200 (~ 1 min)

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any

import numpy as np
import torch

from maml_rl.agents.policies import GaussianMLPPolicy
from maml_rl.envs.metaworld import MetaWorldTask
from maml_rl.samplers import make_sampler
from maml_rl.tasks import family_class, make_family, sample_training_tasks
from maml_rl.threads import available_cores


def loop_rate(tasks: list[MetaWorldTask], episodes: int, horizon: int) -> dict[str, float]:
    """Env steps per second of Meta-World's own envs in a plain loop (one process)."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    start = time.perf_counter()
    envs = []
    for task in tasks:
        for _ in range(episodes):
            env = ALL_V3_ENVIRONMENTS[task.env_name]()
            env.set_task(task.to_metaworld())
            envs.append(env)
    build_s = time.perf_counter() - start
    actions = np.random.default_rng(0).uniform(-1, 1, size=(horizon, len(envs), 4))
    start = time.perf_counter()
    for env in envs:
        env.reset()
    for t in range(horizon):
        for k, env in enumerate(envs):
            env.step(actions[t, k])
    elapsed = time.perf_counter() - start
    for env in envs:
        env.close()
    return {"steps_per_s": len(envs) * horizon / elapsed, "build_s": build_s}


def sampler_rate(
    env_id: str,
    tasks: list[Any],
    episodes: int,
    horizon: int,
    backend: str,
    workers: int,
    repeats: int,
) -> dict[str, float]:
    """Env steps per second of whole ``sample`` calls (best of ``repeats`` after the first)."""
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(39, 4, hidden_sizes=(128, 128), activation="tanh")
    base = policy.params()
    params = {k: v.unsqueeze(0).repeat(len(tasks), *[1] * v.dim()) for k, v in base.items()}
    params = {k: v + 0.01 * torch.randn_like(v) for k, v in params.items()}
    times = []
    steps = 0.0
    with make_sampler(
        env_id,
        policy,
        max_episode_steps=horizon,
        backend=backend,
        num_workers=workers,
    ) as sampler:
        for r in range(repeats + 1):
            start = time.perf_counter()
            batch = sampler.sample(tasks, params, episodes, seed=r)
            times.append(time.perf_counter() - start)
            steps = float(batch.mask.sum())
    best = min(times[1:])
    return {
        "steps_per_s": steps / best,
        "first_call_s": times[0],
        "call_s_median": statistics.median(times[1:]),
        "call_s_best": best,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--env", default="MetaWorld/ML1-reach-v3")
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--horizon", type=int, default=500)
    parser.add_argument("--workers", type=int, default=None, help="default: the cores")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="4 tasks x 5 episodes x 200 steps")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.episodes, args.horizon, args.repeats = 4, 5, 200, 1
    workers = args.workers or available_cores()
    make_family(args.env).close()  # imports Meta-World (a clear line where it is missing)
    family = family_class(args.env)
    tasks = sample_training_tasks(family, args.tasks, np.random.default_rng(0))

    loop = loop_rate(tasks, args.episodes, args.horizon)
    print(f"loop (Meta-World's envs, one process): {loop['steps_per_s']:,.0f} steps/s "
          f"(building {args.tasks * args.episodes} envs: {loop['build_s']:.1f} s)")  # fmt: skip
    sync = sampler_rate(args.env, tasks, args.episodes, args.horizon, "sync", 1, args.repeats)
    print(f"sampler sync: {sync['steps_per_s']:,.0f} steps/s "
          f"= {sync['steps_per_s'] / loop['steps_per_s']:.2f} x loop")  # fmt: skip
    proc = sampler_rate(
        args.env, tasks, args.episodes, args.horizon, "process", workers, args.repeats
    )
    print(f"sampler process ({workers} workers): {proc['steps_per_s']:,.0f} steps/s "
          f"= {proc['steps_per_s'] / loop['steps_per_s']:.2f} x loop")  # fmt: skip
    print(
        json.dumps(
            {
                "benchmark": "metaworld_throughput",
                "env": args.env,
                "tasks": args.tasks,
                "episodes": args.episodes,
                "horizon": args.horizon,
                "workers": workers,
                "cores": available_cores(),
                "machine": platform.processor() or platform.machine(),
                "loop": loop,
                "sync": sync,
                "process": proc,
                "ratio_sync_vs_loop": sync["steps_per_s"] / loop["steps_per_s"],
                "ratio_process_vs_loop": proc["steps_per_s"] / loop["steps_per_s"],
            }
        )
    )


if __name__ == "__main__":
    main()
