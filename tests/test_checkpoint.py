"""Checkpoints: atomic writes, weights_only loading, one-line errors."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from maml_rl.checkpoint import (
    CHECKPOINT_NAME,
    FORMAT_VERSION,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)


def _state(value: float = 1.0) -> dict[str, Any]:
    bit_generator = np.random.default_rng(3).bit_generator.state  # a dict of ints and str
    return {
        "format_version": FORMAT_VERSION,
        "iteration": 4,
        "env_steps": 12_000,
        "config": {"seed": 1, "maml": {"fast_lr": 0.1}, "policy": {"hidden_sizes": [8, 8]}},
        "policy": {"w": torch.full((3, 2), value), "log_std": torch.zeros(2)},
        "agent": {"optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}},
        "rng": {"seed": 1, "torch": torch.get_rng_state(), "numpy": bit_generator},
    }


def test_round_trip(tmp_path: Path) -> None:
    written = save_checkpoint(tmp_path, _state(2.0))
    assert written == tmp_path / CHECKPOINT_NAME
    loaded = load_checkpoint(tmp_path)
    assert torch.equal(loaded["policy"]["w"], torch.full((3, 2), 2.0))
    assert loaded["config"] == _state()["config"]
    assert loaded["rng"]["numpy"] == _state()["rng"]["numpy"]
    assert torch.equal(loaded["rng"]["torch"], _state()["rng"]["torch"])
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["iteration"] == 4  # a file path works too


def test_failed_write_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, _state(1.0))
    broken = _state(5.0)
    broken["agent"] = {"not picklable": lambda: None}  # torch.save fails mid-write
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        save_checkpoint(tmp_path, broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]  # no temp file left
    assert torch.equal(load_checkpoint(tmp_path)["policy"]["w"], torch.full((3, 2), 1.0))


def test_overwrite_replaces(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, _state(1.0))
    save_checkpoint(tmp_path, _state(3.0))
    assert torch.equal(load_checkpoint(tmp_path)["policy"]["w"], torch.full((3, 2), 3.0))


class _Payload:
    """An arbitrary object: a weights_only load must refuse to rebuild it."""

    def __init__(self) -> None:
        self.x = 1


def test_loading_is_weights_only(tmp_path: Path) -> None:
    state = _state()
    state["agent"] = _Payload()
    torch.save(state, tmp_path / CHECKPOINT_NAME)  # a file this module would never write
    with pytest.raises(ValueError, match=r"one that would run code on load\); refused$") as info:
        load_checkpoint(tmp_path)
    assert "\n" not in str(info.value)


def test_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no run folder or checkpoint at") as info:
        load_checkpoint(tmp_path / "nope")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=f"has no {CHECKPOINT_NAME}"):
        load_checkpoint(tmp_path)

    file = tmp_path / CHECKPOINT_NAME
    save_checkpoint(file, _state())
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])  # torn file
    with pytest.raises(ValueError, match="is truncated") as info:
        load_checkpoint(tmp_path)
    assert "\n" not in str(info.value)

    file.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a maml-rl checkpoint"):
        load_checkpoint(tmp_path)

    torch.save({"weights": torch.zeros(1)}, file)
    with pytest.raises(ValueError, match="not a maml-rl checkpoint"):
        load_checkpoint(tmp_path)

    torch.save({**_state(), "format_version": 99}, file)
    with pytest.raises(ValueError, match="format version 99"):
        load_checkpoint(tmp_path)

    incomplete = _state()
    del incomplete["agent"]
    save_checkpoint(file, incomplete)
    with pytest.raises(ValueError, match="missing agent"):
        load_checkpoint(tmp_path)


def test_checkpoint_path(tmp_path: Path) -> None:
    assert checkpoint_path(tmp_path) == tmp_path / CHECKPOINT_NAME
    assert checkpoint_path(tmp_path / "x.pt") == tmp_path / "x.pt"
