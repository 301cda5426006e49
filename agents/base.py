"""The meta-learner role: what the trainer asks of an agent, and nothing more.

An agent owns the policy's meta-parameters ``θ`` and the optimiser state of the outer
loop. Per meta-iteration the trainer calls :meth:`Agent.adapt` once per inner step (on
episodes it sampled with the current parameters, to get the parameters the next episodes
are sampled with) and then :meth:`Agent.step` with every batch of the iteration; the agent
returns its metrics as a dict and never logs. :class:`~maml_rl.agents.maml_trpo.MAMLTRPO`
and :class:`~maml_rl.agents.maml_ppo.MAMLPPO` implement it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from maml_rl.agents.policies import Params
from maml_rl.batch import EpisodeBatch

__all__ = ["Agent"]


@runtime_checkable
class Agent(Protocol):
    """A meta-learner (see the module docstring)."""

    def adapt(self, params: Mapping[str, torch.Tensor], batch: EpisodeBatch) -> Params:
        """One inner step for every task of ``batch`` (sampled with ``params``): the
        stacked ``[N, ...]`` adapted parameters, detached (they only drive sampling)."""
        ...

    def step(
        self, train_batches: Sequence[EpisodeBatch], valid_batch: EpisodeBatch
    ) -> dict[str, float]:
        """The outer update of ``θ`` (in place) from one meta-batch: the inner steps'
        batches and the post-adaptation one. Returns the iteration's ``train/*`` metrics."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The agent's state besides the policy's parameters (optimiser, schedules)."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...
