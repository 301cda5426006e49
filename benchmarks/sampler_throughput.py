"""Sampler throughput against what the simulator itself can do, measured in one run.

For HalfCheetahVel, AntVel and HalfCheetahRandParams (40 tasks × 20 episodes × 200
steps by default, a 2×100 tanh Gaussian policy with different parameters per task) it
measures, on the same cores and in the same run:

* **batch limit**: MuJoCo's own batched simulator, open loop — ``mujoco.batch.Batch``
  with ``nthread`` = the cores used, stepping all ``tasks × episodes`` simulations
  ``frame_skip`` MuJoCo steps per env step with precomputed random controls, nothing
  else (no policy, no reward, no resets);
* **loop limit**: a Python loop of ``ctrl[:] = a; mujoco.mj_step(model, data, nstep)``
  (and ``mj_rnePostConstraint`` for Ant, whose observation reads contact forces) over
  the same simulations, one process per core;
* **the sampler**: whole ``sampler.sample`` calls (policy, rewards, observations,
  early terminations, the batch arrays included) on each backend / worker / thread
  setting, and its ratio to both limits.

The batch limit and the sampler settings are measured in rounds (``--repeats``): each
round times the open loop once and one sample call of each setting, and the ratio to
the batch limit is the median of the rounds' ratios. On a shared machine whose speed
drifts by several percent over a minute, a limit measured once before the sampler
moved the ratio by ±0.04 between runs.

Env steps per second count the steps episodes actually played (an Ant that falls
stops early). The initial policy's Ant falls within tens of steps in most episodes, so
the sampler then evaluates the policy on many rows whose episodes have ended; with
``--trained`` each family is also timed with its shipped meta-trained policy
(``benchmarks/results/checkpoints/<family>.pt``, its θ on every task), whose episodes
reach the horizon as in a training's later iterations (``ratio_vs_batch_trained``).
Target: the ``sync`` sampler on all cores ≥ 0.9 × the batch limit.
For the ``sync`` setting the time of each call is also split into the seconds inside the
simulator and outside it, and the simulator's closed-loop pace is compared with the
open-loop limit's (``simulator_pace_vs_batch``: the limit's seconds for the same env steps
over the seconds in the simulator): the ratio to the limit is that pace times the share of
the call spent in the simulator.

For a random-dynamics family (``halfcheetah_rand_params``: every simulation has its
own masses, inertias, damping and friction) both limits are also measured with those
per-simulation models — ``mujoco.batch``'s ``expand`` + ``set_const``, one ``MjModel``
copy per ``MjData`` in the loop — once with every simulation's fields left at their
nominal values (``nominal``: what per-simulation storage alone costs) and once with
each task's scaled values (``tasks``: the random bodies' own physics added), each as a
ratio to the shared-model limits (``per_sim_vs_shared``; ≈ 1: no cost).

Navigation2D (20 × 20 × 100, the paper's 2×100 ReLU policy) is timed as a whole
sample call (target ≤ 50 ms).

Usage::

    python benchmarks/sampler_throughput.py            # full sizes (a few minutes)
    python benchmarks/sampler_throughput.py --quick    # small sizes (~ 30 s)
    python benchmarks/sampler_throughput.py --families ant_vel --trained

The last line is one JSON object with every figure; ``batch_limit`` and
``ratio_vs_batch`` per family hold the headline numbers.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
import torch

from maml_rl.agents.policies import GaussianMLPPolicy, Policy, stack_params
from maml_rl.envs.mjbatch import native_batch_available
from maml_rl.evaluation import load_run
from maml_rl.samplers import make_sampler
from maml_rl.seeding import task_streams
from maml_rl.tasks import family_class
from maml_rl.threads import available_cores
from maml_rl.vector import make_task_env

FAMILIES = {
    "halfcheetah_vel": "MetaRL/HalfCheetahVel-v0",
    "ant_vel": "MetaRL/AntVel-v0",
    "halfcheetah_rand_params": "MetaRL/HalfCheetahRandParams-v0",
}
NAV = "MetaRL/Navigation2D-v0"
#: The shipped meta-trained policies (``--trained``), ``<family>.pt``.
CHECKPOINTS = Path(__file__).parent / "results" / "checkpoints"


def _start_states(env: Any, num_sims: int, rng: np.random.Generator) -> np.ndarray:
    nq = env.model.nq
    return env.init_qpos + rng.uniform(-0.1, 0.1, size=(num_sims, nq))


# -- the limits -------------------------------------------------------------------------


def _per_sim_fields(env_id: str, num_sims: int, values: str) -> list[dict[str, np.ndarray]]:
    """Each simulation's model fields (a random-dynamics family), flat: task-scaled
    (``values="tasks"``) or the nominal ones (``"nominal"``)."""
    cls = family_class(env_id)
    nominal = {name: getattr(cls().model, name).reshape(-1) for name in cls.rand_params}
    tasks = cls.sample_tasks(num_sims, np.random.default_rng(1))
    if values == "nominal":
        tasks = [cls.default_task()] * num_sims
    return [
        {name: nominal[name] * scale for name, scale in cls._model_scales(task).items()}
        for task in tasks
    ]


def batch_limit(env_id: str, num_sims: int, horizon: int, threads: int, per_sim: str = "") -> float:
    """Env steps per second of ``mujoco.batch.Batch``, open loop, on ``threads`` threads;
    ``per_sim`` (``"nominal"`` or ``"tasks"``): with per-simulation model fields
    (expand + set_const)."""
    import mujoco.batch

    env = family_class(env_id)()
    model, frame_skip = env.model, env.frame_skip
    rng = np.random.default_rng(0)
    batch = mujoco.batch.Batch(model, num_sims, nthread=threads)
    if per_sim:
        fields = _per_sim_fields(env_id, num_sims, per_sim)
        for name in fields[0]:
            rows = batch.expand(name)
            for k, sim_fields in enumerate(fields):
                rows[k] = sim_fields[name].reshape(rows.shape[1:])
        batch.set_const()
    qpos, ctrl = batch.bind("qpos"), batch.bind("ctrl")
    actions = rng.uniform(-1.0, 1.0, size=(64, num_sims, model.nu))
    batch.reset()
    qpos[:] = _start_states(env, num_sims, rng)
    batch.forward()
    start = time.perf_counter()
    for t in range(horizon):
        ctrl[:] = actions[t % 64]
        batch.step(nstep=frame_skip)
    return num_sims * horizon / (time.perf_counter() - start)


def _loop(
    env_id: str, num_sims: int, horizon: int, barrier: Any, seed: int, per_sim: str = ""
) -> float:
    """Seconds to step ``num_sims`` MjData ``horizon`` times with random controls;
    ``per_sim``: each MjData on its own MjModel copy with the family's scaled fields."""
    env = family_class(env_id)()
    model, frame_skip = env.model, env.frame_skip
    contact = env.uses_contact_forces
    rng = np.random.default_rng(seed)
    datas = [mujoco.MjData(model) for _ in range(num_sims)]
    models = [model] * num_sims
    if per_sim:
        models = [copy.deepcopy(model) for _ in range(num_sims)]
        per_sim_fields = _per_sim_fields(env_id, num_sims, per_sim)
        for m, d, fields in zip(models, datas, per_sim_fields, strict=True):
            for name, values in fields.items():
                getattr(m, name)[...] = values.reshape(getattr(m, name).shape)
            mujoco.mj_setConst(m, d)
    for m, d, q in zip(models, datas, _start_states(env, num_sims, rng), strict=True):
        mujoco.mj_resetData(m, d)
        d.qpos[:] = q
        mujoco.mj_forward(m, d)
    ctrls = [d.ctrl for d in datas]
    actions = rng.uniform(-1.0, 1.0, size=(64, num_sims, model.nu))
    if barrier is not None:
        barrier.wait()
    start = time.perf_counter()
    for t in range(horizon):
        a = actions[t % 64]
        for k in range(num_sims):
            ctrls[k][:] = a[k]
            mujoco.mj_step(models[k], datas[k], nstep=frame_skip)
            if contact:
                mujoco.mj_rnePostConstraint(models[k], datas[k])
    return time.perf_counter() - start


def _loop_worker(args: tuple[str, int, int, Any, int, str]) -> float:
    return _loop(*args)


def loop_limit(env_id: str, num_sims: int, horizon: int, cores: int, per_sim: str = "") -> float:
    """Env steps per second of the Python ``mj_step`` loop on ``cores`` processes."""
    if cores == 1:
        return num_sims * horizon / _loop(env_id, num_sims, horizon, None, 0, per_sim)
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(cores)
        shares = [num_sims * (c + 1) // cores - num_sims * c // cores for c in range(cores)]
        jobs = [(env_id, s, horizon, barrier, c, per_sim) for c, s in enumerate(shares)]
        with ctx.Pool(cores) as pool:
            times = pool.map(_loop_worker, jobs)
    return num_sims * horizon / max(times)


# -- the sampler ---------------------------------------------------------------------------


class SamplerTimer:
    """One sampler setting, opened and warmed up once, timed one whole sample call at a
    time (so that its calls can be interleaved with the limits' measurements)."""

    def __init__(
        self,
        env_id: str,
        tasks: int,
        episodes: int,
        horizon: int,
        backend: str,
        workers: int,
        threads: int | None,
        activation: str = "tanh",
        trained: Policy | None = None,
    ) -> None:
        self.tasks = family_class(env_id).sample_tasks(tasks, np.random.default_rng(0))
        if trained is not None:
            # A meta-trained policy, its θ on every task: the ant walks, the episodes
            # reach the horizon, as in a training's later iterations.
            policy = trained
            self.params = stack_params({k: v.detach() for k, v in policy.params().items()}, tasks)
        else:
            env = family_class(env_id)()
            obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
            torch.manual_seed(0)
            policy = GaussianMLPPolicy(obs_dim, act_dim, (100, 100), activation)
            g = torch.Generator().manual_seed(0)
            self.params = {  # a different θ'_i per task, as after adaptation
                k: v.detach() + 0.05 * torch.randn((tasks, *v.shape), generator=g)
                for k, v in policy.params().items()
            }
        self.episodes = episodes
        self.sampler = make_sampler(
            env_id,
            policy,
            backend=backend,
            num_workers=workers,
            max_episode_steps=horizon,
            num_threads=threads,
        )
        # warm-up: envs built, pages touched
        self.sampler.sample(self.tasks, self.params, episodes, seed=0)

    def time(self, seed: int) -> tuple[float, int]:
        """Seconds and env steps of one sample call."""
        start = time.perf_counter()
        batch = self.sampler.sample(self.tasks, self.params, self.episodes, seed=seed)
        return time.perf_counter() - start, batch.env_steps

    def close(self) -> None:
        self.sampler.close()


class ReplayTimer:
    """The simulator's own limit *for one sample call's workload*: ``mujoco.batch.Batch``
    open loop on the cores used, replaying the call's controls from its start states
    (the envs reset with the call's seeds: the same trajectories, bit for bit), each
    step on the simulations whose episodes were still running — what the simulator
    must do for that call, with nothing else (no policy, rewards, observations, resets
    or ``mj_rnePostConstraint``). The batch limit's random controls make a different
    workload: an ant that walks costs other contact and solver work per step than one
    that flails or lies on its back."""

    def __init__(self, env_id: str, timer: SamplerTimer, cores: int, seed: int = 1) -> None:
        import mujoco.batch

        call = timer.sampler.sample(timer.tasks, timer.params, timer.episodes, seed=seed)
        n, horizon, e = call.mask.shape
        sims = n * e
        env = make_task_env(env_id, sims, horizon)
        seeds = [s for i in range(n) for s in task_streams(seed, i, e, horizon, 1, False)[0]]
        env.set_tasks([task for task in timer.tasks for _ in range(e)])
        first, _ = env.reset(seed=seeds)
        # The call's start states, checked against its first observations.
        if not np.array_equal(
            np.asarray(first, np.float32), call.observations[:, 0].reshape(sims, -1).numpy()
        ):
            raise RuntimeError("the replay's start states are not the sample call's")
        qpos, qvel = env._qpos.copy(), env._qvel.copy()  # type: ignore[attr-defined]
        self.frame_skip = env.frame_skip  # type: ignore[attr-defined]
        env.close()
        model = family_class(env_id)().model
        self.batch = mujoco.batch.Batch(model, sims, nthread=cores)
        self.qpos, self.qvel = qpos, qvel
        self.ctrl = self.batch.bind("ctrl")
        self.actions = call.actions.transpose(0, 1).reshape(horizon, sims, -1).double().numpy()
        live = call.mask.transpose(0, 1).reshape(horizon, sims).numpy() > 0
        self.ids = [None if row.all() else np.flatnonzero(row).astype(np.int32) for row in live]
        self.env_steps = int(live.sum())

    def time(self) -> float:
        """Env steps per second of one replay."""
        batch = self.batch
        batch.reset(stage=0)
        batch.bind("qpos")[:] = self.qpos
        batch.bind("qvel")[:] = self.qvel
        batch.forward()
        start = time.perf_counter()
        for actions, ids in zip(self.actions, self.ids, strict=True):
            if ids is not None and len(ids) == 0:
                break
            self.ctrl[:] = actions
            batch.step(ids, nstep=self.frame_skip)
        return self.env_steps / (time.perf_counter() - start)


class SimulatorClock:
    """Seconds spent inside the simulator (``NativeBatch`` calls) by samplers that run in
    this process (``sync``), while active: how a sample call's time splits between the
    physics and everything else."""

    METHODS = ("step", "forward", "reset", "rne_post_constraint")

    def __init__(self) -> None:
        self.by_method = dict.fromkeys(self.METHODS, 0.0)
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> SimulatorClock:
        from maml_rl.envs.mjbatch import NativeBatch

        for name in self.METHODS:
            method = self._saved[name] = getattr(NativeBatch, name)
            setattr(NativeBatch, name, self._timed(name, method))
        return self

    def _timed(self, name: str, method: Any) -> Any:
        def timed(batch: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(batch, *args, **kwargs)
            finally:
                self.by_method[name] += time.perf_counter() - start

        return timed

    def __exit__(self, *exc: object) -> None:
        from maml_rl.envs.mjbatch import NativeBatch

        for name, method in self._saved.items():
            setattr(NativeBatch, name, method)


def summary(times: list[float], steps: list[int]) -> dict[str, float]:
    """Median and best seconds of the calls, median env steps and steps per second."""
    return {
        "seconds": statistics.median(times),
        "best_seconds": min(times),
        "env_steps": statistics.median(steps),
        "steps_per_s": statistics.median(s / t for s, t in zip(steps, times, strict=True)),
    }


def measure_family(
    name: str,
    env_id: str,
    size: tuple[int, int, int],
    cores: int,
    repeats: int,
    trained: Path | None = None,
) -> dict[str, Any]:
    tasks, episodes, horizon = size
    sims = tasks * episodes
    print(f"{env_id}: {tasks} tasks × {episodes} episodes × {horizon} steps, {cores} cores")
    out: dict[str, Any] = {"tasks": tasks, "episodes": episodes, "horizon": horizon}
    policy = None
    if trained is not None:
        run = load_run(trained)
        if run.config.env.id != env_id:
            raise SystemExit(f"{trained} was trained on {run.config.env.id}, not {env_id}")
        policy = run.policy()
        out["trained"] = {"checkpoint": str(trained), "iteration": run.iteration}
        print(f"  and with the trained policy of {trained} (iteration {run.iteration})")
    native = native_batch_available()
    out["loop_limit"] = loop_limit(env_id, sims, horizon, cores)
    print(f"  loop limit (mj_step loop, {cores} processes): {out['loop_limit']:>9,.0f} steps/s")
    # The batch limit and one call of each sampler setting, in rounds: each round's ratio
    # compares calls made seconds apart, so a machine that speeds up or slows down
    # during the run (other tenants, clocks) moves both sides of it alike.
    settings = [("sync", 1, cores), ("process", cores, 1)]
    policies = {"": None} if policy is None else {"": None, "-trained": policy}
    timers = {
        f"{backend}-{workers}w-{threads}t{suffix}": SamplerTimer(
            env_id, tasks, episodes, horizon, backend, workers, threads, trained=p
        )
        for suffix, p in policies.items()
        for backend, workers, threads in settings
    }
    # Per policy, the open-loop replay of its sync setting's first call (native only).
    replays = (
        {
            suffix: ReplayTimer(env_id, timers[f"sync-1w-{cores}t{suffix}"], cores)
            for suffix in policies
        }
        if native
        else {}
    )
    replay_rates: dict[str, list[float]] = {suffix: [] for suffix in replays}
    limits: list[float] = []
    calls: dict[str, list[tuple[float, int]]] = {key: [] for key in timers}
    # the sync calls' seconds inside the simulator, per NativeBatch method
    by_method: dict[str, list[dict[str, float]]] = {
        key: [] for key in timers if key.startswith("sync")
    }
    try:
        for r in range(repeats):
            if native:
                limits.append(batch_limit(env_id, sims, horizon, cores))
            for suffix, replay in replays.items():
                replay_rates[suffix].append(replay.time())
            for key, timer in timers.items():
                if key in by_method and native:
                    with SimulatorClock() as clock:
                        calls[key].append(timer.time(seed=r + 1))
                    by_method[key].append(clock.by_method)
                else:
                    calls[key].append(timer.time(seed=r + 1))
    finally:
        for timer in timers.values():
            timer.close()
    if native:
        out["batch_limit"] = statistics.median(limits)
        out["batch_limit_rounds"] = limits
        print(
            f"  batch limit (mujoco.batch, {cores} threads, median of {repeats}): "
            f"{out['batch_limit']:>9,.0f} steps/s"
        )
        for suffix, rates in replay_rates.items():
            which = "trained" if suffix else "initial"
            out[f"replay_limit{suffix.replace('-', '_')}"] = statistics.median(rates)
            print(
                f"  replay limit ({which} policy's controls, open loop): "
                f"{statistics.median(rates):>9,.0f} steps/s"
            )
    out["sampler"] = {}
    for key in timers:
        r = summary([t for t, _ in calls[key]], [s for _, s in calls[key]])
        if native:  # the median of the rounds' ratios
            r["ratio_vs_batch"] = statistics.median(
                s / t / limit for (t, s), limit in zip(calls[key], limits, strict=True)
            )
            rates = replay_rates["-trained" if key.endswith("-trained") else ""]
            r["ratio_vs_replay"] = statistics.median(
                s / t / limit for (t, s), limit in zip(calls[key], rates, strict=True)
            )
        out["sampler"][key] = r
        ratios = f"{r['steps_per_s'] / out['loop_limit']:.2f} × loop"
        if native:
            ratios = (
                f"{r['ratio_vs_batch']:.2f} × batch, {r['ratio_vs_replay']:.2f} × replay, " + ratios
            )
        print(
            f"  {key:>16}: {r['steps_per_s']:>9,.0f} steps/s ({r['seconds']:.2f} s per sample; "
            f"{ratios})"
        )
        if by_method.get(key):
            # The physics' own pace in the closed loop against the open-loop limit's
            # (the limit's seconds for the same env steps over the seconds in the
            # simulator), and the seconds outside it: the ratio is their product.
            in_simulator = [sum(split.values()) for split in by_method[key]]
            rounds = list(zip(calls[key], limits, in_simulator, strict=True))
            r["simulator_s"] = statistics.median(sim for _, _, sim in rounds)
            r["outside_simulator_s"] = statistics.median(t - sim for (t, _), _, sim in rounds)
            r["simulator_pace_vs_batch"] = statistics.median(
                s / limit / sim for (_, s), limit, sim in rounds
            )
            r["simulator_s_by_method"] = {
                name: statistics.median(split[name] for split in by_method[key])
                for name in SimulatorClock.METHODS
            }
            methods = ", ".join(
                f"{name} {seconds:.2f} s"
                for name, seconds in r["simulator_s_by_method"].items()
                if seconds >= 0.005
            )
            print(
                f"  {'':>16}  in the simulator {r['simulator_s']:.2f} s "
                f"({r['simulator_pace_vs_batch']:.2f} × the limit's pace; {methods}), "
                f"outside it {r['outside_simulator_s']:.2f} s"
            )
    if family_class(env_id).rand_params:
        # The same limits with every simulation on its own model (random dynamics).
        out["per_sim_models"] = {}
        for values in ("nominal", "tasks"):
            per_sim: dict[str, float] = {}
            if native:
                per_sim["batch_limit"] = batch_limit(env_id, sims, horizon, cores, values)
            per_sim["loop_limit"] = loop_limit(env_id, sims, horizon, cores, values)
            vs_shared = {key: per_sim[key] / out[key] for key in per_sim}
            out["per_sim_models"][values] = {**per_sim, "per_sim_vs_shared": vs_shared}
            text = ", ".join(
                f"{k} {per_sim[k]:,.0f} steps/s ({r:.2f} × shared)" for k, r in vs_shared.items()
            )
            print(f"  per-simulation models, {values} values: {text}")
    initial = {k: r for k, r in out["sampler"].items() if not k.endswith("-trained")}
    best = max(r["steps_per_s"] for r in initial.values())
    out["ratio_vs_loop"] = best / out["loop_limit"]
    if native:
        out["ratio_vs_batch"] = max(r["ratio_vs_batch"] for r in initial.values())
        out["ratio_vs_replay"] = max(r["ratio_vs_replay"] for r in initial.values())
        print(f"  best sampler / batch limit: {out['ratio_vs_batch']:.2f} (target ≥ 0.9)")
        print(f"  best sampler / replay limit: {out['ratio_vs_replay']:.2f}")
        if policy is not None:
            trained_rows = [r for k, r in out["sampler"].items() if k.endswith("-trained")]
            out["ratio_vs_batch_trained"] = max(r["ratio_vs_batch"] for r in trained_rows)
            out["ratio_vs_replay_trained"] = max(r["ratio_vs_replay"] for r in trained_rows)
            print(
                f"  best sampler, trained policy: {out['ratio_vs_batch_trained']:.2f} × batch "
                f"limit, {out['ratio_vs_replay_trained']:.2f} × its replay limit"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per setting")
    parser.add_argument(
        "--size", default=None, help="tasks,episodes,steps (default 40,20,200; --quick 8,5,50)"
    )
    parser.add_argument(
        "--families",
        default=",".join(FAMILIES),
        help=f"comma-separated, from {', '.join(FAMILIES)}",
    )
    parser.add_argument("--cores", type=int, default=None, help="cores used (default: all)")
    parser.add_argument(
        "--trained",
        action="store_true",
        help="also time each family with its shipped meta-trained policy "
        "(benchmarks/results/checkpoints/<family>.pt, where there is one)",
    )
    args = parser.parse_args()

    repeats = args.repeats or (2 if args.quick else 3)
    size_text = args.size or ("8,5,50" if args.quick else "40,20,200")
    size = tuple(int(v) for v in size_text.split(","))
    cores = args.cores or available_cores()
    result: dict[str, Any] = {
        "quick": args.quick,
        "cores": cores,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "mujoco": mujoco.__version__,
        "native_batch": native_batch_available(),
    }
    for name in args.families.split(","):
        shipped = CHECKPOINTS / f"{name}.pt"
        trained = shipped if args.trained and shipped.is_file() else None
        result[name] = measure_family(name, FAMILIES[name], size, cores, repeats, trained)  # type: ignore[arg-type]
    result["batch_limit"] = {n: result[n].get("batch_limit") for n in args.families.split(",")}
    result["ratio_vs_batch"] = {
        n: result[n].get("ratio_vs_batch") for n in args.families.split(",")
    }

    print("Navigation2D: 20 tasks × 20 episodes × 100 steps, sync")
    timer = SamplerTimer(NAV, 20, 20, 100, "sync", 1, None, activation="relu")
    try:
        calls = [timer.time(seed=r + 1) for r in range(max(repeats, 5))]
    finally:
        timer.close()
    r = summary([t for t, _ in calls], [s for _, s in calls])
    result["navigation2d"] = {"sync_sample_ms": 1e3 * r["seconds"], **r}
    print(f"  {1e3 * r['seconds']:.1f} ms per sample (target ≤ 50 ms)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
