"""Seconds per MAML-TRPO meta-update, split into its phases, at the paper's sizes.

    python benchmarks/trpo_update.py                          # Navigation2D: 20 x 20 x 100
    python benchmarks/trpo_update.py --shape halfcheetah      # 40 tasks x 20 eps x 200 steps
    python benchmarks/trpo_update.py --hvp gauss_newton --iterations 5 --device cuda

Builds one meta-batch (Navigation2D: real episodes from ``BatchedNavigation2D``
with the policy, then adapted; HalfCheetah: random data of the paper's shape, obs
17, act 6, since only the shapes matter for the update's cost), then times
``MAMLTRPO.step`` on it, restoring the parameters before each call so every timed
call does the same work. For each Hessian-vector-product method (Gauss-Newton,
the default; exact double backward, the reference implementations' way; and
Gauss-Newton on a ``--subsample`` fraction of the tasks) it reports the median
of the timed calls:

* ``gradient_s``: advantages + baseline fits, adaptation with graph, surrogate,
  meta-gradient through the adaptation, and building the product function;
* ``cg_s`` and ``hvp_s`` (= ``cg_s`` / products): the conjugate-gradient solve;
* ``line_search_s`` (and the number of candidates, each a re-adaptation);
* ``update_s``: the whole ``step``.

The update runs on ``--threads`` torch threads (default 2, as the trainer uses).
The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import statistics
import time

import numpy as np
import torch

from maml_rl.agents.maml_trpo import MAMLTRPO
from maml_rl.agents.policies import GaussianMLPPolicy, stack_params
from maml_rl.batch import EpisodeBatch
from maml_rl.envs.navigation import BatchedNavigation2D, Navigation2DEnv
from maml_rl.tasks import Task

SHAPES = {
    # name: (tasks, episodes per task, horizon, obs_dim, act_dim)
    "navigation": (20, 20, 100, 2, 2),
    "halfcheetah": (40, 20, 200, 17, 6),
}


def navigation_batch(
    policy: GaussianMLPPolicy, params: dict[str, torch.Tensor], tasks: list[Task], episodes: int,
    horizon: int, seed: int,
) -> EpisodeBatch:  # fmt: skip
    """Real Navigation2D episodes, all tasks stepped together with stacked params."""
    n = len(tasks)
    env = BatchedNavigation2D(n * episodes, horizon)
    env.set_tasks([t for t in tasks for _ in range(episodes)])
    obs_np, _ = env.reset(seed=list(range(n * episodes)))
    gen = torch.Generator().manual_seed(seed)
    if not policy.is_stacked(params):
        params = stack_params(params, n)
    obs, acts, rews, logps = [], [], [], []
    with torch.no_grad():
        for _ in range(horizon):
            o = torch.as_tensor(obs_np, dtype=torch.float32).view(n, episodes, -1)
            dist = policy(o, params)
            a = dist.mean + dist.stddev * torch.randn(dist.mean.shape, generator=gen)
            obs.append(o)
            acts.append(a)
            logps.append(dist.log_prob(a))
            obs_np, r, _, _, _ = env.step(a.reshape(n * episodes, -1).numpy())
            rews.append(torch.as_tensor(r, dtype=torch.float32).view(n, episodes))
    truncated = torch.zeros(n, horizon, episodes, dtype=torch.bool)
    truncated[:, -1] = True
    return EpisodeBatch(
        observations=torch.stack(obs, 1),
        actions=torch.stack(acts, 1),
        rewards=torch.stack(rews, 1),
        log_probs=torch.stack(logps, 1),
        terminated=torch.zeros_like(truncated),
        truncated=truncated,
        mask=torch.ones(n, horizon, episodes),
        final_observations=torch.as_tensor(obs_np, dtype=torch.float32).view(n, episodes, -1),
        tasks=list(tasks),
    )


def random_batch(
    policy: GaussianMLPPolicy, params: dict[str, torch.Tensor], tasks: list[Task], episodes: int,
    horizon: int, seed: int,
) -> EpisodeBatch:  # fmt: skip
    """Random observations and rewards of the given shape; actions from the policy."""
    n = len(tasks)
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, horizon, episodes, policy.obs_dim, generator=gen)
    if not policy.is_stacked(params):
        params = stack_params(params, n)
    with torch.no_grad():
        dist = policy(obs, params)
        actions = dist.mean + dist.stddev * torch.randn(dist.mean.shape, generator=gen)
        log_probs = dist.log_prob(actions)
    truncated = torch.zeros(n, horizon, episodes, dtype=torch.bool)
    truncated[:, -1] = True
    return EpisodeBatch(
        observations=obs,
        actions=actions,
        rewards=torch.randn(n, horizon, episodes, generator=gen),
        log_probs=log_probs,
        terminated=torch.zeros_like(truncated),
        truncated=truncated,
        mask=torch.ones(n, horizon, episodes),
        final_observations=torch.randn(n, episodes, policy.obs_dim, generator=gen),
        tasks=list(tasks),
    )


def tune_malloc() -> bool:
    """Make glibc keep freed large blocks instead of unmapping them (process-wide).

    By default glibc serves allocations above 32 MB (HalfCheetah-sized activations:
    40 x 4000 x 100 floats = 64 MB) with a fresh ``mmap`` each time, and every page
    of it faults in on first touch; this roughly halves the update's speed at that
    size. The same effect: ``MALLOC_MMAP_THRESHOLD_=1073741824
    MALLOC_TRIM_THRESHOLD_=1073741824`` in the environment. Returns success.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(
        libc.mallopt(m_trim_threshold, 1 << 30)
    )


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="navigation")
    parser.add_argument("--hvp", choices=["both", "gauss_newton", "exact"], default="both")
    parser.add_argument("--iterations", type=int, default=3, help="timed updates per method")
    parser.add_argument("--warmup", type=int, default=1, help="untimed updates per method")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the update")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    parser.add_argument("--hidden", type=int, nargs="+", default=[100, 100])
    parser.add_argument("--activation", default="relu")
    parser.add_argument("--cg-iters", type=int, default=10)
    parser.add_argument(
        "--subsample", type=float, default=0.25,
        help="also time Gauss-Newton products on this fraction of the tasks (1 = skip)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tune-malloc", action="store_true",
        help="keep freed large blocks in glibc's heap (see tune_malloc)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--iterations and --threads must be ≥ 1, --warmup ≥ 0")

    malloc_tuned = tune_malloc() if args.tune_malloc else False
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    n, e, t, obs_dim, act_dim = SHAPES[args.shape]
    policy = GaussianMLPPolicy(obs_dim, act_dim, args.hidden, activation=args.activation)
    tasks = Navigation2DEnv.sample_tasks(n, np.random.default_rng(args.seed))
    make_batch = navigation_batch if args.shape == "navigation" else random_batch
    t0 = time.perf_counter()
    helper = MAMLTRPO(policy, device="cpu")
    train = make_batch(policy, policy.params(), tasks, e, t, args.seed)
    adapted = helper.adapt(policy.params(), train)
    valid = make_batch(policy, adapted, tasks, e, t, args.seed + 1)
    sample_s = time.perf_counter() - t0
    theta0 = {k: v.detach().clone() for k, v in policy.state_dict().items()}

    methods = [(m, m, 1.0) for m in ("gauss_newton", "exact") if args.hvp in (m, "both")]
    if 0 < args.subsample < 1 and args.hvp != "exact":
        methods.append(
            (f"gauss_newton_subsample_{args.subsample:g}", "gauss_newton", args.subsample)
        )
    print(
        f"MAML-TRPO update, {args.shape}: {n} tasks x {e} episodes x {t} steps, obs {obs_dim}, "
        f"act {act_dim}, hidden {args.hidden} {args.activation}, cg_iters {args.cg_iters}, "
        f"{args.threads} threads, device {args.device}, malloc tuned {malloc_tuned} "
        f"(batches built in {sample_s:.2f} s)"
    )
    results: dict[str, dict[str, float]] = {}
    for label, method, subsample in methods:
        agent = MAMLTRPO(
            policy, hvp=method, hvp_subsample=subsample, cg_iters=args.cg_iters,
            device=args.device,
        )  # fmt: skip
        runs: list[dict[str, float]] = []
        for i in range(args.warmup + args.iterations):
            policy.load_state_dict(theta0)
            start = time.perf_counter()
            metrics = agent.step([train], valid)
            if agent.device.type == "cuda":
                torch.cuda.synchronize(agent.device)
            metrics["update_s"] = time.perf_counter() - start
            if i >= args.warmup:
                runs.append(metrics)

        def med(key: str, rows: list[dict[str, float]] = runs) -> float:
            return statistics.median(r[key] for r in rows)

        products = max(med("train/cg_iterations"), 1.0)
        results[label] = {
            "update_s": med("update_s"),
            "gradient_s": med("time/trpo_gradient_s"),
            "cg_s": med("time/trpo_cg_s"),
            "hvp_s": med("time/trpo_cg_s") / products,
            "hvp_products": products,
            "line_search_s": med("time/trpo_line_search_s"),
            "line_search_steps": med("train/line_search_steps"),
            "step_accepted": med("train/step_accepted"),
            "kl": med("train/kl"),
        }
        r = results[label]
        print(
            f"{label:>12}: update {r['update_s']:.3f} s = gradient {r['gradient_s']:.3f} + "
            f"CG {r['cg_s']:.3f} ({r['hvp_products']:.0f} x {r['hvp_s'] * 1e3:.1f} ms) + "
            f"line search {r['line_search_s']:.3f} ({r['line_search_steps']:.0f} candidates); "
            f"kl {r['kl']:.4f}, accepted {r['step_accepted']:.0f}"
        )
    policy.load_state_dict(theta0)
    summary: dict[str, object] = {
        "benchmark": "trpo_update",
        "shape": args.shape,
        "tasks": n,
        "episodes": e,
        "horizon": t,
        "hidden": args.hidden,
        "threads": args.threads,
        "device": args.device,
        "malloc_tuned": malloc_tuned,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "results": results,
    }
    if "gauss_newton" in results and "exact" in results:
        summary["speedup_update"] = (
            results["exact"]["update_s"] / results["gauss_newton"]["update_s"]
        )
        summary["speedup_hvp"] = results["exact"]["hvp_s"] / results["gauss_newton"]["hvp_s"]
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
