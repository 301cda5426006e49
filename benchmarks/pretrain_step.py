"""Seconds per step of the pretrained / oracle baselines' TRPO, two curvature products.

    python benchmarks/pretrain_step.py                    # HalfCheetah's shape, 2 threads
    python benchmarks/pretrain_step.py --obs 27 --act 8   # Ant's
    python benchmarks/pretrain_step.py --threads 1 --repeats 5

The evaluation's pretrained and oracle baselines train one shared policy by plain TRPO
(:class:`maml_rl.agents.multitask_trpo.MultiTaskTRPO`) for hundreds of iterations; on
the Ant and HalfCheetah families that update was most of the evaluation's time. This
times ``MultiTaskTRPO.step`` on one batch of the MAML paper's locomotion shape (40 tasks
x 20 episodes x 200 steps; random observations and rewards, actions from the policy,
since only the shapes matter for the cost — as ``benchmarks/trpo_update.py``), restoring
the parameters before each call, with the conjugate gradient's products

* ``gauss_newton``: the default for a Gaussian MLP policy, the hand-derived ``Jᵀ F J v``
  of ``agents._gaussian_mlp`` (exact at θ, where the KL's gradient vanishes);
* ``double_backward``: autograd differentiating ``∇KL`` a second time (the path of any
  other policy, and what every policy used before).

The two run round-robin, so a noisy machine slows them alike; it prints the median of
each, their ratio (same run), and how far apart the two steps land relative to the
step's length (the products agree to rounding, so the steps do too). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from unittest import mock

import torch
from trpo_update import random_batch

from maml_rl.agents import _gaussian_mlp as gm
from maml_rl.agents.multitask_trpo import MultiTaskTRPO
from maml_rl.agents.policies import GaussianMLPPolicy
from maml_rl.tasks import Task

PRODUCTS = ("gauss_newton", "double_backward")


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--obs", type=int, default=17, help="observation size (HalfCheetah)")
    parser.add_argument("--act", type=int, default=6, help="action size (HalfCheetah)")
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps of each")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(args.obs, args.act)
    start = {k: v.detach().clone() for k, v in policy.named_parameters()}
    tasks = [Task() for _ in range(args.tasks)]
    batch = random_batch(policy, policy.params(), tasks, args.episodes, args.horizon, seed=0)
    learner = MultiTaskTRPO(policy)

    def step(product: str) -> tuple[float, dict[str, torch.Tensor]]:
        with torch.no_grad():
            for k, v in policy.named_parameters():
                v.copy_(start[k])
        hand = product == "gauss_newton"
        with mock.patch.object(gm, "supports", lambda p: hand):
            t0 = time.perf_counter()
            learner.step(batch)
            seconds = time.perf_counter() - t0
        return seconds, {k: v.detach().clone() for k, v in policy.named_parameters()}

    times: dict[str, list[float]] = {p: [] for p in PRODUCTS}
    after: dict[str, dict[str, torch.Tensor]] = {}
    for _ in range(args.repeats):
        for product in PRODUCTS:
            seconds, after[product] = step(product)
            times[product].append(seconds)
    # How far apart the two steps land, relative to the step's length.
    moves = {p: torch.cat([(after[p][k] - start[k]).flatten() for k in start]) for p in PRODUCTS}
    diff = float((moves[PRODUCTS[0]] - moves[PRODUCTS[1]]).norm() / moves[PRODUCTS[1]].norm())
    medians = {p: statistics.median(t) for p, t in times.items()}
    ratio = medians["double_backward"] / medians["gauss_newton"]
    print(
        f"MultiTaskTRPO.step, {args.tasks} tasks x {args.episodes} episodes x {args.horizon} "
        f"steps, obs {args.obs}, act {args.act}, {args.threads} threads, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    for p in PRODUCTS:
        print(f"  {p:16s} {medians[p]:7.2f} s  (median of {args.repeats})")
    print(f"  speed-up {ratio:.2f}x; steps differ by {diff:.1e} of their length")
    result: dict[str, object] = {
        "benchmark": "pretrain_step",
        "shape": [args.tasks, args.episodes, args.horizon, args.obs, args.act],
        "threads": args.threads,
        "seconds": medians,
        "speedup": ratio,
        "step_relative_difference": diff,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
