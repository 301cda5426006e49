"""maml-rl: model-agnostic meta-learning for reinforcement learning.

Importing :mod:`maml_rl` registers the built-in task families with Gymnasium.
"""

import importlib.util as _ilu
import os as _os

__version__ = "0.1.0"


def _pin_glfw_library() -> None:
    # Gymnasium's MuJoCo envs import `glfw` (for on-screen rendering) even when
    # nothing is rendered, and pyglfw then probes every candidate libglfw in a
    # fresh `python -c` subprocess. Every sampler worker pays that at start-up,
    # and under memory pressure we saw those probes pile up by the hundred.
    # Pointing PYGLFW_LIBRARY at the library pyglfw ships skips the probing.
    if _os.environ.get("PYGLFW_LIBRARY"):
        return
    spec = _ilu.find_spec("glfw")
    if spec is None or spec.origin is None:
        return
    lib = _os.path.join(_os.path.dirname(spec.origin), "x11", "libglfw.so")
    if _os.path.isfile(lib):
        _os.environ["PYGLFW_LIBRARY"] = lib


_pin_glfw_library()

from maml_rl import envs as envs  # noqa: E402  (registers the task families)
