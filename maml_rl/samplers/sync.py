"""The ``sync`` backend: one rollout engine in the calling process."""

from __future__ import annotations

import numpy as np

from maml_rl.samplers.base import Sampler
from maml_rl.samplers.engine import RolloutEngine
from maml_rl.samplers.layout import BatchLayout, Shard
from maml_rl.samplers.spec import RolloutSpec, SampleRequest

__all__ = ["SyncSampler"]


class SyncSampler(Sampler):
    """Runs everything in the calling process (one thread)."""

    backend = "sync"

    def __init__(self, spec: RolloutSpec) -> None:
        super().__init__(spec, 1)
        self._engine = RolloutEngine(spec)

    def _collect(self, request: SampleRequest, layout: BatchLayout) -> dict[str, np.ndarray]:
        arrays = layout.allocate()
        shard = Shard(0, request.num_tasks, 0, request.episodes_per_task)
        self._engine.run(shard, request, BatchLayout.block(arrays, shard))
        return arrays

    def close(self) -> None:
        if not self._closed:
            self._engine.close()
        super().close()
