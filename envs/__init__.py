"""Task families: Gymnasium envs that are distributions over tasks.

Importing this package registers every built-in family under the ``MetaRL``
namespace (``gymnasium.make("MetaRL/Navigation2D-v0")``).
"""

from maml_rl.envs.bandit import Bandit5Env, Bandit10Env, Bandit50Env, BanditTask
from maml_rl.envs.batched import BatchedTaskEnv
from maml_rl.envs.navigation import BatchedNavigation2D, GoalTask2D, Navigation2DEnv
from maml_rl.envs.tabular_mdp import TabularMDPEnv, TabularMDPTask
from maml_rl.tasks import register_family

__all__ = [
    "Bandit5Env",
    "Bandit10Env",
    "Bandit50Env",
    "BanditTask",
    "BatchedNavigation2D",
    "BatchedTaskEnv",
    "GoalTask2D",
    "Navigation2DEnv",
    "TabularMDPEnv",
    "TabularMDPTask",
]

register_family("MetaRL/Navigation2D-v0", Navigation2DEnv)
register_family("MetaRL/Bandit-5arm-v0", Bandit5Env)
register_family("MetaRL/Bandit-10arm-v0", Bandit10Env)
register_family("MetaRL/Bandit-50arm-v0", Bandit50Env)
register_family("MetaRL/TabularMDP-v0", TabularMDPEnv)
