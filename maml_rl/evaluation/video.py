"""Videos of adaptation: a policy before adaptation and after each step, side by side.

For each video task the episode of every adaptation step ``k = 0..K`` is played again in
the single registered env with ``render_mode="rgb_array"``: **episode 0 of the
evaluation's own step-``k`` sample call**, with the parameters that call used (θ, then
the adapted θ'_k the evaluation computed), the same reset seed and the same action noise
(:func:`maml_rl.seeding.task_streams`). So the return shown in a panel is that episode's
return (equal up to float rounding: the policy is evaluated for one env instead of the
whole batch); the single env reproduces the batched env the sampler steps (a test says
so for every built-in family).

One grid frame per time step: one panel per step (before, after 1, 2, …), each under a
header with the step, the task and the running return; a panel whose episode has ended
keeps its last frame ("ended"). Outputs:

* ``<task>.mp4`` per task (H.264 through the ``ffmpeg`` binary of ``imageio-ffmpeg``,
  ``pip install 'maml-rl[video]'``), or ``<task>.gif`` (Pillow) where it is not installed;
* TensorBoard ``eval/video_step_<k>``: the episodes after ``k`` steps, all video tasks
  side by side, as an animated GIF image summary — what ``SummaryWriter.add_video``
  writes, without its moviepy dependency (TensorBoard's *Images* tab plays it).

**Headless MuJoCo.** MuJoCo renders offscreen through EGL or OSMesa. When the user has
not set ``MUJOCO_GL``, :func:`choose_gl_backend` probes ``egl`` then ``osmesa``, each in
a fresh interpreter (a failed attempt leaves PyOpenGL bound to its platform), and sets
``MUJOCO_GL`` to the first that renders. On Debian/Ubuntu without a GPU, EGL runs on
Mesa's software rasteriser: ``apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri
libopengl0``; OSMesa: ``apt-get install libosmesa6``. Neither there: a one-line
:class:`RenderUnavailable`, and the evaluation goes on without videos.

This module is imported only when a video is asked for; it imports no MuJoCo itself
(the family's env does, when it is made).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from maml_rl.agents.policies import Policy
from maml_rl.logger import TensorBoardLogger, encode_gif
from maml_rl.seeding import task_streams
from maml_rl.tasks import Task, family_class

__all__ = [
    "GL_BACKENDS",
    "GL_PACKAGES",
    "PANEL_SIZE",
    "Episode",
    "RenderUnavailable",
    "TaskVideo",
    "choose_gl_backend",
    "compose",
    "log_step_videos",
    "make_render_env",
    "mp4_available",
    "play_episode",
    "probe_gl",
    "read_video",
    "render_adaptation",
    "task_file_stem",
    "task_text",
    "write_task_videos",
    "write_video",
]

#: MuJoCo's headless OpenGL backends, in the order they are tried.
GL_BACKENDS = ("egl", "osmesa")
#: What to install for them (Debian/Ubuntu package names).
GL_PACKAGES = "libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 (EGL) or libosmesa6 (OSMesa)"
#: Panel size in pixels (width = height) of a video.
PANEL_SIZE = 240
_LINE = 15  # pixels per line of the header above each panel (3 lines)
_FONT_SIZE = 13

_PROBE = """
import mujoco
from mujoco.{backend} import GLContext
ctx = GLContext(32, 32)
ctx.make_current()
mujoco.MjrContext(mujoco.MjModel.from_xml_string("<mujoco/>"), mujoco.mjtFontScale.mjFONTSCALE_100)
ctx.free()
"""


class RenderUnavailable(ValueError):
    """Frames cannot be rendered here (no GL backend, or a family without rgb_array)."""


# -- the GL backend ---------------------------------------------------------------------------


def probe_gl(backend: str, timeout: float = 120.0) -> str | None:
    """``None`` if MuJoCo renders offscreen with ``MUJOCO_GL=backend`` here, else why not
    (one line). Runs in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "PYOPENGL_PLATFORM"}
    env["MUJOCO_GL"] = backend
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE.format(backend=backend)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return f"{backend}: no answer within {timeout:g} s"
    if proc.returncode == 0:
        return None
    lines = proc.stderr.strip().splitlines()
    return f"{backend}: {lines[-1] if lines else f'exit status {proc.returncode}'}"


_chosen: str | None = None


def choose_gl_backend(backends: Sequence[str] = GL_BACKENDS) -> str:
    """The ``MUJOCO_GL`` backend for offscreen rendering: the user's ``MUJOCO_GL`` if set,
    else the first of ``backends`` that works here (then set in ``os.environ``).

    Raises:
        RenderUnavailable: one line, naming the packages to install.
    """
    global _chosen
    user = os.environ.get("MUJOCO_GL")
    if user:
        if user not in ("egl", "osmesa", "glfw"):
            raise RenderUnavailable(
                f"MUJOCO_GL={user!r} cannot render frames; set egl, osmesa or glfw, or unset it "
                f"(then {'/'.join(GL_BACKENDS)} are tried)"
            )
        return user
    if _chosen is not None and tuple(backends) == GL_BACKENDS:
        os.environ["MUJOCO_GL"] = _chosen
        return _chosen
    for backend in backends:
        if probe_gl(backend) is None:
            if tuple(backends) == GL_BACKENDS:
                _chosen = backend
            os.environ["MUJOCO_GL"] = backend
            return backend
    raise RenderUnavailable(
        f"MuJoCo cannot render offscreen here: none of MUJOCO_GL={'/'.join(backends)} works; "
        f"install {GL_PACKAGES}, or set MUJOCO_GL"
    )


def _is_mujoco(env: gym.Env[Any, Any]) -> bool:
    # Looked up, not imported: a MuJoCo env has imported it already.
    module = sys.modules.get("gymnasium.envs.mujoco.mujoco_env")
    return module is not None and isinstance(env.unwrapped, module.MujocoEnv)


def make_render_env(
    env_id: str, env_kwargs: Mapping[str, Any], horizon: int, size: int = PANEL_SIZE
) -> gym.Env[Any, Any]:
    """The single env of ``env_id`` rendering ``size × size`` rgb_array frames.

    Raises:
        RenderUnavailable: the family has no ``rgb_array`` mode, or MuJoCo has no GL.
    """
    cls = family_class(env_id)
    render_modes = (getattr(cls, "metadata", {}) or {}).get("render_modes", [])
    if "rgb_array" not in render_modes:
        raise RenderUnavailable(
            f"{env_id} cannot be rendered: it has no render_mode 'rgb_array' (its "
            f"render_modes: {list(render_modes)})"
        )
    kwargs: dict[str, Any] = dict(env_kwargs)
    params = inspect.signature(cls).parameters
    kwargs.update({k: size for k in ("width", "height") if k in params})
    env = gym.make(
        env_id,
        render_mode="rgb_array",
        max_episode_steps=horizon,
        disable_env_checker=True,
        **kwargs,
    )
    if _is_mujoco(env):
        try:
            backend = choose_gl_backend()
            env.reset(seed=0)
            try:
                # A first frame: a backend that fails says so here, in one line (glfw's own
                # warnings on a machine without a display would add four more).
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    env.render()
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise RenderUnavailable(
                    f"MuJoCo cannot render with MUJOCO_GL={backend}: {first}; install "
                    f"{GL_PACKAGES}, or set MUJOCO_GL to another backend"
                ) from None
        except RenderUnavailable:
            env.close()
            raise
    return env


# -- one episode, played again ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Episode:
    """A rendered episode.

    Attributes:
        frames: ``[T + 1]`` frames ``[H, W, 3]`` uint8: after the reset and after each step.
        returns: the running return at each frame (0 after the reset).
    """

    frames: list[np.ndarray]
    returns: list[float]

    @property
    def total(self) -> float:
        return self.returns[-1]


def _row(params: Mapping[str, torch.Tensor], i: int, policy: Policy) -> dict[str, torch.Tensor]:
    """Task ``i``'s parameters stacked ``[1, ...]`` (``params`` shared or stacked)."""
    if policy.is_stacked(params):
        return {k: v[i : i + 1].detach() for k, v in params.items()}
    return {k: v.detach().unsqueeze(0) for k, v in params.items()}


def play_episode(
    env: gym.Env[Any, Any],
    policy: Policy,
    params: Mapping[str, torch.Tensor],
    task: Task,
    reset_seed: int,
    noise: np.ndarray,
    horizon: int,
) -> Episode:
    """Play one episode as the rollout engine plays it (same reset seed, same noise
    ``[T, d]``, same action rule) and render every step.

    Args:
        params: the task's parameters, stacked ``[1, ...]``.
    """
    env.unwrapped.set_task(task)  # type: ignore[attr-defined]
    obs, _ = env.reset(seed=int(reset_seed))
    dtype = next(policy.parameters()).dtype
    discrete = isinstance(env.action_space, gym.spaces.Discrete)
    frames, returns, total = [_frame(env)], [0.0], np.float32(0.0)
    with torch.no_grad():
        for t in range(horizon):
            x = torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(1, 1, -1), dtype=dtype)
            dist = policy(x, params)
            eps = torch.as_tensor(noise[t], dtype=dtype)
            if discrete:
                action = int(torch.argmax(dist.logits + eps, dim=-1).reshape(()))
                obs, reward, terminated, truncated, _ = env.step(action)
            else:
                act = (dist.mean + dist.stddev * eps).numpy().reshape(-1)
                obs, reward, terminated, truncated, _ = env.step(act)
            total = np.float32(total + np.float32(reward))  # the batch's float32 rewards
            frames.append(_frame(env))
            returns.append(float(total))
            if terminated or truncated:
                break
    return Episode(frames, returns)


def _frame(env: gym.Env[Any, Any]) -> np.ndarray:
    frame = env.render()
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
        raise RenderUnavailable(
            f"{env.spec.id if env.spec else env}: render() must return an [H, W, 3] array "
            f"with render_mode='rgb_array', got {type(frame).__name__}"
        )
    return np.asarray(frame, dtype=np.uint8)


# -- a task's video ---------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def task_text(task: Task) -> str:
    """``velocity 1.23`` / ``goal (0.12, -0.34)``: a task in a few characters."""
    return ", ".join(f"{k} {_fmt(v)}" for k, v in task.to_dict().items())


def task_file_stem(index: int, task: Task) -> str:
    """``task0_velocity_1.23``: a file name for task ``index`` of the evaluation."""
    text = "_".join(f"{k}_{_fmt(v)}" for k, v in task.to_dict().items())
    text = re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")
    return f"task{index}_{text}"[:100]


def step_text(k: int) -> str:
    return "before adaptation" if k == 0 else f"after {k} step{'s' if k > 1 else ''}"


@dataclasses.dataclass(frozen=True)
class TaskVideo:
    """The rendered episodes of one task after ``0..K`` adaptation steps.

    Attributes:
        index: the task's index among the evaluation tasks.
        task: the task.
        episodes: ``[K + 1]`` episodes, one per step.
        fps: frames per second (the env's ``render_fps``, else 1 / dt, else 20).
    """

    index: int
    task: Task
    episodes: list[Episode]
    fps: float

    @property
    def returns(self) -> list[float]:
        """Each step's episode return."""
        return [e.total for e in self.episodes]

    def frames(self) -> list[np.ndarray]:
        """Grid frames: one panel per step, a header with step, task and running return."""
        labels = [step_text(k) for k in range(len(self.episodes))]
        return compose(self.episodes, labels, task_text(self.task))


def compose(
    episodes: Sequence[Episode], labels: Sequence[str], subtitle: str, columns: int = 4
) -> list[np.ndarray]:
    """One grid frame per time step of the longest episode: panel ``j`` shows
    ``episodes[j]`` under three lines, ``labels[j]``, ``subtitle`` and its running
    return; an episode
    that has ended keeps its last frame. Sizes are padded to multiples of 16 (video
    codecs' macroblocks)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=_FONT_SIZE)
    h, w = episodes[0].frames[0].shape[:2]
    cols = min(columns, len(episodes))
    rows = math.ceil(len(episodes) / cols)
    header = 3 * _LINE + 4
    cell_h = h + header
    height, width = _pad16(rows * cell_h), _pad16(cols * w)
    length = max(len(e.frames) for e in episodes)
    out = []
    for t in range(length):
        grid = np.full((height, width, 3), 255, dtype=np.uint8)
        texts = []
        for j, ep in enumerate(episodes):
            r, c = divmod(j, cols)
            s = min(t, len(ep.frames) - 1)
            frame = ep.frames[s]
            if frame.shape[:2] != (h, w):
                raise ValueError(f"frames differ in size: {frame.shape[:2]} vs {(h, w)}")
            grid[r * cell_h + header : (r + 1) * cell_h, c * w : (c + 1) * w] = frame
            ended = " (ended)" if t >= len(ep.frames) - 1 and t > 0 else ""
            lines = (labels[j], subtitle, f"return {ep.returns[s]:.2f}{ended}")
            texts += [((c * w + 4, r * cell_h + 2 + n * _LINE), line)
                      for n, line in enumerate(lines)]  # fmt: skip
        for c in range(1, cols):  # a thin rule between columns
            grid[:, c * w] = (200, 200, 200)
        image = Image.fromarray(grid)
        draw = ImageDraw.Draw(image)
        for xy, text in texts:
            draw.text(xy, text, fill=(20, 20, 20), font=font)
        out.append(np.asarray(image))
    return out


def _pad16(n: int) -> int:
    return -(-n // 16) * 16


def render_adaptation(
    env_id: str,
    env_kwargs: Mapping[str, Any],
    horizon: int,
    policy: Policy,
    step_params: Sequence[Mapping[str, torch.Tensor]],
    tasks: Sequence[Task],
    indices: Sequence[int],
    seeds: Sequence[int],
    size: int = PANEL_SIZE,
) -> list[TaskVideo]:
    """Render tasks ``indices`` of an adaptation curve after ``0..K`` steps.

    Args:
        env_id: the family; ``env_kwargs``/``horizon`` as the sampler used them.
        policy: the policy (its architecture; the parameters come from ``step_params``).
        step_params: ``[K + 1]`` parameters of the curve's sample calls (θ shared, or
            stacked ``[N, ...]`` per task), as :attr:`~maml_rl.evaluation.curve.Curve.params`.
        tasks: the curve's ``N`` tasks.
        indices: which of them to render.
        seeds: the curve's ``K + 1`` sampler seeds.
        size: panel width and height in pixels.

    Raises:
        RenderUnavailable: one line (no rgb_array mode, no GL backend for MuJoCo).
    """
    if len(step_params) != len(seeds):
        raise ValueError(f"need one parameter set per sampler seed, got {len(step_params)} "
                         f"and {len(seeds)}")  # fmt: skip
    env = make_render_env(env_id, env_kwargs, horizon, size)
    try:
        discrete = isinstance(env.action_space, gym.spaces.Discrete)
        space: Any = env.action_space
        noise_dim = int(space.n if discrete else space.shape[0])
        fps = env.metadata.get("render_fps") or 20
        videos = []
        for i in indices:
            episodes = []
            for params, seed in zip(step_params, seeds, strict=True):
                reset_seeds, noise = task_streams(int(seed), i, 1, horizon, noise_dim, discrete)
                episodes.append(
                    play_episode(env, policy, _row(params, i, policy), tasks[i],
                                 reset_seeds[0], noise[0], horizon)
                )  # fmt: skip
            videos.append(TaskVideo(i, tasks[i], episodes, float(fps)))
        return videos
    finally:
        env.close()


# -- outputs ----------------------------------------------------------------------------------


def mp4_available() -> bool:
    """Whether ``imageio-ffmpeg`` (and so an H.264 encoder) is installed."""
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return False
    return True


def write_video(frames: Sequence[np.ndarray], stem: Path, fps: float) -> Path:
    """``stem.mp4`` (imageio-ffmpeg installed) or ``stem.gif``; returns the file written."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    if mp4_available():
        import imageio_ffmpeg

        path = stem.with_name(stem.name + ".mp4")
        h, w = frames[0].shape[:2]
        writer = imageio_ffmpeg.write_frames(
            str(path), (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p", quality=7,
            macro_block_size=16, ffmpeg_log_level="error",
        )  # fmt: skip
        writer.send(None)  # start the generator
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        return path
    path = stem.with_name(stem.name + ".gif")
    path.write_bytes(encode_gif(frames, fps))
    return path


def write_task_videos(videos: Sequence[TaskVideo], folder: Path) -> list[Path]:
    """One file per task in ``folder`` (``<task>.mp4`` or ``.gif``); the paths."""
    return [write_video(v.frames(), folder / task_file_stem(v.index, v.task), v.fps)
            for v in videos]  # fmt: skip


def log_step_videos(
    videos: Sequence[TaskVideo],
    logger: TensorBoardLogger,
    step: int,
    thumbnail: int = 160,
    max_frames: int = 100,
) -> list[str]:
    """TensorBoard ``eval/video_step_<k>``: the episodes after ``k`` steps of every video
    task side by side; the tags written.

    To keep event files small (a GIF does not compress a moving floor well) the panels
    are scaled to ``thumbnail`` pixels and every ``s``-th time step is kept, ``s`` the
    smallest stride leaving at most ``max_frames`` frames (played at ``fps / s``); the
    last frame, with the final returns, is always kept.
    """
    from PIL import Image

    def small(frame: np.ndarray) -> np.ndarray:
        if frame.shape[0] == thumbnail and frame.shape[1] == thumbnail:
            return frame
        image = Image.fromarray(frame).resize((thumbnail, thumbnail), Image.Resampling.BILINEAR)
        return np.asarray(image)

    tags = []
    for k in range(len(videos[0].episodes)):
        episodes = [
            Episode([small(f) for f in v.episodes[k].frames], v.episodes[k].returns) for v in videos
        ]
        frames = compose(episodes, [task_text(v.task) for v in videos], step_text(k), columns=8)
        stride = -(-len(frames) // max_frames)
        kept = frames[::stride]
        if (len(frames) - 1) % stride:
            kept.append(frames[-1])
        tag = f"eval/video_step_{k}"
        logger.write_video(tag, kept, step, videos[0].fps / stride)
        tags.append(tag)
    return tags


def read_video(path: str | Path) -> list[np.ndarray]:
    """The frames ``[H, W, 3]`` uint8 of an ``.mp4`` (imageio-ffmpeg) or ``.gif`` (Pillow)."""
    path = Path(path)
    if path.suffix == ".mp4":
        import imageio_ffmpeg

        reader = imageio_ffmpeg.read_frames(str(path))
        meta = reader.__next__()
        w, h = meta["size"]
        return [np.frombuffer(f, dtype=np.uint8).reshape(h, w, 3).copy() for f in reader]
    from PIL import Image, ImageSequence

    with Image.open(path) as image:
        return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(image)]
