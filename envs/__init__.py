"""Task families: Gymnasium envs that are distributions over tasks.

Importing this package registers every built-in family under the ``MetaRL``
namespace (``gymnasium.make("MetaRL/Navigation2D-v0")``; ``maml-rl envs`` lists
them). Each MuJoCo family also offers ``make_batched(num_envs)``, a natively
batched version that reproduces the single env bitwise.
"""

from maml_rl.envs.ant import AntDirEnv, AntGoalEnv, AntGoalTask, AntVelEnv, AntVelTask
from maml_rl.envs.bandit import Bandit5Env, Bandit10Env, Bandit50Env, BanditTask
from maml_rl.envs.batched import BatchedTaskEnv
from maml_rl.envs.half_cheetah import HalfCheetahDirEnv, HalfCheetahVelEnv, HalfCheetahVelTask
from maml_rl.envs.locomotion import BatchedMujocoEnv, DirectionTask, VelocityTask
from maml_rl.envs.navigation import BatchedNavigation2D, GoalTask2D, Navigation2DEnv
from maml_rl.envs.tabular_mdp import TabularMDPEnv, TabularMDPTask
from maml_rl.tasks import register_family

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
    "BatchedTaskEnv",
    "DirectionTask",
    "GoalTask2D",
    "HalfCheetahDirEnv",
    "HalfCheetahVelEnv",
    "HalfCheetahVelTask",
    "Navigation2DEnv",
    "TabularMDPEnv",
    "TabularMDPTask",
    "VelocityTask",
]

register_family("MetaRL/Navigation2D-v0", Navigation2DEnv)
register_family("MetaRL/HalfCheetahVel-v0", HalfCheetahVelEnv)
register_family("MetaRL/HalfCheetahDir-v0", HalfCheetahDirEnv)
register_family("MetaRL/AntVel-v0", AntVelEnv)
register_family("MetaRL/AntDir-v0", AntDirEnv)
register_family("MetaRL/AntGoal-v0", AntGoalEnv)
register_family("MetaRL/Bandit-5arm-v0", Bandit5Env)
register_family("MetaRL/Bandit-10arm-v0", Bandit10Env)
register_family("MetaRL/Bandit-50arm-v0", Bandit50Env)
register_family("MetaRL/TabularMDP-v0", TabularMDPEnv)
