"""Task families: Gymnasium envs that are distributions over tasks.

Importing this package registers every built-in family under the ``MetaRL``
namespace (``gymnasium.make("MetaRL/Navigation2D-v0")``; ``maml-rl envs`` lists
them). Each MuJoCo family also offers ``make_batched(num_envs)``, a natively
batched version that reproduces the single env bitwise. :mod:`maml_rl.envs.oracle`
registers, on demand, the *oracle* twin of a family, which also observes its task.

Meta-World's ML1/ML10/ML45 (:mod:`maml_rl.envs.metaworld`) are registered under the
``MetaWorld`` namespace where the ``metaworld`` extra is installed (without importing
it: the families import it when built); elsewhere their ids say how to install it.
"""

import importlib.util as _ilu
import os as _os


def _pin_glfw_library() -> None:
    # Gymnasium's MuJoCo envs import `glfw` (for on-screen rendering) even when
    # nothing is rendered, and pyglfw then probes every candidate libglfw in a
    # fresh `python -c` subprocess, which every sampler worker would pay at start-up.
    # Pointing PYGLFW_LIBRARY at the library pyglfw ships skips the probing.
    if _os.environ.get("PYGLFW_LIBRARY"):
        return
    spec = _ilu.find_spec("glfw")
    if spec is None or spec.origin is None:
        return
    lib = _os.path.join(_os.path.dirname(spec.origin), "x11", "libglfw.so")
    if _os.path.isfile(lib):
        _os.environ["PYGLFW_LIBRARY"] = lib


_pin_glfw_library()  # before any module below imports gymnasium's MuJoCo envs

from maml_rl.envs.ant import AntDirEnv, AntGoalEnv, AntGoalTask, AntVelEnv, AntVelTask
from maml_rl.envs.bandit import Bandit5Env, Bandit10Env, Bandit50Env, BanditTask
from maml_rl.envs.half_cheetah import (
    HalfCheetahDirEnv,
    HalfCheetahVelEnv,
    HalfCheetahVelSparseEnv,
    HalfCheetahVelTask,
)
from maml_rl.envs.humanoid import HumanoidDirEnv, HumanoidFwdBackEnv, PlanarDirectionTask
from maml_rl.envs.locomotion import BatchedMujocoEnv, DirectionTask, VelocityTask
from maml_rl.envs.navigation import (
    BatchedNavigation2D,
    BatchedNavigation2DSparse,
    GoalTask2D,
    HalfCircleGoalTask,
    Navigation2DEnv,
    Navigation2DSparseEnv,
)
from maml_rl.envs.rand_params import (
    HalfCheetahRandParamsEnv,
    HalfCheetahRandParamsTask,
    HopperRandParamsEnv,
    HopperRandParamsTask,
    RandParamsTask,
    Walker2dRandParamsEnv,
    Walker2dRandParamsTask,
)
from maml_rl.envs.tabular_mdp import TabularMDPEnv, TabularMDPTask
from maml_rl.tasks import register_family, register_unavailable
from maml_rl.vector import BatchedTaskEnv

__all__ = [
    "AntDirEnv",
    "AntGoalEnv",
    "AntGoalTask",
    "AntVelEnv",
    "AntVelTask",
    "Bandit5Env",
    "Bandit10Env",
    "Bandit50Env",
    "BanditTask",
    "BatchedMujocoEnv",
    "BatchedNavigation2D",
    "BatchedNavigation2DSparse",
    "BatchedTaskEnv",
    "DirectionTask",
    "GoalTask2D",
    "HalfCheetahDirEnv",
    "HalfCheetahRandParamsEnv",
    "HalfCheetahRandParamsTask",
    "HalfCheetahVelEnv",
    "HalfCheetahVelSparseEnv",
    "HalfCheetahVelTask",
    "HalfCircleGoalTask",
    "HopperRandParamsEnv",
    "HopperRandParamsTask",
    "HumanoidDirEnv",
    "HumanoidFwdBackEnv",
    "Navigation2DEnv",
    "Navigation2DSparseEnv",
    "PlanarDirectionTask",
    "RandParamsTask",
    "TabularMDPEnv",
    "TabularMDPTask",
    "VelocityTask",
    "Walker2dRandParamsEnv",
    "Walker2dRandParamsTask",
]

register_family("MetaRL/Navigation2D-v0", Navigation2DEnv)
register_family("MetaRL/Navigation2DSparse-v0", Navigation2DSparseEnv)
register_family("MetaRL/HalfCheetahVel-v0", HalfCheetahVelEnv)
register_family("MetaRL/HalfCheetahVelSparse-v0", HalfCheetahVelSparseEnv)
register_family("MetaRL/HalfCheetahDir-v0", HalfCheetahDirEnv)
register_family("MetaRL/AntVel-v0", AntVelEnv)
register_family("MetaRL/AntDir-v0", AntDirEnv)
register_family("MetaRL/AntGoal-v0", AntGoalEnv)
register_family("MetaRL/HopperRandParams-v0", HopperRandParamsEnv)
register_family("MetaRL/Walker2dRandParams-v0", Walker2dRandParamsEnv)
register_family("MetaRL/HalfCheetahRandParams-v0", HalfCheetahRandParamsEnv)
register_family("MetaRL/HumanoidDir-v0", HumanoidDirEnv)
register_family("MetaRL/HumanoidFwdBack-v0", HumanoidFwdBackEnv)
register_family("MetaRL/Bandit-5arm-v0", Bandit5Env)
register_family("MetaRL/Bandit-10arm-v0", Bandit10Env)
register_family("MetaRL/Bandit-50arm-v0", Bandit50Env)
register_family("MetaRL/TabularMDP-v0", TabularMDPEnv)

if _ilu.find_spec("metaworld") is not None:
    from maml_rl.envs.metaworld import register_metaworld_families

    register_metaworld_families()
else:
    from maml_rl.envs.metaworld import INSTALL_HINT as _METAWORLD_HINT

    register_unavailable("MetaWorld", _METAWORLD_HINT)
