"""The MAML paper's baselines for fast adaptation, and the pieces they need.

:mod:`maml_rl.evaluation` compares a meta-trained policy, on held-out tasks, with

* **random**: a freshly initialised policy, adapted with the same policy-gradient
  steps as the meta-trained one;
* **pretrained**: one policy trained by plain TRPO on the training tasks (resampled
  every iteration, no adaptation in the loop), then adapted the same way;
* **oracle**: a policy that also *observes* the task (its fields appended to the
  observation, :class:`TaskObservation`), trained like the pretrained one; it
  shows what knowing the task is worth;
* **sb3_ppo**: Stable-Baselines3 PPO trained from scratch on each held-out task
  with the env-step budget the adaptation used (and multiples of it): how much
  standard RL it takes to match a few adaptation steps.

This module holds the task-observing env (a Gymnasium wrapper, plus a registered
"oracle" family so the sampler can run it natively batched on every backend), the
plain multi-task TRPO learner, and the SB3 runner. The evaluation protocol itself
(tasks, seeds, budgets, statistics) lives in :mod:`maml_rl.evaluation`.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch.distributions import kl_divergence

from maml_rl.agents.maml import TaskSamples, detach_distribution
from maml_rl.agents.policies import Policy
from maml_rl.batch import EpisodeBatch
from maml_rl.optim import trust_region_step
from maml_rl.tasks import Task, TaskFamily, family_class, register_family, unwrap_family
from maml_rl.vector import BatchedTaskEnv, make_task_env

__all__ = [
    "BatchedTaskObservation",
    "MultiTaskTRPO",
    "SB3Result",
    "TaskObservation",
    "oracle_env_id",
    "sb3_ppo_on_task",
    "task_dim",
    "task_vector",
]

#: Namespace suffix of the oracle families: ``MetaRL/Navigation2D-v0`` is observed with
#: its task as ``MetaRLOracle/Navigation2D-v0``.
ORACLE_SUFFIX = "Oracle"


# -- the task as an observation ---------------------------------------------------------


def task_vector(task: Task) -> np.ndarray:
    """A task's fields as one flat float64 vector, in field order (tuples flattened)."""
    parts: list[float] = []
    for f in dataclasses.fields(task):
        value = getattr(task, f.name)
        parts.extend(value if isinstance(value, tuple) else (value,))
    return np.asarray(parts, dtype=np.float64)


def task_dim(task_cls: type[Task]) -> int:
    """Length of :func:`task_vector` for tasks of ``task_cls``."""
    return sum(task_cls.shapes.get(f.name, 1) for f in dataclasses.fields(task_cls))


def _task_bounds(task_cls: type[Task]) -> tuple[np.ndarray, np.ndarray]:
    """Per-component bounds of :func:`task_vector` (±inf where the task declares none)."""
    low: list[float] = []
    high: list[float] = []
    for f in dataclasses.fields(task_cls):
        n = task_cls.shapes.get(f.name, 1)
        if f.name in task_cls.bounds:
            lo, hi = task_cls.bounds[f.name]
        elif f.name in task_cls.choices:
            lo, hi = min(task_cls.choices[f.name]), max(task_cls.choices[f.name])
        else:
            lo, hi = -math.inf, math.inf
        low += [lo] * n
        high += [hi] * n
    return np.asarray(low), np.asarray(high)


def _augmented_space(space: gym.Space, task_cls: type[Task]) -> gym.spaces.Box:
    if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
        raise ValueError(f"the oracle appends the task to a flat Box observation, got {space}")
    low, high = _task_bounds(task_cls)
    return gym.spaces.Box(
        np.concatenate([space.low, low]).astype(space.dtype),
        np.concatenate([space.high, high]).astype(space.dtype),
        dtype=space.dtype,
    )


class TaskObservation(gym.ObservationWrapper):
    """Appends the current task's fields (:func:`task_vector`) to the observation.

    Wraps any task-family env; the observation space grows by
    :func:`task_dim` components, bounded where the task's fields are. With it, a
    policy no longer has to infer the task from rewards: the oracle baseline.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.family = unwrap_family(env)
        self._task_cls: type[Task] = type(self.family).task_cls
        self.observation_space = _augmented_space(env.observation_space, self._task_cls)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        dtype = self.observation_space.dtype
        return np.concatenate([observation, task_vector(self.family.task)]).astype(dtype)


class BatchedTaskObservation(BatchedTaskEnv):
    """The batched twin of :class:`TaskObservation`: env ``k`` observes ``tasks[k]``."""

    def __init__(self, base: BatchedTaskEnv) -> None:
        super().__init__(base.num_envs, base.max_episode_steps)
        self.base = base
        self.task_cls = base.task_cls
        self.single_action_space = base.single_action_space
        self.single_observation_space = _augmented_space(
            base.single_observation_space, self.task_cls
        )
        self.action_space = base.action_space
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, self.num_envs
        )
        self._features = np.zeros((self.num_envs, task_dim(self.task_cls)))

    def _apply_tasks(self, tasks: list[Task]) -> None:
        self.base.set_tasks(tasks)
        self._features = np.stack([task_vector(t) for t in tasks])

    def _augment(self, obs: np.ndarray) -> np.ndarray:
        dtype = self.single_observation_space.dtype
        return np.concatenate([obs, self._features], axis=1).astype(dtype)

    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.base.reset(seed=seed, options=options)
        return self._augment(obs), info

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.base.step(actions)
        return self._augment(obs), reward, terminated, truncated, info

    def close(self, **kwargs: Any) -> None:
        self.base.close()


class _OracleFamily(TaskFamily, gym.Env):
    """Base of the generated oracle families: the base family, observing its task.

    A registered family in its own right (so the sampler, its workers and Ray actors
    build it by id like any other); the dynamics, rewards, tasks and seeding are
    exactly the base family's. Subclasses are generated by :func:`oracle_env_id`.
    """

    base_id: ClassVar[str]

    def __init__(self, **kwargs: Any) -> None:
        base_cls = family_class(self.base_id)
        self._base = base_cls(**{**gym.spec(self.base_id).kwargs, **kwargs})
        self._wrapped = TaskObservation(self._base)
        self.observation_space = self._wrapped.observation_space
        self.action_space = self._base.action_space
        self._task = self._base.task

    # All randomness is the base env's: expose its generator as this env's own, so
    # seeding and Gymnasium's checks see one generator.
    @property
    def _np_random(self) -> np.random.Generator | None:
        return self._base._np_random

    @_np_random.setter
    def _np_random(self, value: np.random.Generator | None) -> None:
        self._base._np_random = value

    @property
    def _np_random_seed(self) -> int | None:
        return self._base._np_random_seed

    @_np_random_seed.setter
    def _np_random_seed(self, value: int | None) -> None:
        self._base._np_random_seed = value

    @classmethod
    def sample_tasks(cls, n: int, rng: np.random.Generator) -> list[Task]:
        base: Any = family_class(cls.base_id)
        return base.sample_tasks(n, rng)

    def _apply_task(self, task: Task) -> None:
        self._base.set_task(task)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        return self._wrapped.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        return self._wrapped.step(action)  # type: ignore[return-value]

    def close(self) -> None:
        self._base.close()

    @classmethod
    def make_batched(
        cls, num_envs: int, max_episode_steps: int | None = None, **kwargs: Any
    ) -> BatchedTaskObservation:
        """The base family batched (natively where it can be), observing its tasks."""
        return BatchedTaskObservation(
            make_task_env(cls.base_id, num_envs, max_episode_steps, kwargs)
        )


_CLASS_PREFIX = "_Oracle_"


def _oracle_class(base_id: str) -> type:
    """The oracle family class of ``base_id`` (created once per process).

    Its name encodes ``base_id`` and the module of the base family, and this module
    resolves such names on demand (:func:`__getattr__`), so the class pickles *by
    reference* into fresh sampler worker processes and Ray actors: they import the
    base family's module (which registers it) and recreate the class from the name.
    """
    base_cls = family_class(base_id)
    name = _CLASS_PREFIX + f"{base_id}|{base_cls.__module__}".encode().hex()
    cls = globals().get(name)
    if cls is None:
        cls = type(
            name,
            (_OracleFamily,),
            {
                "__module__": __name__,
                "__qualname__": name,
                "__doc__": f"{base_id} with its task appended to the observation (oracle).",
                "base_id": base_id,
                "task_cls": base_cls.task_cls,  # type: ignore[attr-defined]
                "horizon": base_cls.horizon,  # type: ignore[attr-defined]
                "task_distribution": base_cls.task_distribution,  # type: ignore[attr-defined]
            },
        )
        globals()[name] = cls
    return cls


def __getattr__(name: str) -> Any:
    """Recreate a generated oracle class when a worker unpickles it by name."""
    if name.startswith(_CLASS_PREFIX):
        try:
            base_id, module = bytes.fromhex(name[len(_CLASS_PREFIX) :]).decode().split("|")
        except ValueError:
            pass
        else:
            importlib.import_module(module)  # registers the base family
            return _oracle_class(base_id)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def oracle_env_id(base_id: str) -> str:
    """Register (once) and return the oracle family of a registered task family.

    ``MetaRL/Navigation2D-v0`` → ``MetaRLOracle/Navigation2D-v0``: same dynamics,
    rewards, tasks and time limit, with the task's fields appended to the observation.
    """
    ns, name, version = gym.envs.registration.parse_env_id(base_id)
    family_class(base_id)  # a clear error (with a suggestion) for an unknown id
    oracle_id = f"{ns}{ORACLE_SUFFIX}/{name}-v{version}"
    if oracle_id not in gym.registry:
        register_family(
            oracle_id,
            _oracle_class(base_id),
            max_episode_steps=gym.spec(base_id).max_episode_steps,
        )
    return oracle_id


# -- plain (non-meta) TRPO over many tasks ------------------------------------------------


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


class MultiTaskTRPO:
    """TRPO for one policy shared by many tasks, without adaptation.

    The pretrained and oracle baselines: every iteration the caller samples fresh
    training tasks, plays the *shared* parameters ``θ`` on all of them, and calls
    :meth:`step`. The surrogate and the KL are averaged over tasks exactly as in
    MAML-TRPO's outer step (per-task masked means), with ``θ`` in place of the
    adapted ``θ'_i``; the same linear baseline and advantage normalisation are used.

    Args:
        policy: the policy; :meth:`step` updates its parameters in place.
        gamma: discount factor.
        gae_lambda: GAE ``λ``.
        max_kl: trust-region radius on the mean KL.
        cg_iters: conjugate-gradient iterations.
        cg_damping: damping added to the Fisher-vector products.
        ls_max_steps: backtracking line-search candidates.
        ls_backtrack_ratio: step shrink factor per candidate.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        max_kl: float = 0.01,
        cg_iters: int = 10,
        cg_damping: float = 1e-5,
        ls_max_steps: int = 15,
        ls_backtrack_ratio: float = 0.8,
    ) -> None:
        self.policy = policy
        self.gamma = gamma
        self.gae_lambda = gae_lambda
        self.max_kl = max_kl
        self.cg_iters = cg_iters
        self.cg_damping = cg_damping
        self.ls_max_steps = ls_max_steps
        self.ls_backtrack_ratio = ls_backtrack_ratio

    def step(self, batch: EpisodeBatch) -> dict[str, float]:
        """One TRPO update on ``batch`` (sampled with the policy's own parameters).

        Returns:
            ``train/surrogate_loss`` (before), ``train/surrogate_loss_after``,
            ``train/kl`` (of the applied step; 0 if none), ``train/line_search_steps``,
            ``train/step_accepted`` (1/0), ``train/grad_norm``.
        """
        dtype = next(self.policy.parameters()).dtype
        samples = TaskSamples.from_batch(batch, self.gamma, self.gae_lambda, dtype=dtype)
        theta = dict(self.policy.named_parameters())
        params = list(theta.values())

        # θ is shared by every task, so the policy runs unstacked on [N, M, obs_dim]: one
        # plain matmul per layer for all tasks.
        def surrogate(p: Mapping[str, torch.Tensor], old_lp: torch.Tensor) -> torch.Tensor:
            dist = self.policy(samples.observations, p)
            ratio = torch.exp(dist.log_prob(samples.actions) - old_lp)
            return -(ratio * samples.advantages * samples.weights).sum(1).mean()

        with torch.enable_grad():
            dist = self.policy(samples.observations, theta)
            old_lp = dist.log_prob(samples.actions).detach()
            old_dist = detach_distribution(dist)
            loss = surrogate(theta, old_lp)
            g = _flat(torch.autograd.grad(loss, params))
            kl = (kl_divergence(old_dist, dist) * samples.weights).sum(1).mean()
            grad_kl = _flat(torch.autograd.grad(kl, params, create_graph=True))

        def fisher_vector(v: torch.Tensor) -> torch.Tensor:
            return _flat(torch.autograd.grad(grad_kl, params, grad_outputs=v, retain_graph=True))

        def evaluate(cand: Mapping[str, torch.Tensor]) -> tuple[float, float]:
            with torch.no_grad():
                new_dist = self.policy(samples.observations, cand)
                kl_c = (kl_divergence(old_dist, new_dist) * samples.weights).sum(1).mean()
                return surrogate(cand, old_lp).item(), kl_c.item()

        result = trust_region_step(
            theta, loss.item(), g, fisher_vector, evaluate, max_kl=self.max_kl,
            damping=self.cg_damping, cg_iters=self.cg_iters, ls_max_steps=self.ls_max_steps,
            ls_backtrack_ratio=self.ls_backtrack_ratio,
        )  # fmt: skip
        return {
            "train/surrogate_loss": loss.item(),
            "train/grad_norm": result.grad_norm,
            "train/surrogate_loss_after": result.loss,
            "train/kl": result.kl,
            "train/line_search_steps": float(result.line_search_steps),
            "train/step_accepted": float(result.accepted),
        }


# -- Stable-Baselines3 PPO from scratch on one task ---------------------------------------


@dataclasses.dataclass(frozen=True)
class SB3Result:
    """SB3 PPO trained on one task, then evaluated.

    Attributes:
        returns: ``[E]`` undiscounted returns of the evaluation episodes (stochastic
            actions, as the MAML policies are evaluated).
        env_steps: environment steps PPO actually trained for (whole rollouts, so at
            least the budget).
    """

    returns: np.ndarray
    env_steps: int


def sb3_hyperparameters(budget: int) -> dict[str, int]:
    """PPO's ``n_steps`` and ``batch_size`` for a training budget of ``budget`` env steps.

    SB3's defaults (2048, 64) adjusted so that whole rollouts add up to the budget:
    ``r = ⌈budget / 2048⌉`` rollouts of ``n_steps = ⌈budget / r⌉`` steps (PPO trains
    in whole rollouts, so it may overshoot by less than ``r`` steps), and a minibatch
    size that divides the rollout (the largest divisor ≤ 64; with none ≥ 8, 64 and a
    truncated last minibatch). At least 2 steps (PPO needs 2 samples per minibatch).
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"the SB3 budget must be an integer ≥ 1 env steps, got {budget!r}")
    rollouts = -(-budget // 2048)
    n_steps = max(2, -(-budget // rollouts))  # PPO normalises advantages: ≥ 2 samples
    divisor = max(d for d in range(1, min(64, n_steps) + 1) if n_steps % d == 0)
    batch_size = divisor if divisor >= 8 or n_steps < 8 else min(64, n_steps)
    return {"n_steps": n_steps, "batch_size": batch_size}


def sb3_ppo_on_task(
    env_id: str,
    task: Task,
    *,
    budget: int,
    eval_seeds: Sequence[int],
    seed: int,
    env_kwargs: Mapping[str, Any] | None = None,
    max_episode_steps: int | None = None,
) -> SB3Result:
    """Train Stable-Baselines3 PPO from scratch on one task, then play it.

    SB3's PPO (``MlpPolicy``, default hyperparameters except ``n_steps`` and
    ``batch_size``, chosen by :func:`sb3_hyperparameters` so that whole rollouts add
    up to the budget) on the registered single env fixed to ``task``, for ``budget``
    environment steps. It is then evaluated on ``len(eval_seeds)`` episodes with
    stochastic actions, as the MAML policies are, each reset with its seed. Note that
    SB3 seeds the global ``random``/``numpy``/``torch`` generators.

    Args:
        env_id: the registered task family.
        task: the task to learn.
        budget: environment steps to train for (≥ 1).
        eval_seeds: one reset seed per evaluation episode.
        seed: SB3's seed, in ``[0, 2³²)`` (its torch/numpy/env randomness).
        env_kwargs: the env's constructor arguments.
        max_episode_steps: the time limit (default: the registered one).
    """
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    def make() -> gym.Env:
        env = gym.make(env_id, max_episode_steps=max_episode_steps, **dict(env_kwargs or {}))
        unwrap_family(env).set_task(task)
        return Monitor(env)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        vec = DummyVecEnv([make])
        hp = sb3_hyperparameters(budget)
        model = PPO("MlpPolicy", vec, n_steps=hp["n_steps"], batch_size=hp["batch_size"],
                    seed=seed, device="cpu", verbose=0)  # fmt: skip
        # A logger with no outputs: SB3's default one creates an empty <tmp>/SB3-<time>
        # folder on every learn() call, and nothing is logged from here anyway.
        model.set_logger(Logger(folder=None, output_formats=[]))
        model.learn(total_timesteps=budget)
        vec.close()
        env = make()
        returns = []
        for s in eval_seeds:
            obs, _ = env.reset(seed=int(s))
            total, done = 0.0, False
            while not done:
                action, _ = model.predict(obs, deterministic=False)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
        env.close()
    finally:
        torch.set_num_threads(threads)
    return SB3Result(np.asarray(returns, dtype=np.float64), int(model.num_timesteps))
