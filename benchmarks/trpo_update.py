"""Seconds per MAML-TRPO meta-update, split into its phases, at the paper's sizes.

    python benchmarks/trpo_update.py                          # Navigation2D: 20 x 20 x 100
    python benchmarks/trpo_update.py --shape navigation halfcheetah --threads 1 2
    python benchmarks/trpo_update.py --methods gauss_newton exact --iterations 5

Builds one meta-batch per shape (Navigation2D: real episodes from
``BatchedNavigation2D`` with the policy, then adapted; HalfCheetah: random data of
the paper's shape, 40 tasks x 20 episodes x 200 steps, obs 17, act 6, since only
the shapes matter for the update's cost), then times ``MAMLTRPO.step`` on it,
restoring the parameters before each call so every timed call does the same work.
The methods run round-robin (one update of each in turn), so a noisy machine
slows them alike and the ratios between them stay meaningful:

* ``gauss_newton``: the default — exact KL Hessian-vector products through the
  adaptation, with the hand-derived derivatives of ``agents._gaussian_mlp``;
* ``gauss_newton_autograd``: the same maths through autograd (what the default was
  before; still the path of other policies and inner objectives);
* ``exact``: double backward through the adaptation (the reference implementations'
  way; slow, so not in the default list);
* ``subsample``: the default's products on a ``--subsample`` fraction of the tasks;
* ``first_order``: ``hvp="first_order"``, the curvature with the adaptation's
  Jacobian taken as the identity (the gradient stays exact);
* ``first_order_subsample``: both;
* ``bfloat16``: the default's products computed in bfloat16 (``hvp_dtype``; fast
  on CPUs with AVX-512 BF16 and on GPUs, slow elsewhere);
* ``first_order_bfloat16``: first-order curvature in bfloat16.

For each it reports medians over the timed calls: ``update_s`` (wall clock; also
``update_cpu_s``, the process's CPU time, steadier on a shared machine with one
thread), ``gradient_s`` (advantages, adaptation, surrogate, meta-gradient, product
set-up), ``cg_s`` and ``hvp_s`` (= ``cg_s`` / products), ``line_search_s`` (and its
candidates), and ``speedup`` = the default's ``update_s`` / this method's (same run).
The load average is printed with the figures. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch

from maml_rl.agents.linearizers import AutogradLinearizer
from maml_rl.agents.maml_trpo import MAMLTRPO, TRPOConfig
from maml_rl.agents.policies import GaussianMLPPolicy, stack_params
from maml_rl.batch import EpisodeBatch
from maml_rl.envs.navigation import BatchedNavigation2D, Navigation2DEnv
from maml_rl.factories import resolve_device
from maml_rl.malloc import tune_malloc
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


METHODS: dict[str, tuple[dict[str, object], bool]] = {
    # label: (MAMLTRPO keywords; "subsample" is replaced by --subsample, hand-derived)
    "gauss_newton": ({}, True),
    "gauss_newton_autograd": ({}, False),
    "exact": ({"hvp": "exact"}, False),
    "subsample": ({"hvp_subsample": "subsample"}, True),
    "first_order": ({"hvp": "first_order"}, True),
    "first_order_subsample": ({"hvp": "first_order", "hvp_subsample": "subsample"}, True),
    "bfloat16": ({"hvp_dtype": "bfloat16"}, True),
    "first_order_bfloat16": ({"hvp": "first_order", "hvp_dtype": "bfloat16"}, True),
}
DEFAULT_METHODS = ["gauss_newton", "gauss_newton_autograd", "first_order", "first_order_subsample"]


def time_shape(
    shape: str, threads: int, methods: list[str], args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """Median phase timings of each method on one meta-batch of ``shape``."""
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    n, e, t, obs_dim, act_dim = SHAPES[shape]
    policy = GaussianMLPPolicy(obs_dim, act_dim, args.hidden, activation=args.activation)
    tasks = Navigation2DEnv.sample_tasks(n, np.random.default_rng(args.seed))
    make_batch = navigation_batch if shape == "navigation" else random_batch
    t0 = time.perf_counter()
    helper = MAMLTRPO(policy, device="cpu")
    train = make_batch(policy, policy.params(), tasks, e, t, args.seed)
    adapted = helper.adapt(policy.params(), train)
    valid = make_batch(policy, adapted, tasks, e, t, args.seed + 1)
    sample_s = time.perf_counter() - t0
    theta0 = {k: v.detach().clone() for k, v in policy.state_dict().items()}
    print(
        f"MAML-TRPO update, {shape}: {n} tasks x {e} episodes x {t} steps, obs {obs_dim}, "
        f"act {act_dim}, hidden {args.hidden} {args.activation}, cg_iters {args.cg_iters}, "
        f"{threads} threads, device {args.device} (batches built in {sample_s:.2f} s)"
    )
    agents = {}
    for label in methods:
        kwargs, hand_derived = METHODS[label]
        kwargs = {k: args.subsample if v == "subsample" else v for k, v in kwargs.items()}
        trpo = TRPOConfig(cg_iters=args.cg_iters, **kwargs)
        agent = MAMLTRPO(policy, trpo=trpo, device=resolve_device(args.device))
        if not hand_derived:
            agent.linearizer = AutogradLinearizer(agent.policy, agent.linearizer.settings)
        agents[label] = agent
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in methods}
    for i in range(args.warmup + args.iterations):
        for label, agent in agents.items():  # round-robin: noise hits every method alike
            policy.load_state_dict(theta0)
            start, start_cpu = time.perf_counter(), time.process_time()
            metrics = agent.step([train], valid)
            if agent.device.type == "cuda":
                torch.cuda.synchronize(agent.device)
            metrics["update_s"] = time.perf_counter() - start
            metrics["update_cpu_s"] = time.process_time() - start_cpu
            if i >= args.warmup:
                runs[label].append(metrics)
    policy.load_state_dict(theta0)

    results: dict[str, dict[str, float]] = {}
    for label, rows in runs.items():

        def med(key: str, rows: list[dict[str, float]] = rows) -> float:
            return statistics.median(r[key] for r in rows)

        products = max(med("train/cg_iterations"), 1.0)
        results[label] = {
            "update_s": med("update_s"),
            "update_cpu_s": med("update_cpu_s"),
            "gradient_s": med("time/trpo_gradient_s"),
            "cg_s": med("time/trpo_cg_s"),
            "hvp_s": med("time/trpo_cg_s") / products,
            "hvp_products": products,
            "line_search_s": med("time/trpo_line_search_s"),
            "line_search_steps": med("train/line_search_steps"),
            "step_accepted": med("train/step_accepted"),
            "kl": med("train/kl"),
            "surrogate_loss_after": med("train/surrogate_loss_after"),
        }
    base = results[methods[0]]["update_s"]
    for label, r in results.items():
        r["speedup"] = base / r["update_s"]
        print(
            f"{label:>22}: update {r['update_s']:.3f} s (cpu {r['update_cpu_s']:.3f}) = "
            f"gradient {r['gradient_s']:.3f} + CG {r['cg_s']:.3f} "
            f"({r['hvp_products']:.0f} x {r['hvp_s'] * 1e3:.1f} ms) + line search "
            f"{r['line_search_s']:.3f} ({r['line_search_steps']:.0f}); x{r['speedup']:.2f} vs "
            f"{methods[0]}; loss after {r['surrogate_loss_after']:.5f}, kl {r['kl']:.4f}"
        )
    return results


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", nargs="+", choices=sorted(SHAPES), default=["navigation"])
    parser.add_argument(
        "--methods", nargs="+", choices=list(METHODS), default=DEFAULT_METHODS,
        help="the first is the baseline of the speedups",
    )  # fmt: skip
    parser.add_argument("--iterations", type=int, default=3, help="timed updates per method")
    parser.add_argument("--warmup", type=int, default=1, help="untimed updates per method")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="torch threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--hidden", type=int, nargs="+", default=[100, 100])
    parser.add_argument("--activation", default="relu")
    parser.add_argument("--cg-iters", type=int, default=10)
    parser.add_argument(
        "--subsample", type=float, default=0.25,
        help="task fraction of the *_subsample methods' curvature",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tune-malloc", action="store_true",
        help="keep freed large blocks in glibc's heap (see tune_malloc)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.warmup < 0 or min(args.threads) < 1:
        parser.error("--iterations and --threads must be ≥ 1, --warmup ≥ 0")
    if not 0 < args.subsample <= 1:
        parser.error(f"--subsample must be in (0, 1], got {args.subsample}")

    malloc_tuned = tune_malloc() if args.tune_malloc else False
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, malloc tuned {malloc_tuned}")
    figures: dict[str, dict[str, dict[str, float]]] = {}
    for shape in args.shape:
        for threads in args.threads:
            figures[f"{shape}/{threads}"] = time_shape(shape, threads, args.methods, args)
    summary: dict[str, object] = {
        "benchmark": "trpo_update",
        "shapes": {
            s: dict(zip(("tasks", "episodes", "horizon", "obs", "act"), SHAPES[s], strict=True))
            for s in args.shape
        },
        "hidden": args.hidden,
        "threads": args.threads,
        "device": args.device,
        "malloc_tuned": malloc_tuned,
        "load_average": [load[0], os.getloadavg()[0]],
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "results": figures,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
