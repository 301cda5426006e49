"""maml-rl: model-agnostic meta-learning for reinforcement learning.

Importing :mod:`maml_rl` registers the built-in task families with Gymnasium.
"""

__version__ = "0.1.0"

from maml_rl import envs as envs  # noqa: E402  (registers the task families)
