"""The sampler's invariants, on real envs, real worker processes and a real Ray runtime.

* a batch is the episodes of the registered env (replayed step by step), with
  early-terminating episodes masked and zero-padded;
* lockstep sampling equals playing every episode on its own;
* the same seed gives the same batch bit for bit on every backend, worker count
  (including more workers than tasks) and thread count of the MuJoCo stepper,
  different seeds different batches;
* the generic vector env (families without ``make_batched``) equals the native one;
* a killed worker is a clear ``RuntimeError``, not a hang; bad input a one-line
  ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Independent, Normal

from maml_rl.agents.policies import CategoricalMLPPolicy, GaussianMLPPolicy, Policy
from maml_rl.batch import EpisodeBatch
from maml_rl.envs.mjbatch import native_batch_available
from maml_rl.envs.navigation import Navigation2DEnv
from maml_rl.samplers import (
    BatchLayout,
    ProcessSampler,
    RaySampler,
    RolloutEngine,
    RolloutSpec,
    Sampler,
    Shard,
    SyncSampler,
    make_sampler,
    partition,
)
from maml_rl.seeding import task_streams
from maml_rl.tasks import Task, family_class, register_family, unwrap_family
from maml_rl.vector import TaskVectorEnv, make_task_env

NAV = "MetaRL/Navigation2D-v0"
CHEETAH = "MetaRL/HalfCheetahVel-v0"
ANT = "MetaRL/AntVel-v0"
MDP = "MetaRL/TabularMDP-v0"


class Navigation2DNoBatch(Navigation2DEnv):
    """Navigation2D without its native batched version: forces the generic vector env."""

    make_batched = None  # type: ignore[assignment]


NO_BATCH = "TestMetaRL/Navigation2DNoBatch-v0"
register_family(NO_BATCH, Navigation2DNoBatch)


@dataclasses.dataclass(frozen=True)
class Case:
    """A small sampling problem: family, horizon, tasks × episodes, policy."""

    env_id: str
    horizon: int
    num_tasks: int
    episodes: int
    make_policy: Callable[[], Policy]

    def policy(self) -> Policy:
        torch.manual_seed(0)
        return self.make_policy()

    def tasks(self, n: int | None = None) -> list[Task]:
        rng = np.random.default_rng(1)
        return family_class(self.env_id).sample_tasks(n or self.num_tasks, rng)


CASES = {
    # Hidden sizes as in the papers where it matters: the kernels (and their
    # rounding) depend on the matrix shapes.
    "nav": Case(NAV, 30, 3, 4, lambda: GaussianMLPPolicy(2, 2, (100, 100), "relu")),
    "cheetah": Case(CHEETAH, 12, 3, 3, lambda: GaussianMLPPolicy(17, 6, (100, 100), "tanh")),
    # A wide initial std makes the ant fall (terminate) within a few dozen steps.
    "ant": Case(ANT, 40, 3, 3, lambda: GaussianMLPPolicy(105, 8, (64, 64), init_std=2.0)),
    "mdp": Case(MDP, 10, 3, 5, lambda: CategoricalMLPPolicy(10, 5, (32, 32), "tanh")),
}


def per_task_params(policy: Policy, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Stacked parameters ``[n, ...]``: θ plus a different perturbation per task."""
    g = torch.Generator().manual_seed(seed)
    return {
        name: p.detach() + 0.2 * torch.randn((n, *p.shape), generator=g)
        for name, p in policy.params().items()
    }


@pytest.fixture(scope="module")
def reference() -> Iterator[Callable[[str, int], EpisodeBatch]]:
    """The sync batch of each case (per-task params, seed 7, envs stepped on one
    thread), computed once."""
    cache: dict[tuple[str, int], EpisodeBatch] = {}
    samplers: dict[str, Sampler] = {}

    def get(name: str, num_tasks: int = 0) -> EpisodeBatch:
        case = CASES[name]
        n = num_tasks or case.num_tasks
        if (name, n) not in cache:
            policy = case.policy()
            if name not in samplers:
                samplers[name] = make_sampler(
                    case.env_id, policy, max_episode_steps=case.horizon, num_threads=1
                )
            params = per_task_params(policy, n)
            cache[name, n] = samplers[name].sample(case.tasks(n), params, case.episodes, 7)
        return cache[name, n]

    yield get
    for s in samplers.values():
        s.close()


def assert_same(a: EpisodeBatch, b: EpisodeBatch) -> None:
    for f in dataclasses.fields(EpisodeBatch):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and x.shape == y.shape, f.name
            assert torch.equal(x, y), f"{f.name} differs (max |Δ| {(x - y).abs().max()})"
    assert a.tasks == b.tasks


# -- what a batch contains ------------------------------------------------------------


@pytest.mark.parametrize("name", ["nav", "ant", "mdp"])
def test_batch_is_the_registered_env_replayed(name: str, reference) -> None:
    """Replaying each episode's actions in ``gymnasium.make(env_id)``, reset with that
    episode's seed, reproduces its observations, rewards and end flags bitwise."""
    case = CASES[name]
    batch = reference(name)
    n, t_max, e_max = batch.rewards.shape
    for i in range(n):
        seeds, _ = task_streams(7, i, e_max, t_max, 1, False)
        for e in range(e_max):
            env = gym.make(case.env_id, max_episode_steps=case.horizon)
            unwrap_family(env).set_task(batch.tasks[i])
            obs, _ = env.reset(seed=seeds[e])
            length = int(batch.lengths[i, e])
            for t in range(length):
                assert np.array_equal(np.float32(obs), batch.observations[i, t, e].numpy())
                action = batch.actions[i, t, e]
                action = action.item() if case.env_id == MDP else action.numpy()
                obs, reward, term, trunc, _ = env.step(action)
                assert np.float32(reward) == batch.rewards[i, t, e].item()
                assert bool(term) == batch.terminated[i, t, e].item()
                assert bool(trunc) == batch.truncated[i, t, e].item()
            assert term or trunc, "the episode must end where the batch says"
            assert np.array_equal(np.float32(obs), batch.final_observations[i, e].numpy())


def test_early_termination_is_masked_and_padded_with_zeros(reference) -> None:
    batch = reference("ant")
    n, horizon, e_max = batch.rewards.shape
    lengths = batch.lengths
    assert (lengths < horizon).any(), "the test needs episodes that terminate early"
    for i in range(n):
        for e in range(e_max):
            length = int(lengths[i, e])
            mask = batch.mask[i, :, e]
            assert torch.equal(mask[:length], torch.ones(length))
            assert torch.equal(mask[length:], torch.zeros(horizon - length))
            term, trunc = batch.terminated[i, :, e], batch.truncated[i, :, e]
            # End flags only on the last step: terminated if the ant fell before T.
            assert (term | trunc)[length - 1] and not (term | trunc)[: length - 1].any()
            if length < horizon:
                assert term[length - 1] and not trunc[length - 1]
    padding = batch.mask == 0
    for field in ("rewards", "log_probs", "terminated", "truncated"):
        assert not getattr(batch, field)[padding].any(), field
    assert not batch.observations[padding].any() and not batch.actions[padding].any()


def test_log_probs_are_those_of_the_sampling_policy(reference) -> None:
    for name in ("cheetah", "mdp"):
        case = CASES[name]
        batch = reference(name)
        policy = case.policy()
        params = per_task_params(policy, batch.num_tasks)
        n, t, e = batch.rewards.shape
        with torch.no_grad():
            dist = policy(batch.observations.reshape(n, t * e, -1), params)
            actions = batch.actions.reshape(n, t * e, *batch.actions.shape[3:])
            expected = dist.log_prob(actions).reshape(n, t, e) * batch.mask
        torch.testing.assert_close(batch.log_probs, expected, rtol=1e-5, atol=1e-4)
        assert batch.log_probs.dtype == torch.float32 and not batch.log_probs.requires_grad


class ShiftedMeanPolicy(GaussianMLPPolicy):
    """Its own forward pass (the MLP's mean + 1): the sampler must sample this
    distribution, not the MLP's fused rollout."""

    def forward(
        self, obs: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None
    ) -> Independent:
        dist = super().forward(obs, params)
        return Independent(Normal(dist.mean + 1.0, dist.stddev, validate_args=False), 1)


def test_a_policy_with_its_own_forward_pass_is_sampled_from_its_distribution() -> None:
    case = CASES["nav"]
    torch.manual_seed(0)
    policy = ShiftedMeanPolicy(2, 2, (16,), init_std=0.3)
    params = per_task_params(policy, len(case.tasks()))
    with make_sampler(NAV, policy, max_episode_steps=case.horizon) as sampler:
        batch = sampler.sample(case.tasks(), params, case.episodes, seed=0)
    n, t, e = batch.rewards.shape
    with torch.no_grad():
        dist = policy(batch.observations.reshape(n, t * e, -1), params)
        expected = dist.log_prob(batch.actions.reshape(n, t * e, -1)).reshape(n, t, e)
    torch.testing.assert_close(batch.log_probs, expected * batch.mask, rtol=1e-5, atol=1e-4)
    # The shift is in the actions: their mean offset from the MLP's mean is ≈ 1.
    with torch.no_grad():
        base = GaussianMLPPolicy.forward(policy, batch.observations, params).mean
    offset = ((batch.actions - base) * batch.mask[..., None]).sum() / (2 * batch.mask.sum())
    assert abs(offset.item() - 1.0) < 0.05


def test_noise_samples_the_policy_distribution() -> None:
    """Gaussian: (a - mean) / std is standard normal; discrete: Gumbel-max picks action
    k with probability softmax(logits)_k (fixed seeds: deterministic, not flaky)."""
    _, noise = task_streams(0, 0, 200, 100, 6, discrete=False)
    z = noise.reshape(-1, 6).astype(np.float64)
    assert abs(z.mean()) < 0.02 and abs(z.var() - 1) < 0.02  # 120k draws: σ ≈ 0.003
    _, gumbel = task_streams(0, 0, 200, 100, 4, discrete=True)
    logits = np.log(np.array([0.1, 0.2, 0.3, 0.4]))
    freq = np.bincount((gumbel.reshape(-1, 4) + logits).argmax(-1), minlength=4) / 20_000
    assert np.abs(freq - np.exp(logits)).max() < 0.015  # σ ≤ 0.0035


def test_params_forms_give_the_same_batch() -> None:
    case = CASES["nav"]
    policy = case.policy()
    tasks = case.tasks()
    with make_sampler(NAV, policy, max_episode_steps=case.horizon) as sampler:
        shared = sampler.sample(tasks, policy.params(), 3, seed=1)
        stacked = {k: v.detach().expand(len(tasks), *v.shape) for k, v in policy.params().items()}
        assert_same(shared, sampler.sample(tasks, stacked, 3, seed=1))
        assert_same(shared, sampler.sample(tasks, [policy.params()] * len(tasks), 3, seed=1))
        assert not shared.log_probs.requires_grad


def test_lockstep_equals_every_episode_alone(reference) -> None:
    """The N × E lockstep batch equals N × E separate one-episode rollouts."""
    case = CASES["ant"]
    batch = reference("ant")
    policy = case.policy()
    params = per_task_params(policy, batch.num_tasks)
    spec = RolloutSpec.create(ANT, policy, None, case.horizon)
    request = spec.request(batch.tasks, params, batch.episodes_per_task, seed=7)
    engine = RolloutEngine(spec)
    alone = {k: torch.zeros_like(v).numpy() for k, v in _arrays(batch).items()}
    for i in range(batch.num_tasks):
        for e in range(batch.episodes_per_task):
            shard = Shard(i, i + 1, e, e + 1)
            engine.run(shard, request, BatchLayout.block(alone, shard))
    for name, expected in _arrays(batch).items():
        assert np.array_equal(alone[name], expected.numpy()), name
    engine.close()


def _arrays(batch: EpisodeBatch) -> dict[str, torch.Tensor]:
    return {
        f.name: getattr(batch, f.name)
        for f in dataclasses.fields(batch)
        if isinstance(getattr(batch, f.name), torch.Tensor)
    }


def test_seeds_and_tasks_matter(reference) -> None:
    case = CASES["nav"]
    policy = case.policy()
    tasks = case.tasks()
    params = per_task_params(policy, len(tasks))
    with make_sampler(NAV, policy, max_episode_steps=case.horizon) as sampler:
        a = sampler.sample(tasks, params, 4, seed=7)
        assert_same(a, reference("nav"))
        assert_same(a, sampler.sample(tasks, params, 4, seed=7))
        b = sampler.sample(tasks, params, 4, seed=8)
        assert not torch.equal(a.actions, b.actions)
        # Same seed, more episodes: the first episodes keep their seeds and noise
        # (prefix-stable). Not bit for bit: the policy's matmul over 6 episodes may
        # use another BLAS kernel than over 4, which rounds differently.
        c = sampler.sample(tasks, params, 6, seed=7)
        torch.testing.assert_close(c.actions[:, :, :4], a.actions, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(c.actions[:, :, 4:], a.actions[:, :, :2], atol=1e-3)


def test_sync_restores_the_torch_thread_count() -> None:
    case = CASES["nav"]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with make_sampler(NAV, case.policy(), max_episode_steps=5) as sampler:
            sampler.sample(case.tasks(), case.policy().params(), 2, seed=0)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


class ThreadRecordingPolicy(GaussianMLPPolicy):
    """Records ``torch.get_num_threads()`` at every forward and every step of the
    sampler's fused actor (in a class-level list: the sampler runs a copy of the policy)."""

    seen: ClassVar[list[int]] = []

    def forward(
        self, obs: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None
    ) -> Independent:
        self.seen.append(torch.get_num_threads())
        return super().forward(obs, params)

    def rollout_actor(self, params: Mapping[str, torch.Tensor], noise: torch.Tensor) -> Any:
        fused = super().rollout_actor(params, noise)

        def act(obs: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
            self.seen.append(torch.get_num_threads())
            return fused(obs, t)

        return act


def test_sample_runs_on_one_thread_and_restores_the_count() -> None:
    """The sampler owns the thread policy: the rollout loop runs on one torch thread
    whatever the caller set, and the caller's count is back after the call, also
    when it raises. Every backend inherits this ``sample``."""
    case = CASES["nav"]
    torch.manual_seed(0)
    policy = ThreadRecordingPolicy(2, 2, (8,))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with make_sampler(NAV, policy, max_episode_steps=5) as sampler:
            ThreadRecordingPolicy.seen.clear()
            sampler.sample(case.tasks(), policy.params(), 2, seed=0)
            assert ThreadRecordingPolicy.seen, "the policy ran in this process"
            assert set(ThreadRecordingPolicy.seen) == {1}
            assert torch.get_num_threads() == 2
            with pytest.raises(ValueError, match="seed"):
                sampler.sample(case.tasks(), policy.params(), 2, seed=-1)
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    for backend in (SyncSampler, ProcessSampler, RaySampler):
        assert backend.sample is Sampler.sample, f"{backend.__name__} overrides sample()"


# -- the same batch everywhere --------------------------------------------------------


@pytest.mark.parametrize("name", ["cheetah", "ant"])
def test_sync_batch_does_not_depend_on_the_thread_count(name: str, reference) -> None:
    """MuJoCo's batched simulator on 2 threads gives the 1-thread batch."""
    case = CASES[name]
    policy = case.policy()
    params = per_task_params(policy, case.num_tasks)
    with make_sampler(
        case.env_id, policy, max_episode_steps=case.horizon, num_threads=2
    ) as sampler:
        assert torch.is_grad_enabled()
        assert_same(sampler.sample(case.tasks(), params, case.episodes, 7), reference(name))
        assert torch.is_grad_enabled()
        env = sampler._engine._env  # type: ignore[attr-defined]
        if native_batch_available():
            assert (env.stepper, env.num_threads) == ("native", 2)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "threads"),
    [("nav", None), ("cheetah", None), ("cheetah", 2), ("ant", None), ("ant", 2), ("mdp", None)],
)
def test_process_backend_is_bit_identical(name: str, threads: int | None, reference) -> None:
    """2 workers (each stepping its envs on 1 or 2 threads): whole tasks split 1 + 2
    (a one-task shard), then more workers than tasks (one task's episodes split over
    both), equal the sync batches."""
    case = CASES[name]
    policy = case.policy()
    with make_sampler(
        case.env_id,
        policy,
        backend="process",
        num_workers=2,
        max_episode_steps=case.horizon,
        num_threads=threads,
    ) as sampler:
        for n in (case.num_tasks, 1):
            params = per_task_params(policy, n)
            batch = sampler.sample(case.tasks(n), params, case.episodes, 7)
            assert_same(batch, reference(name, n))


@pytest.mark.slow
def test_process_backend_one_worker_and_generic_env(reference) -> None:
    """One worker equals sync (and leaving the context stops it); a family without
    make_batched (generic vector env, in workers that must import the family's
    module) equals the native Navigation2D."""
    case = CASES["nav"]
    policy = case.policy()
    params = per_task_params(policy, case.num_tasks)
    with make_sampler(
        NAV, policy, backend="process", num_workers=1, max_episode_steps=case.horizon
    ) as sampler:
        assert_same(sampler.sample(case.tasks(), params, case.episodes, 7), reference("nav"))
        workers = list(sampler._pool.processes)  # type: ignore[attr-defined]
    assert sampler.closed and not any(p.is_alive() for p in workers), "close() stops them"
    with make_sampler(
        NO_BATCH, policy, backend="process", num_workers=2, max_episode_steps=case.horizon
    ) as sampler:
        assert isinstance(make_task_env(NO_BATCH, 2, 5), TaskVectorEnv)
        assert_same(sampler.sample(case.tasks(), params, case.episodes, 7), reference("nav"))


def test_generic_vector_env_equals_native_batched_env() -> None:
    tasks = family_class(ANT).sample_tasks(3, np.random.default_rng(0))
    native = family_class(ANT).make_batched(3, max_episode_steps=30)
    generic = TaskVectorEnv(ANT, 3, max_episode_steps=30)
    rng = np.random.default_rng(0)
    for env in (native, generic):
        env.set_tasks(tasks)
    o1, _ = native.reset(seed=[1, 2, 3])
    o2, _ = generic.reset(seed=[1, 2, 3])
    assert np.array_equal(o1, o2)
    running = np.ones(3, dtype=bool)
    for _ in range(30):
        actions = rng.uniform(-2, 2, size=(3, 8))
        s1, s2 = native.step(actions), generic.step(actions)
        for x, y in zip(s1[:4], s2[:4], strict=True):
            assert np.array_equal(np.asarray(x)[running], np.asarray(y)[running])
        running &= ~(s1[2] | s1[3])
        if not running.any():
            break


def test_partition_covers_every_episode_once() -> None:
    for n, e, w in [(40, 20, 2), (40, 20, 3), (5, 3, 7), (2, 5, 4), (1, 1, 8), (3, 2, 100)]:
        shards = partition(n, e, w)
        assert len(shards) == min(w, n * e)
        seen = [
            (i, j)
            for s in shards
            for i in range(s.task_start, s.task_stop)
            for j in range(s.episode_start, s.episode_stop)
        ]
        assert sorted(seen) == [(i, j) for i in range(n) for j in range(e)]
        if w <= n:  # whole tasks, balanced
            assert all(s.num_episodes == e for s in shards)
            assert max(s.num_tasks for s in shards) - min(s.num_tasks for s in shards) <= 1


# -- failures ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_killed_worker_is_a_clear_error_not_a_hang() -> None:
    case = CASES["nav"]
    policy = case.policy()
    sampler = make_sampler(NAV, policy, backend="process", num_workers=2, max_episode_steps=10)
    tasks = case.tasks()
    sampler.sample(tasks, policy.params(), 2, seed=0)
    victim = sampler._pool.processes[1]  # type: ignore[attr-defined]
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(timeout=10)
    with pytest.raises(
        RuntimeError, match=r"worker 1 .* died while sampling \(killed by SIGKILL\)"
    ):
        sampler.sample(tasks, policy.params(), 2, seed=0)
    assert sampler.closed
    assert not any(p.is_alive() for p in sampler._pool.processes)  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="closed"):
        sampler.sample(tasks, policy.params(), 2, seed=0)
    sampler.close()  # idempotent


def _one_line_value_error(fn: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        fn()
    assert "\n" not in str(info.value)


def test_bad_arguments_are_one_line_value_errors() -> None:
    case = CASES["nav"]
    policy = case.policy()
    tasks = case.tasks()
    n = len(tasks)
    _one_line_value_error(
        lambda: make_sampler(NAV, policy, backend="threads"), "unknown sampler backend 'threads'"
    )
    _one_line_value_error(
        lambda: make_sampler(NAV, policy, num_workers=0),
        "num_workers must be an integer ≥ 1, got 0",
    )
    _one_line_value_error(lambda: make_sampler(NAV, policy, num_workers=True), "num_workers")
    _one_line_value_error(
        lambda: make_sampler(NAV, policy, num_threads=0),
        "num_threads must be an integer ≥ 1 or None, got 0",
    )
    _one_line_value_error(
        lambda: make_sampler(NAV, policy, ray_address="auto"), "only used by backend='ray'"
    )
    _one_line_value_error(
        lambda: make_sampler("MetaRL/Navigation2d-v0", policy),
        "did you mean 'MetaRL/Navigation2D-v0'",
    )
    _one_line_value_error(
        lambda: make_sampler(NAV, policy, max_episode_steps=0), "max_episode_steps"
    )
    _one_line_value_error(
        lambda: make_sampler(CHEETAH, policy), "cannot act in MetaRL/HalfCheetahVel-v0"
    )
    _one_line_value_error(lambda: make_sampler(MDP, GaussianMLPPolicy(10, 5)), "Categorical")
    with make_sampler(NAV, policy, max_episode_steps=5) as sampler:
        theta = policy.params()
        stacked = per_task_params(policy, n)
        _one_line_value_error(
            lambda: sampler.sample(tasks, theta, 0, seed=0),
            "episodes_per_task must be an integer ≥ 1, got 0",
        )
        _one_line_value_error(
            lambda: sampler.sample(tasks, theta, 2, seed=-1), "seed must be an integer ≥ 0"
        )
        _one_line_value_error(lambda: sampler.sample([], theta, 2, seed=0), "tasks is empty")
        cheetah_tasks = family_class(CHEETAH).sample_tasks(n, np.random.default_rng(0))
        _one_line_value_error(
            lambda: sampler.sample(cheetah_tasks, theta, 2, seed=0), "another family"
        )
        wrong_count = per_task_params(policy, n + 1)
        _one_line_value_error(
            lambda: sampler.sample(tasks, wrong_count, 2, seed=0),
            rf"one row per task, {n} tasks\), got \({n + 1}, ",
        )
        _one_line_value_error(
            lambda: sampler.sample(tasks, [theta] * (n - 1), 2, seed=0),
            f"one dict per task \\({n}\\), got {n - 1}",
        )
        missing = {k: v for k, v in theta.items() if k != "log_std"}
        _one_line_value_error(
            lambda: sampler.sample(tasks, missing, 2, seed=0), r"missing \['log_std'\]"
        )
        extra = {**stacked, "bogus": torch.zeros(1)}
        _one_line_value_error(
            lambda: sampler.sample(tasks, extra, 2, seed=0), r"unexpected \['bogus'\]"
        )
        mixed = {**stacked, "log_std": theta["log_std"]}
        _one_line_value_error(
            lambda: sampler.sample(tasks, mixed, 2, seed=0), "mixes shared and per-task"
        )


def test_missing_ray_is_a_one_line_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    with pytest.raises(ImportError, match=r"pip install 'maml-rl\[ray\]'") as info:
        make_sampler(NAV, CASES["nav"].policy(), backend="ray")
    assert "\n" not in str(info.value)


# -- Ray --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_anchor() -> Iterator[Sampler]:
    """A Ray sampler that starts (and at the end stops) the local runtime the
    other Ray samplers of this module share."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'maml-rl[ray]')")
    case = CASES["nav"]
    sampler = make_sampler(
        NAV, case.policy(), backend="ray", num_workers=1, max_episode_steps=case.horizon
    )
    yield sampler
    sampler.close()
    assert not ray.is_initialized(), "the last sampler on our runtime shuts it down"


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("name", ["nav", "ant"])
def test_ray_backend_is_bit_identical(name: str, reference, ray_anchor: Sampler) -> None:
    case = CASES[name]
    policy = case.policy()
    params = per_task_params(policy, case.num_tasks)
    if name == "nav":  # the anchor: one actor
        assert_same(ray_anchor.sample(case.tasks(), params, case.episodes, 7), reference(name))
    with make_sampler(
        case.env_id, policy, backend="ray", num_workers=2, max_episode_steps=case.horizon
    ) as sampler:
        for n in (case.num_tasks, 1):
            batch = sampler.sample(case.tasks(n), per_task_params(policy, n), case.episodes, 7)
            assert_same(batch, reference(name, n))


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(120)
def test_ray_killed_worker_is_a_clear_error(ray_anchor: Sampler) -> None:
    case = CASES["nav"]
    policy = case.policy()
    sampler = make_sampler(NAV, policy, backend="ray", num_workers=2, max_episode_steps=10)
    os.kill(sampler.worker_pids()[0], signal.SIGKILL)  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="Ray sampler worker died"):
        sampler.sample(case.tasks(), policy.params(), 2, seed=0)
    assert sampler.closed
    assert ray_anchor.sample(case.tasks(), policy.params(), 2, seed=0).num_tasks == 3
