"""Sampler throughput against the bare-simulator limit, measured in one run.

For HalfCheetahVel (40 tasks × 20 episodes × 200 steps, a 2×100 tanh Gaussian
policy with different parameters per task) and Navigation2D (20 × 20 × 100, the
paper's 2×100 ReLU policy), it
times whole ``sampler.sample`` calls on each backend and worker count and prints
environment steps per second. For HalfCheetah it also measures, in the same run,
what the simulator alone can do: a plain loop of ``ctrl[:] = action;
mujoco.mj_step(model, data, nstep=5)`` (the env's frame skip) over as many
simulations and steps as the sample call, on 1 core (one loop) and on 2 cores (two
processes, each half the simulations). The sampler's overhead is the gap.

Targets: HalfCheetahVel with 2 ``process`` workers ≥ 0.8 × the bare 2-core limit;
a whole Navigation2D sample ≤ 50 ms.

Usage::

    python benchmarks/sampler_throughput.py            # full sizes (~ minutes)
    python benchmarks/sampler_throughput.py --quick    # small sizes (~ 30 s)

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import time
from typing import Any

import mujoco
import numpy as np
import torch

from maml_rl.agents.policies import GaussianMLPPolicy
from maml_rl.samplers import make_sampler
from maml_rl.tasks import family_class

CHEETAH = "MetaRL/HalfCheetahVel-v0"
NAV = "MetaRL/Navigation2D-v0"


# -- the bare simulator ------------------------------------------------------------------


def _bare_loop(num_sims: int, horizon: int, barrier: Any, seed: int) -> float:
    """Step ``num_sims`` simulations ``horizon`` times with random controls; seconds."""
    env = family_class(CHEETAH)()
    model, frame_skip = env.model, env.frame_skip
    rng = np.random.default_rng(seed)
    datas = [mujoco.MjData(model) for _ in range(num_sims)]
    for d in datas:
        d.qpos[:] = env.init_qpos + rng.uniform(-0.1, 0.1, model.nq)
        mujoco.mj_forward(model, d)
    ctrls = [d.ctrl for d in datas]
    actions = rng.uniform(-1.0, 1.0, size=(64, num_sims, model.nu))
    if barrier is not None:
        barrier.wait()
    start = time.perf_counter()
    for t in range(horizon):
        a = actions[t % 64]
        for k in range(num_sims):
            ctrls[k][:] = a[k]
            mujoco.mj_step(model, datas[k], nstep=frame_skip)
    return time.perf_counter() - start


def _bare_worker(args: tuple[int, int, Any, int]) -> float:
    return _bare_loop(*args)


def bare_limit(num_sims: int, horizon: int, cores: int) -> float:
    """Env steps per second of the bare loop on ``cores`` processes (1: in process)."""
    if cores == 1:
        return num_sims * horizon / _bare_loop(num_sims, horizon, None, 0)
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(cores)
        shares = [num_sims * (c + 1) // cores - num_sims * c // cores for c in range(cores)]
        with ctx.Pool(cores) as pool:
            times = pool.map(_bare_worker, [(s, horizon, barrier, c) for c, s in enumerate(shares)])
    return num_sims * horizon / max(times)


# -- the sampler ---------------------------------------------------------------------------


def time_sampler(
    env_id: str,
    obs_dim: int,
    act_dim: int,
    activation: str,
    tasks: int,
    episodes: int,
    horizon: int,
    backend: str,
    workers: int,
    repeats: int,
) -> dict[str, float]:
    """Seconds of a whole sample call (median and best of ``repeats``, after a warm-up
    call) and env steps per second (from the median)."""
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(obs_dim, act_dim, (100, 100), activation)
    task_list = family_class(env_id).sample_tasks(tasks, np.random.default_rng(0))
    g = torch.Generator().manual_seed(0)
    params = {  # a different θ'_i per task, as after adaptation
        k: v.detach() + 0.05 * torch.randn((tasks, *v.shape), generator=g)
        for k, v in policy.params().items()
    }
    with make_sampler(
        env_id, policy, backend=backend, num_workers=workers, max_episode_steps=horizon
    ) as sampler:
        sampler.sample(task_list, params, episodes, seed=0)  # warm-up: envs built, pages touched
        times, steps = [], 0
        for r in range(repeats):
            start = time.perf_counter()
            batch = sampler.sample(task_list, params, episodes, seed=r + 1)
            times.append(time.perf_counter() - start)
            steps = batch.env_steps
    seconds = statistics.median(times)
    return {
        "seconds": seconds,
        "best_seconds": min(times),
        "env_steps": steps,
        "steps_per_s": steps / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per setting")
    parser.add_argument(
        "--backends",
        default="sync,process,ray",
        help="comma-separated backends to time (ray is skipped if not installed)",
    )
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument(
        "--cheetah-size",
        default=None,
        help="HalfCheetahVel tasks,episodes,steps (default 40,20,200; --quick 8,5,50)",
    )
    args = parser.parse_args()

    repeats = args.repeats or (2 if args.quick else 3)
    size = args.cheetah_size or ("8,5,50" if args.quick else "40,20,200")
    c_tasks, c_eps, c_horizon = (int(v) for v in size.split(","))
    n_tasks, n_eps, n_horizon = 20, 20, 100
    backends = [b for b in args.backends.split(",") if b]
    if "ray" in backends:
        try:
            import ray  # noqa: F401
        except ImportError:
            print("ray not installed: skipping the ray backend")
            backends.remove("ray")
    worker_counts = [int(w) for w in args.workers.split(",")]
    settings = [("sync", 1)] if "sync" in backends else []
    settings += [(b, w) for b in backends if b != "sync" for w in worker_counts]

    result: dict[str, Any] = {
        "quick": args.quick,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "mujoco": mujoco.__version__,
    }

    sims = c_tasks * c_eps
    print(f"HalfCheetahVel: {c_tasks} tasks × {c_eps} episodes × {c_horizon} steps")
    bare = {}
    for cores in (1, 2):
        bare[cores] = bare_limit(sims, c_horizon, cores)
        print(f"  bare mj_step loop, {cores} core(s): {bare[cores]:>10,.0f} env steps/s")
    cheetah: dict[str, Any] = {
        "tasks": c_tasks,
        "episodes": c_eps,
        "horizon": c_horizon,
        "bare_steps_per_s": {str(k): v for k, v in bare.items()},
        "sampler": {},
    }
    for backend, workers in settings:
        r = time_sampler(
            CHEETAH, 17, 6, "tanh", c_tasks, c_eps, c_horizon, backend, workers, repeats
        )
        key = f"{backend}-{workers}"
        cheetah["sampler"][key] = r
        limit = bare[min(workers, 2)]
        print(
            f"  {key:>10}: {r['steps_per_s']:>10,.0f} env steps/s  ({r['seconds']:.2f} s per "
            f"sample; {r['steps_per_s'] / limit:.2f} × bare {min(workers, 2)}-core)"
        )
    if "process-2" in cheetah["sampler"]:
        cheetah["process2_over_bare2"] = cheetah["sampler"]["process-2"]["steps_per_s"] / bare[2]
        print(f"  process-2 / bare 2-core: {cheetah['process2_over_bare2']:.2f} (target ≥ 0.8)")
    result["halfcheetah_vel"] = cheetah

    print(f"Navigation2D: {n_tasks} tasks × {n_eps} episodes × {n_horizon} steps")
    nav: dict[str, Any] = {"tasks": n_tasks, "episodes": n_eps, "horizon": n_horizon}
    nav["sampler"] = {}
    for backend, workers in settings:
        # The MAML paper's navigation policy (configs/navigation2d_trpo.yaml): 2×100 ReLU.
        r = time_sampler(
            NAV, 2, 2, "relu", n_tasks, n_eps, n_horizon, backend, workers, max(repeats, 5)
        )
        key = f"{backend}-{workers}"
        nav["sampler"][key] = r
        print(
            f"  {key:>10}: {1e3 * r['seconds']:7.1f} ms per sample "
            f"({r['steps_per_s']:>10,.0f} env steps/s)"
        )
    if "sync-1" in nav["sampler"]:
        nav["sync_sample_ms"] = 1e3 * nav["sampler"]["sync-1"]["seconds"]
        print(f"  sync sample: {nav['sync_sample_ms']:.1f} ms (target ≤ 50 ms)")
    result["navigation2d"] = nav
    print(json.dumps(result))


if __name__ == "__main__":
    main()
