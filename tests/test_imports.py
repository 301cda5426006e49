"""Imports flow one way: the core loads no task family and no MuJoCo, and no module
imports across the layers (``benchmarks/import_graph.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CORE_MODULES = [
    "maml_rl",
    "maml_rl.returns",
    "maml_rl.batch",
    "maml_rl.baseline",
    "maml_rl.tasks",
    "maml_rl.vector",
    "maml_rl.seeding",
    "maml_rl.config",
    "maml_rl.trainer",
    "maml_rl.cli",
    "maml_rl.evaluation",
]


def _fresh_interpreter(code: str) -> str:
    # (without the variable that an earlier test's `import maml_rl.envs` set in this process)
    env = {k: v for k, v in os.environ.items() if k != "PYGLFW_LIBRARY"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=env,
    )
    return done.stdout.strip()


@pytest.mark.slow
@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_imports_no_mujoco_and_no_family(module: str) -> None:
    out = _fresh_interpreter(
        f"import os, sys; import {module}; "
        "print('mujoco' in sys.modules, any(m.startswith('maml_rl.envs') for m in sys.modules), "
        "'PYGLFW_LIBRARY' in os.environ)"
    )
    # (the third: the envs package pins pyglfw's library for MuJoCo's renderer; the core not)
    assert out == "False False False", f"import {module}: mujoco, a family, glfw pinned = {out}"


@pytest.mark.slow
def test_families_register_when_maml_rl_envs_is_imported() -> None:
    out = _fresh_interpreter(
        "import gymnasium as gym, maml_rl; "
        "print('MetaRL/HalfCheetahVel-v0' in gym.registry); "
        "import maml_rl.envs; print('MetaRL/HalfCheetahVel-v0' in gym.registry)"
    )
    assert out.split() == ["False", "True"]


@pytest.mark.slow
def test_family_ids_registers_the_builtin_families() -> None:
    out = _fresh_interpreter("from maml_rl.tasks import family_ids; print(len(family_ids()))")
    assert int(out) >= 10


def test_imports_flow_one_way() -> None:
    """``benchmarks/import_graph.py --check``: envs and agents import only the core, the core
    imports neither them nor the orchestration, and no module-level imports form a cycle."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "import_graph.py"
    done = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.rstrip().endswith("0 violation(s)"), done.stdout
