"""maml-rl: model-agnostic meta-learning for reinforcement learning.

``import maml_rl`` loads no task family and no MuJoCo. The built-in families register
with Gymnasium when :mod:`maml_rl.envs` is imported, which :func:`maml_rl.tasks.family_ids`,
:func:`~maml_rl.tasks.make_family`, the trainer and the CLI do for you.
"""

__version__ = "0.1.0"
