"""How fast a meta-trained policy moves on velocity tasks, before and after adaptation.

    python benchmarks/velocity_probe.py runs/ant/ant_vel_trpo --targets 0.25,1,2,2.75
    python benchmarks/velocity_probe.py benchmarks/results/checkpoints/halfcheetah_vel.pt

For a family whose task is a target velocity (``MetaRL/AntVel-v0``,
``MetaRL/HalfCheetahVel-v0``, ``MetaRL/HalfCheetahVelSparse-v0``): for each target, the
policy's mean forward velocity (``info["x_velocity"]``) over ``--episodes`` episodes
after 0, 1, ... ``--adapt-steps`` inner steps, with the evaluation's step sizes. The
inner steps are the evaluation's own (``maml_rl.evaluation.adapt`` on a ``sync``
sample of the same targets); the velocity is read by playing the registered single
env, which the batched one equals. A policy that adapts moves its velocity towards
each target; one that cannot reach a target stays where it was. The last line is JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Mapping

import gymnasium as gym
import numpy as np
import torch

from maml_rl.evaluation import (
    adapt,
    default_fast_lr_schedule,
    load_run,
    parse_fast_lr_schedule,
    step_learning_rates,
)
from maml_rl.samplers import make_sampler
from maml_rl.tasks import family_class


def velocities(
    env_id: str,
    horizon: int,
    policy: torch.nn.Module,
    params: Mapping[str, torch.Tensor],
    target: float,
    episodes: int,
    seed: int,
) -> tuple[float, float]:
    """Mean forward velocity and mean episode length of ``episodes`` episodes."""
    env = gym.make(env_id, task={"velocity": target}, max_episode_steps=horizon)
    generator = torch.Generator().manual_seed(seed)
    speeds, lengths = [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        steps = 0
        while True:
            with torch.no_grad():
                dist = policy(torch.as_tensor(obs, dtype=torch.float32)[None], params)
                noise = torch.randn(dist.mean.shape, generator=generator)
                action = (dist.mean + dist.stddev * noise)[0].numpy()
            obs, _, terminated, truncated, info = env.step(action)
            speeds.append(float(info["x_velocity"]))
            steps += 1
            if terminated or truncated:
                break
        lengths.append(steps)
    env.close()
    return float(np.mean(speeds)), float(np.mean(lengths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run folder or checkpoint file")
    parser.add_argument("--targets", default="0.25,1,2,2.75", help="target velocities (m/s)")
    parser.add_argument("--adapt-steps", type=int, default=1)
    parser.add_argument("--episodes", type=int, default=None, help="default: fast_batch_size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fast-lr-schedule",
        default=None,
        help="step sizes, comma-separated (default: the run's, as the evaluation's)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    run = load_run(args.run)
    config = run.config
    env_id, horizon = config.env.id, config.env.max_episode_steps
    family = family_class(env_id)
    if "velocity" not in {f.name for f in dataclasses.fields(family.task_cls)}:
        parser.error(f"{env_id}'s tasks have no target velocity")
    policy = run.policy()
    targets = [float(v) for v in args.targets.split(",")]
    tasks = [family.task_cls(velocity=v) for v in targets]  # type: ignore[call-arg]
    episodes = args.episodes or config.maml.fast_batch_size
    schedule = (
        parse_fast_lr_schedule(args.fast_lr_schedule)
        if args.fast_lr_schedule
        else config.eval.fast_lr_schedule or default_fast_lr_schedule(config.maml.fast_lr)
    )
    fast_lrs = step_learning_rates(schedule, args.adapt_steps)

    params = {k: v.detach() for k, v in policy.named_parameters()}
    table: dict[str, list[list[float]]] = {str(v): [] for v in targets}
    with make_sampler(env_id, policy, backend="sync", max_episode_steps=horizon) as sampler:
        for step in range(args.adapt_steps + 1):
            for i, target in enumerate(targets):
                own = params if step == 0 else {k: v[i : i + 1] for k, v in params.items()}
                speed, length = velocities(
                    env_id, horizon, policy, own, target, episodes, args.seed + 1000 * step
                )
                table[str(target)].append([speed, length])
                print(
                    f"step {step}  v* {target:5.2f} m/s: velocity {speed:5.2f} m/s, "
                    f"episode {length:5.1f} steps"
                )
            if step < args.adapt_steps:
                batch = sampler.sample(tasks, params, episodes, seed=args.seed + step)
                params = adapt(
                    policy,
                    params,
                    batch,
                    fast_lrs[step],
                    gamma=config.maml.gamma,
                    gae_lambda=config.maml.gae_lambda,
                )
    print(
        json.dumps(
            {
                "run": str(run.path),
                "iteration": run.iteration,
                "fast_lrs": fast_lrs,
                "velocity_and_length_by_target": table,
            }
        )
    )


if __name__ == "__main__":
    main()
