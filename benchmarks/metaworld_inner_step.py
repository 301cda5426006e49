"""How far one inner step moves the policy on Meta-World, for candidate step sizes α.

The Meta-World paper lists MAML's inner step as α = 1e-4; the JAX baselines of its
maintainers use 0.1, the MAML paper's value. maml-rl's inner step is REINFORCE on
*per-task normalised* advantages (``maml.normalize_advantages``), so its gradient does
not grow with Meta-World's returns (up to 10 per step over 500 steps). This script
measures, from one pre-adaptation batch shared by every setting (paired):

* ``kl``: the mean KL(π_θ ‖ π_θ') over the batch's observations after one inner step
  (the outer TRPO step is bounded by ``max_kl = 0.01``: an inner step far below that
  leaves the adapted policy the unadapted one);
* ``param_step``: ‖θ' − θ‖;
* the success rate and return of fresh episodes with θ' (the same sampler seed for
  every setting), next to those of θ.

Settings: α ∈ {1e-4, 0.1} on normalised advantages (maml-rl's inner step), and
α = 1e-4 on raw advantages (the scale at which a 1e-4 step was meant, if the paper's
code did not normalise).

Usage::

    python benchmarks/metaworld_inner_step.py                      # the initial policy
    python benchmarks/metaworld_inner_step.py --checkpoint RUN     # a trained one

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import torch

from maml_rl.agents.maml import TaskSamples, inner_step
from maml_rl.agents.policies import GaussianMLPPolicy
from maml_rl.samplers import make_sampler
from maml_rl.tasks import family_class, sample_training_tasks

SETTINGS = [("normalised", 1e-4), ("normalised", 0.1), ("raw", 1e-4)]


def _policy(checkpoint: str | None) -> tuple[GaussianMLPPolicy, str]:
    if checkpoint is None:
        torch.manual_seed(0)
        policy = GaussianMLPPolicy(39, 4, hidden_sizes=(128, 128), activation="tanh")
        return policy.double(), "initial (seed 0)"
    from maml_rl.evaluation.protocol import load_run
    from maml_rl.factories import build_policy

    run = load_run(checkpoint)
    policy = build_policy(run.config)
    policy.load_state_dict(run.policy_state)
    return policy.double(), f"{checkpoint} (iteration {run.iteration})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--env", default="MetaWorld/ML1-reach-v3")
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--horizon", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--checkpoint", default=None, help="a run folder or checkpoint")
    args = parser.parse_args()
    policy, label = _policy(args.checkpoint)
    family: Any = family_class(args.env)
    tasks = sample_training_tasks(family, args.tasks, np.random.default_rng(0))
    theta = {k: v.detach() for k, v in policy.named_parameters()}
    results: dict[str, Any] = {"policy": label}
    with make_sampler(
        args.env,
        policy,
        max_episode_steps=args.horizon,
        backend="process",
        num_workers=args.workers,
    ) as sampler:
        pre = sampler.sample(tasks, theta, args.episodes, seed=1)
        post_theta = sampler.sample(tasks, theta, args.episodes, seed=2)
        results["before"] = {
            "success": float(pre.episode_success.mean()),  # type: ignore[union-attr]
            "return": float(pre.episode_returns.mean()),
            "success_fresh": float(post_theta.episode_success.mean()),  # type: ignore[union-attr]
            "return_fresh": float(post_theta.episode_returns.mean()),
        }
        print(f"{label}: success {results['before']['success']:.3f}, "
              f"return {results['before']['return']:.1f}")  # fmt: skip
        n = args.tasks
        mask = pre.mask.double().reshape(n, -1)  # [N, T * E]
        obs = pre.observations.double().reshape(n, mask.shape[1], -1)
        with torch.no_grad():
            dist_theta = policy(obs, {k: v.unsqueeze(0).expand(args.tasks, *v.shape)
                                      for k, v in theta.items()})  # fmt: skip
        for advantages, lr in SETTINGS:
            samples = TaskSamples.from_batch(
                pre, 0.99, 1.0, dtype=torch.float64, normalize=advantages == "normalised"
            )
            step = inner_step(policy, theta, samples, lr, second_order=False, keep_graph=False)
            adapted = {k: v.detach() for k, v in step.params_out.items()}
            with torch.no_grad():
                dist = policy(obs, adapted)
                kl = torch.distributions.kl_divergence(dist_theta, dist)
            mean_kl = float((kl * mask).sum() / mask.sum())
            moved = float(
                torch.sqrt(sum(((adapted[k] - theta[k]) ** 2).sum() / args.tasks for k in theta))
            )
            post = sampler.sample(tasks, adapted, args.episodes, seed=2)
            key = f"{advantages}_{lr:g}"
            results[key] = {
                "kl": mean_kl,
                "param_step": moved,
                "success": float(post.episode_success.mean()),  # type: ignore[union-attr]
                "return": float(post.episode_returns.mean()),
            }
            got, before = results[key], results["before"]
            print(f"α = {lr:g} on {advantages} advantages: KL {mean_kl:.3g}, |Δθ| {moved:.3g}, "
                  f"success {got['success']:.3f} (θ: {before['success_fresh']:.3f}), "
                  f"return {got['return']:.1f} (θ: {before['return_fresh']:.1f})")  # fmt: skip
    print(json.dumps({"benchmark": "metaworld_inner_step", "env": args.env, "tasks": args.tasks,
                      "episodes": args.episodes, "horizon": args.horizon, **results}))  # fmt: skip


if __name__ == "__main__":
    main()
