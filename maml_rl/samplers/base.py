"""The sampler interface: ``sample(tasks, params, episodes_per_task, seed) -> EpisodeBatch``.

Every backend is a :class:`Sampler` that only implements ``_collect`` (where the
work runs); validation, the batch layout and the thread policy live here, once.

**Threads.** The rollout loop evaluates tiny per-step matmuls, for which extra
intra-op threads only cost, so :meth:`Sampler.sample` runs on one torch thread and
restores the caller's count when it returns (or raises); worker processes and Ray
actors set one thread when they start. Callers never set torch's thread count
around a sample call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from maml_rl.batch import EpisodeBatch
from maml_rl.samplers.layout import BatchLayout
from maml_rl.samplers.spec import RolloutSpec, SampleRequest
from maml_rl.tasks import Task
from maml_rl.threads import torch_threads

__all__ = ["Sampler", "WorkerDied"]


class WorkerDied(RuntimeError):
    """A sampler worker process or actor died (killed, out of memory, a crash); the
    sampler is closed.

    Attributes:
        summary: which worker and how it ended, one line, without the advice on the
            sampler (e.g. ``"sampler worker 1 (pid 123) died while sampling (killed by
            SIGKILL)"``).
    """

    def __init__(self, summary: str, advice: str = "the sampler is closed, create a new one"):
        super().__init__(f"{summary}; {advice}")
        self.summary = summary


class Sampler:
    """Collects ``E`` episodes of each of ``N`` tasks as one :class:`EpisodeBatch`.

    Built by :func:`maml_rl.samplers.make_sampler`; the backends differ only in where the work runs.
    """

    backend: ClassVar[str]

    def __init__(self, spec: RolloutSpec, num_workers: int) -> None:
        self._spec = spec
        self._num_workers = num_workers
        self._closed = False
        #: The single env's spaces (what the policy maps between).
        self.observation_space: gym.spaces.Space = spec.observation_space
        self.action_space: gym.spaces.Space = spec.action_space

    # -- public API ------------------------------------------------------------------
    @property
    def env_id(self) -> str:
        return self._spec.env_id

    @property
    def horizon(self) -> int:
        """``T``: the number of steps of an episode (shorter ones are masked)."""
        return self._spec.horizon

    @property
    def num_workers(self) -> int:
        return self._num_workers

    @property
    def closed(self) -> bool:
        return self._closed

    def sample(
        self,
        tasks: Sequence[Task | Mapping[str, Any]],
        params: Mapping[str, torch.Tensor] | Sequence[Mapping[str, torch.Tensor]],
        episodes_per_task: int,
        seed: int,
    ) -> EpisodeBatch:
        """Play ``episodes_per_task`` episodes of every task with its parameters.

        Runs on one torch thread; the caller's thread count is restored after.

        Args:
            tasks: ``N`` tasks of this sampler's family.
            params: the policy parameters: one dict shared by all tasks (θ), a
                stacked dict with leading dim ``N`` (e.g. adapted ``θ'_i``), or a
                list of ``N`` dicts. Any device; gradients are not tracked.
            episodes_per_task: ``E``.
            seed: an integer ≥ 0; the same seed gives the same batch bit for bit
                on every backend and worker count.

        Returns:
            An :class:`EpisodeBatch` of CPU tensors ``[N, T, E, ...]``: observations,
            actions (float32 ``[.., act_dim]``, or int64 for discrete actions),
            rewards, log_probs (of the taken action under the sampling policy, summed
            over action dims), terminated, truncated, mask and final_observations
            ``[N, E, obs_dim]``. Steps after an episode ended are masked and zero.

        Raises:
            ValueError: tasks of another family, params that do not match the policy
                or the task count, ``episodes_per_task < 1``, a negative seed.
            WorkerDied: a worker died (and was not restarted); the sampler is closed.
            RuntimeError: the sampler is closed, or a worker failed.
        """
        if self._closed:
            raise RuntimeError(f"this {self.backend} sampler is closed; create a new one")
        with torch_threads(1):
            request = self._spec.request(tasks, params, episodes_per_task, seed)
            layout = BatchLayout(
                num_tasks=request.num_tasks,
                horizon=self._spec.horizon,
                episodes=request.episodes_per_task,
                obs_dim=self._spec.obs_dim,
                act_dim=self._spec.act_dim,
                success=bool(getattr(self._spec.family_cls, "reports_success", False)),
            )
            return layout.to_batch(self._collect(request, layout), request.tasks)

    def close(self) -> None:
        """Stop the workers and free their resources (idempotent)."""
        self._closed = True

    def __enter__(self) -> Sampler:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._num_workers} worker(s)"
        return f"{type(self).__name__}({self.env_id!r}, horizon={self.horizon}, {state})"

    # -- backend hook ------------------------------------------------------------------
    def _collect(self, request: SampleRequest, layout: BatchLayout) -> dict[str, np.ndarray]:
        """Run the request; return the full-batch arrays (owned by the caller)."""
        raise NotImplementedError
