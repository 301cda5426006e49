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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from maml_rl.evaluation import (
    LoadedRun,
    adapt,
    default_fast_lr_schedule,
    load_run,
    parse_fast_lr_schedule,
    step_learning_rates,
)
from maml_rl.samplers import make_sampler
from maml_rl.tasks import Task, family_class

#: A task and one of its episodes' ``info`` dicts → the values the episode adds to the
#: pooled mean.
Measure = Callable[[Task, list[dict[str, Any]]], list[float]]


def x_velocities(task: Task, infos: list[dict[str, Any]]) -> list[float]:
    """Every step's forward velocity (pooled over the episodes: a step-weighted mean)."""
    return [float(info["x_velocity"]) for info in infos]


def play(
    env_id: str,
    horizon: int,
    policy: torch.nn.Module,
    params: Mapping[str, torch.Tensor],
    task: Task,
    episodes: int,
    seed: int,
    measure: Measure,
) -> tuple[float, float]:
    """Mean of ``measure`` pooled over ``episodes`` episodes of the registered single env,
    and the mean episode length."""
    env = gym.make(env_id, task=task.to_dict(), max_episode_steps=horizon)
    generator = torch.Generator().manual_seed(seed)
    values: list[float] = []
    lengths: list[int] = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        infos: list[dict[str, Any]] = []
        while True:
            with torch.no_grad():
                dist = policy(torch.as_tensor(obs, dtype=torch.float32)[None], params)
                noise = torch.randn(dist.mean.shape, generator=generator)
                action = (dist.mean + dist.stddev * noise)[0].numpy()
            obs, _, terminated, truncated, info = env.step(action)
            infos.append(info)
            if terminated or truncated:
                break
        values += measure(task, infos)
        lengths.append(len(infos))
    env.close()
    return float(np.mean(values)), float(np.mean(lengths))


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every probe shares (its own: what to probe)."""
    parser.add_argument("run", help="run folder or checkpoint file")
    parser.add_argument("--adapt-steps", type=int, default=1)
    parser.add_argument("--episodes", type=int, default=None, help="default: fast_batch_size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fast-lr-schedule",
        default=None,
        help="step sizes, comma-separated (default: the run's, as the evaluation's)",
    )


def probe(
    args: argparse.Namespace,
    run: LoadedRun,
    tasks: Sequence[Task],
    labels: Sequence[str],
    measure: Measure,
    quantity: str,
) -> tuple[list[float], dict[str, list[list[float]]]]:
    """For each task, ``[measure, episode length]`` after 0 … ``--adapt-steps`` inner steps
    (the evaluation's: ``adapt`` on a ``sync`` sample of the same tasks, the run's step
    sizes unless ``--fast-lr-schedule``); printed as it goes. Returns the step sizes and
    the table by label."""
    config = run.config
    env_id, horizon = config.env.id, config.env.max_episode_steps
    policy = run.policy()
    episodes = args.episodes or config.maml.fast_batch_size
    schedule = (
        parse_fast_lr_schedule(args.fast_lr_schedule)
        if args.fast_lr_schedule
        else config.eval.fast_lr_schedule or default_fast_lr_schedule(config.maml.fast_lr)
    )
    fast_lrs = step_learning_rates(schedule, args.adapt_steps)

    params = {k: v.detach() for k, v in policy.named_parameters()}
    table: dict[str, list[list[float]]] = {label: [] for label in labels}
    with make_sampler(env_id, policy, backend="sync", max_episode_steps=horizon) as sampler:
        for step in range(args.adapt_steps + 1):
            for i, (task, label) in enumerate(zip(tasks, labels, strict=True)):
                own = params if step == 0 else {k: v[i : i + 1] for k, v in params.items()}
                value, length = play(
                    env_id, horizon, policy, own, task, episodes, args.seed + 1000 * step, measure
                )
                table[label].append([value, length])
                print(f"step {step}  {label}: {quantity} {value:.2f}, episode {length:5.1f} steps")
            if step < args.adapt_steps:
                batch = sampler.sample(list(tasks), params, episodes, seed=args.seed + step)
                params = adapt(
                    policy,
                    params,
                    batch,
                    fast_lrs[step],
                    gamma=config.maml.gamma,
                    gae_lambda=config.maml.gae_lambda,
                )
    return fast_lrs, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_probe_arguments(parser)
    parser.add_argument("--targets", default="0.25,1,2,2.75", help="target velocities (m/s)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    run = load_run(args.run)
    family = family_class(run.config.env.id)
    if "velocity" not in {f.name for f in dataclasses.fields(family.task_cls)}:
        parser.error(f"{run.config.env.id}'s tasks have no target velocity")
    targets = [float(v) for v in args.targets.split(",")]
    tasks = [family.task_cls(velocity=v) for v in targets]  # type: ignore[call-arg]
    labels = [str(v) for v in targets]  # the JSON's keys: "0.3", not "v* 0.30"
    fast_lrs, table = probe(args, run, tasks, labels, x_velocities, "velocity (m/s)")
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
