"""Task families: Gymnasium envs that are distributions over tasks.

Importing this package registers every built-in family under the ``MetaRL``
namespace (``gymnasium.make("MetaRL/Navigation2D-v0")``).
"""

from maml_rl.envs.batched import BatchedTaskEnv
from maml_rl.envs.navigation import BatchedNavigation2D, GoalTask2D, Navigation2DEnv
from maml_rl.tasks import register_family

__all__ = [
    "BatchedNavigation2D",
    "BatchedTaskEnv",
    "GoalTask2D",
    "Navigation2DEnv",
]

register_family("MetaRL/Navigation2D-v0", Navigation2DEnv)
