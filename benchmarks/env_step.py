"""Env-steps per second of a MuJoCo task family: bare MuJoCo vs gym.make vs batched.

For each family it times, single-threaded, with uniform random actions drawn up
front (so the figures measure the env, not an RNG or a policy):

* ``bare``: ``K`` ``MjData`` of the family's model, ``ctrl[:] = a`` and
  ``mujoco.mj_step(model, data, nstep=frame_skip)`` per env: the floor any
  Python stepper pays;
* ``gym``: one ``gymnasium.make(id)`` env (with its wrappers), ``step`` in a loop,
  reset at episode end;
* ``batched``: ``family.make_batched(K)``, one ``step`` for all ``K`` envs,
  reset when every env is done. Terminated envs are not simulated, so only
  running envs are counted.

Each line gives steps/s and the ratio to ``bare``; the last line is a JSON object.

Usage::

    python benchmarks/env_step.py                        # HalfCheetahVel and AntVel, K = 100
    python benchmarks/env_step.py --env-id MetaRL/AntGoal-v0 --num-envs 20 --seconds 5
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

import maml_rl.envs  # noqa: F401  (registers the families)
from maml_rl.tasks import family_class

ACTION_BLOCK = 256  # steps of pre-drawn actions, reused cyclically


def _timed(step_block: Callable[[], int], seconds: float) -> float:
    """Run ``step_block`` (returns env steps done) for ~``seconds``; steps/s."""
    step_block()  # warm-up
    steps, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        steps += step_block()
    return steps / elapsed


def bench_bare(env_id: str, num_envs: int, seconds: float, rng: np.random.Generator) -> float:
    family: Any = family_class(env_id)
    proto = family()
    model, nstep, horizon = proto.model, proto.frame_skip, family.horizon
    datas = [mujoco.MjData(model) for _ in range(num_envs)]
    ctrls = [d.ctrl for d in datas]
    actions = rng.uniform(-1, 1, size=(ACTION_BLOCK, num_envs, model.nu))
    t = 0

    def block() -> int:
        nonlocal t
        for _ in range(16):
            if t % horizon == 0:  # same episode cadence as the envs
                for d in datas:
                    mujoco.mj_resetData(model, d)
                    d.qpos[:] = proto.init_qpos + rng.uniform(-0.1, 0.1, model.nq)
                    mujoco.mj_forward(model, d)
            a = actions[t % ACTION_BLOCK]
            for k, d in enumerate(datas):
                ctrls[k][:] = a[k]
                mujoco.mj_step(model, d, nstep=nstep)
            t += 1
        return 16 * num_envs

    return _timed(block, seconds)


def bench_gym(env_id: str, seconds: float, rng: np.random.Generator) -> float:
    env = gym.make(env_id)
    env.reset(seed=0)
    shape: Any = env.action_space.shape
    actions = rng.uniform(-1, 1, size=(ACTION_BLOCK, *shape)).astype(np.float32)
    t = 0

    def block() -> int:
        nonlocal t
        for _ in range(200):
            _, _, terminated, truncated, _ = env.step(actions[t % ACTION_BLOCK])
            t += 1
            if terminated or truncated:
                env.reset()
        return 200

    return _timed(block, seconds)


def bench_batched(env_id: str, num_envs: int, seconds: float, rng: np.random.Generator) -> float:
    family: Any = family_class(env_id)
    env = family.make_batched(num_envs)
    env.set_tasks(family.sample_tasks(num_envs, rng))
    seeds = rng.integers(2**31, size=num_envs)
    env.reset(seed=seeds.tolist())
    actions = rng.uniform(-1, 1, size=(ACTION_BLOCK, num_envs, *env.single_action_space.shape))
    running = np.ones(num_envs, dtype=bool)
    t = 0

    def block() -> int:
        nonlocal t, running
        steps = 0
        for _ in range(16):
            steps += int(running.sum())
            _, _, terminated, truncated, _ = env.step(actions[t % ACTION_BLOCK])
            t += 1
            running &= ~(terminated | truncated)
            if not running.any():
                env.reset(seed=(seeds + t).tolist())
                running[:] = True
        return steps

    return _timed(block, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--env-id",
        action="append",
        help="family id (repeatable; default: MetaRL/HalfCheetahVel-v0 and MetaRL/AntVel-v0)",
    )
    parser.add_argument("--num-envs", type=int, default=100, help="K for bare and batched")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    env_ids = args.env_id or ["MetaRL/HalfCheetahVel-v0", "MetaRL/AntVel-v0"]

    results: dict[str, dict[str, float]] = {}
    for env_id in env_ids:
        rng = np.random.default_rng(args.seed)
        bare = bench_bare(env_id, args.num_envs, args.seconds, rng)
        single = bench_gym(env_id, args.seconds, rng)
        batched = bench_batched(env_id, args.num_envs, args.seconds, rng)
        results[env_id] = {
            "bare_steps_per_s": round(bare),
            "gym_steps_per_s": round(single),
            "batched_steps_per_s": round(batched),
            "gym_vs_bare": round(single / bare, 3),
            "batched_vs_bare": round(batched / bare, 3),
        }
        for name, value in (("bare", bare), ("gym", single), ("batched", batched)):
            print(f"{env_id:28s} {name:8s} {value:10.0f} steps/s  {value / bare:5.2f}x bare")
    print(
        json.dumps(
            {
                "benchmark": "env_step",
                "num_envs": args.num_envs,
                "seconds": args.seconds,
                "mujoco": mujoco.__version__,
                "machine": platform.processor() or platform.machine(),
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
