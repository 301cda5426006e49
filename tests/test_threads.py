"""torch_threads: the one place the thread count is set, and always restored."""

from __future__ import annotations

import pytest
import torch

from maml_rl.threads import torch_threads


def test_torch_threads_sets_and_restores_the_count() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="num_threads"), torch_threads(0):
        pass
