"""What a sampler runs: the env and policy (:class:`RolloutSpec`) and one call's input.

:class:`RolloutSpec` is built once per sampler, validates the policy against the
env's spaces and travels (pickled) to every worker; :meth:`RolloutSpec.request`
validates the arguments of each ``Sampler.sample`` call into a
:class:`SampleRequest` (tasks of the family, parameters stacked ``[N, ...]`` as
CPU arrays, ``E``, the seed).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from maml_rl.tasks import Task, family_class, family_spec, register_family

__all__ = ["RolloutSpec", "SampleRequest"]


@dataclasses.dataclass(frozen=True)
class RolloutSpec:
    """Everything a worker needs to build its envs and policy (picklable).

    Attributes:
        env_id: the registered task-family id.
        family_cls: the family's env class (pickled by reference, which imports
            the module that registers it in a fresh worker process).
        registered_max_steps: the registered time limit (to re-register in a worker).
        registered_kwargs: the registered constructor kwargs (idem).
        env_kwargs: extra constructor kwargs of every env.
        horizon: ``T``, the number of steps of an episode (the time limit).
        policy: a CPU copy of the policy module; only its structure is used, the
            parameters come with each sample call.
        obs_dim: observation size.
        act_dim: action size of a ``Box`` action space; ``None`` for ``Discrete``.
        num_actions: number of actions of a ``Discrete`` action space, else ``None``.
        param_shapes: the policy's parameter names and (unstacked) shapes.
        observation_space: the single env's observation space.
        action_space: the single env's action space.
        num_threads: threads each engine's batched env may step its envs on
            (``None``: the env's default); the batch does not depend on it.
    """

    env_id: str
    family_cls: type
    registered_max_steps: int | None
    registered_kwargs: dict[str, Any]
    env_kwargs: dict[str, Any]
    horizon: int
    policy: nn.Module
    obs_dim: int
    act_dim: int | None
    num_actions: int | None
    param_shapes: dict[str, tuple[int, ...]]
    observation_space: gym.spaces.Box
    action_space: gym.spaces.Space
    num_threads: int | None = None

    @property
    def discrete(self) -> bool:
        return self.num_actions is not None

    @property
    def noise_dim(self) -> int:
        """Noise numbers per step: action dims (Gaussian) or actions (Gumbel-max)."""
        return int(self.num_actions if self.num_actions is not None else self.act_dim)  # type: ignore[arg-type]

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.policy.parameters())).dtype

    @classmethod
    def create(
        cls,
        env_id: str,
        policy: nn.Module,
        env_kwargs: Mapping[str, Any] | None,
        max_episode_steps: int | None,
    ) -> RolloutSpec:
        """Validate the env and the policy against each other and build the spec."""
        # A module-qualified id imports its module; the bare id travels to the workers
        # (the family class, pickled by reference, imports its module there).
        env_id = family_spec(env_id).id  # ValueError with a suggestion for an unknown id
        family = family_class(env_id)
        if not isinstance(policy, nn.Module):
            raise ValueError(
                f"policy must be a torch.nn.Module (e.g. GaussianMLPPolicy), got "
                f"{type(policy).__name__}"
            )
        if env_kwargs is not None and not isinstance(env_kwargs, Mapping):
            raise ValueError(f"env_kwargs must be a mapping or None, got {env_kwargs!r}")
        gym_spec = gym.spec(env_id)
        horizon = max_episode_steps if max_episode_steps is not None else gym_spec.max_episode_steps
        if (
            horizon is None
            or isinstance(horizon, bool)
            or not isinstance(horizon, (int, np.integer))
            or horizon < 1
        ):
            raise ValueError(
                f"max_episode_steps must be an integer ≥ 1 (or None for the registered "
                f"limit of {env_id}: {gym_spec.max_episode_steps}), got {max_episode_steps!r}"
            )
        try:
            env = gym.make(env_id, disable_env_checker=True, **dict(env_kwargs or {}))
        except TypeError as exc:  # an unexpected constructor argument
            raise ValueError(f"env_kwargs {env_kwargs!r} do not fit {env_id}: {exc}") from None
        obs_space, act_space = env.observation_space, env.action_space
        env.close()
        if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
            raise ValueError(
                f"the sampler needs a flat Box observation space, {env_id} has {obs_space}"
            )
        if isinstance(act_space, gym.spaces.Box) and len(act_space.shape) == 1:
            act_dim, num_actions = int(act_space.shape[0]), None
        elif isinstance(act_space, gym.spaces.Discrete) and int(act_space.start) == 0:
            act_dim, num_actions = None, int(act_space.n)
        else:
            raise ValueError(
                f"the sampler needs a flat Box or a Discrete (from 0) action space, "
                f"{env_id} has {act_space}"
            )
        own = {name: p.detach() for name, p in policy.named_parameters()}
        if not own:
            raise ValueError("the policy has no parameters")
        cpu_policy = _cpu_copy(policy)
        spec = cls(
            env_id=env_id,
            family_cls=family,
            registered_max_steps=gym_spec.max_episode_steps,
            registered_kwargs=dict(gym_spec.kwargs),
            env_kwargs=dict(env_kwargs or {}),
            horizon=int(horizon),
            policy=cpu_policy,
            obs_dim=int(obs_space.shape[0]),
            act_dim=act_dim,
            num_actions=num_actions,
            param_shapes={name: tuple(p.shape) for name, p in own.items()},
            observation_space=obs_space,
            action_space=act_space,
        )
        spec._probe_policy()
        return spec

    def _probe_policy(self) -> None:
        """Check, once, that the policy maps this env's observations to its actions."""
        stacked = {
            name: p.detach().unsqueeze(0).expand(2, *p.shape).contiguous()
            for name, p in self.policy.named_parameters()
        }
        obs = torch.zeros(2, 3, self.obs_dim, dtype=self.dtype)
        try:
            with torch.no_grad():
                dist = self.policy(obs, stacked)
        except Exception as exc:
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(
                f"the policy cannot act in {self.env_id} (observations of size "
                f"{self.obs_dim}, evaluated with stacked per-task parameters): {first_line}"
            ) from exc
        batch = (2, 3)
        if self.discrete:
            logits = getattr(dist, "logits", None)
            if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (
                *batch,
                self.num_actions,
            ):
                raise ValueError(
                    f"{self.env_id} has {self.num_actions} discrete actions: the policy must "
                    f"return a Categorical over them (e.g. CategoricalMLPPolicy), got "
                    f"{type(dist).__name__}"
                )
            sample = torch.zeros(batch, dtype=torch.long)
        else:
            base = getattr(dist, "base_dist", dist)
            if not isinstance(base, torch.distributions.Normal) or tuple(dist.mean.shape) != (
                *batch,
                self.act_dim,
            ):
                raise ValueError(
                    f"{self.env_id} has {self.act_dim}-dimensional continuous actions: the "
                    f"policy must return a Gaussian over them (e.g. GaussianMLPPolicy), got "
                    f"{type(dist).__name__}"
                )
            sample = dist.mean
        if tuple(dist.log_prob(sample).shape) != batch:
            raise ValueError(
                "the policy's log_prob must be summed over action dimensions (wrap a Normal "
                "in torch.distributions.Independent(..., 1))"
            )

    def ensure_registered(self) -> None:
        """Register the family in this process if its module did not already do so."""
        if self.env_id not in gym.registry:
            register_family(
                self.env_id,
                self.family_cls,
                max_episode_steps=self.registered_max_steps,
                **self.registered_kwargs,
            )

    # -- per-call input ------------------------------------------------------------
    def request(
        self,
        tasks: Sequence[Any],
        params: Any,
        episodes_per_task: int,
        seed: int,
    ) -> SampleRequest:
        """Validate the arguments of ``Sampler.sample`` and package them for the workers."""
        task_cls = self.family_cls.task_cls  # type: ignore[attr-defined]
        if isinstance(tasks, (str, bytes, Mapping, Task)) or not isinstance(tasks, Sequence):
            raise ValueError(
                f"tasks must be a list of {task_cls.__name__} (one per task), got "
                f"{type(tasks).__name__}"
            )
        if len(tasks) == 0:
            raise ValueError("tasks is empty: sample needs at least one task")
        checked = [task_cls.coerce(t) for t in tasks]
        if not _is_int(episodes_per_task) or episodes_per_task < 1:
            raise ValueError(f"episodes_per_task must be an integer ≥ 1, got {episodes_per_task!r}")
        if not _is_int(seed) or seed < 0:
            raise ValueError(f"seed must be an integer ≥ 0, got {seed!r}")
        return SampleRequest(
            tasks=checked,
            params=self.stack_params(params, len(checked)),
            episodes_per_task=int(episodes_per_task),
            seed=int(seed),
        )

    def stack_params(self, params: Any, num_tasks: int) -> dict[str, np.ndarray]:
        """Parameters as ``{name: [N, *shape]}`` CPU arrays of the policy's dtype.

        Accepts one shared (unstacked) dict, a stacked dict (leading dim ``N``) or a
        list of ``N`` unstacked dicts; anything else is a one-line ``ValueError``.
        """
        n = num_tasks
        if isinstance(params, Mapping):
            self._check_keys(params, "params")
            kinds = {}
            for name, shape in self.param_shapes.items():
                got = tuple(_as_tensor(params[name], name).shape)
                if got == shape:
                    kinds[name] = "shared"
                elif got == (n, *shape):
                    kinds[name] = "stacked"
                else:
                    raise ValueError(
                        f"params[{name!r}] must have shape {shape} (shared by all tasks) or "
                        f"{(n, *shape)} (one row per task, {n} tasks), got {got}"
                    )
            if len(set(kinds.values())) > 1:
                raise ValueError(
                    f"params mixes shared and per-task (stacked) tensors: {kinds}; "
                    "stack all of them or none"
                )
            stacked = "stacked" in kinds.values()
            return {
                name: self._array(params[name], name, None if stacked else n)
                for name in self.param_shapes
            }
        if isinstance(params, Sequence) and not isinstance(params, (str, bytes)):
            if len(params) != n:
                raise ValueError(
                    f"a list of per-task params must have one dict per task ({n}), "
                    f"got {len(params)}"
                )
            rows: dict[str, list[np.ndarray]] = {name: [] for name in self.param_shapes}
            for i, p in enumerate(params):
                if not isinstance(p, Mapping):
                    raise ValueError(
                        f"params[{i}] must be a dict of tensors, got {type(p).__name__}"
                    )
                self._check_keys(p, f"params[{i}]")
                for name, shape in self.param_shapes.items():
                    got = tuple(_as_tensor(p[name], name).shape)
                    if got != shape:
                        raise ValueError(
                            f"params[{i}][{name!r}] must have shape {shape}, got {got}"
                        )
                    rows[name].append(self._array(p[name], name, None))
            return {name: np.stack(r) for name, r in rows.items()}
        raise ValueError(
            "params must be a dict of tensors (shared or stacked per task) or a list of one "
            f"dict per task, got {type(params).__name__}"
        )

    def _check_keys(self, params: Mapping[str, Any], what: str) -> None:
        if set(params) != set(self.param_shapes):
            missing = sorted(set(self.param_shapes) - set(params))
            extra = sorted(str(k) for k in set(params) - set(self.param_shapes))
            raise ValueError(
                f"{what} do not match the policy's parameters: missing {missing}, "
                f"unexpected {extra}"
            )

    def _array(self, value: Any, name: str, broadcast: int | None) -> np.ndarray:
        t = _as_tensor(value, name).detach().to(device="cpu", dtype=self.dtype)
        if broadcast is not None:
            t = t.unsqueeze(0).expand(broadcast, *t.shape)
        return t.contiguous().numpy()


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise ValueError(f"params[{name!r}] must be a tensor, got {type(value).__name__}")


def _cpu_copy(policy: nn.Module) -> nn.Module:
    """A detached CPU copy of the policy for the workers (the learner's may be on a GPU)."""
    clone = copy.deepcopy(policy).to("cpu")
    clone.requires_grad_(False)
    return clone.eval()


@dataclasses.dataclass(frozen=True)
class SampleRequest:
    """One sample call, validated: ``N`` tasks, their stacked parameters, ``E``, the seed."""

    tasks: list[Task]
    params: dict[str, np.ndarray]
    episodes_per_task: int
    seed: int

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)
