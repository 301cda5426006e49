"""Videos of adaptation: Navigation2D's NumPy renderer, ``evaluate --video`` (files,
TensorBoard, the very episodes the curve measured), HalfCheetah where MuJoCo can render
offscreen, the trainer's ``video_every``, and the one-line fallbacks.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from maml_rl.cli import main
from maml_rl.config import load_config
from maml_rl.envs.navigation import GoalTask2D, Navigation2DEnv, _to_pixels
from maml_rl.evaluation import evaluate
from maml_rl.evaluation.video import (
    GL_PACKAGES,
    RenderUnavailable,
    choose_gl_backend,
    mp4_available,
    read_video,
)
from maml_rl.logger import InMemoryLogger
from maml_rl.trainer import Trainer

from conftest import TINY, hand_saved_run, quick_eval, tiny_eval_config

STEPS = 5  # episode length of the video tests
HEADER = 3 * 15 + 4  # the video module's header above each panel


def _pad16(n: int) -> int:
    return -(-n // 16) * 16


def _images(logdir: Path) -> dict[str, list[Any]]:
    acc = EventAccumulator(str(logdir), size_guidance={"images": 0})
    acc.Reload()
    return {tag: acc.Images(tag) for tag in acc.Tags()["images"]}


def _gif_frames(data: bytes) -> list[np.ndarray]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "GIF"
        frames = []
        for n in range(image.n_frames):
            image.seek(n)
            frames.append(np.asarray(image.convert("RGB")))
        return frames


# -- Navigation2D's renderer ------------------------------------------------------------------


def test_navigation_renders_goal_point_and_path() -> None:
    env = Navigation2DEnv(
        GoalTask2D(goal=(0.3, -0.4)), render_mode="rgb_array", width=96, height=80
    )
    env.reset(seed=0)
    first = env.render()
    assert first is not None and first.shape == (80, 96, 3) and first.dtype == np.uint8

    def pixel(frame: np.ndarray, xy: tuple[float, float]) -> tuple[int, ...]:
        c, r = np.rint(_to_pixels(np.array(xy), 96, 80)).astype(int)
        return tuple(int(v) for v in frame[r, c])

    assert pixel(first, (0.3, -0.4)) == (40, 160, 60)  # the goal
    assert pixel(first, (0.0, 0.0)) == (215, 50, 40)  # the point at the origin
    for _ in range(3):
        env.step(np.array([1.0, 0.0], dtype=np.float32))
    moved = env.render()
    assert moved is not None
    assert pixel(moved, (0.3, 0.0)) == (215, 50, 40)  # the point after three steps of 0.1
    assert pixel(moved, (0.15, 0.0)) == (60, 110, 220)  # the path behind it
    assert pixel(moved, (0.0, 0.0)) == (60, 110, 220)
    env.reset(seed=0)
    again = env.render()
    assert again is not None and np.array_equal(again, first)  # reset clears the path


def test_navigation_rendering_does_not_change_the_env() -> None:
    plain = Navigation2DEnv(GoalTask2D(goal=(0.2, 0.1)))
    drawn = Navigation2DEnv(GoalTask2D(goal=(0.2, 0.1)), render_mode="rgb_array")
    with pytest.warns(UserWarning, match="render_mode"):
        assert plain.render() is None  # no render mode: nothing drawn
    plain.reset(seed=1), drawn.reset(seed=1)
    rng = np.random.default_rng(0)
    for _ in range(10):
        a = rng.uniform(-1, 1, size=2).astype(np.float32)
        out_plain, out_drawn = plain.step(a), drawn.step(a)
        assert np.array_equal(out_plain[0], out_drawn[0]) and out_plain[1:4] == out_drawn[1:4]
        drawn.render()
    with pytest.raises(ValueError, match="rgb_array"):
        Navigation2DEnv(render_mode="human")


# -- evaluate --video on Navigation2D ---------------------------------------------------------


@pytest.fixture(scope="module")
def nav_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("video")
    # One episode per step, so each task's mean return is the one episode the video shows.
    settings = quick_eval(episodes_per_step=1, video_tasks=2)
    run = tmp_path_factory.mktemp("nav5") / "run"
    config = tiny_eval_config(run.parent, **{"env.max_episode_steps": STEPS})
    hand_saved_run(run, config)
    return evaluate([run], settings, out), out


def test_video_shows_the_evaluated_episodes(nav_video: tuple[dict[str, Any], Path]) -> None:
    result, out = nav_video
    (run,) = result["runs"]
    videos = run["videos"]
    assert videos["tasks"] == [0, 1] and "skipped" not in videos
    # Panel k of task i is episode 0 of the evaluation's step-k sample call, played with
    # the adapted parameters of that step: its return is the one the curve recorded.
    per_task = np.asarray(run["curve"]["per_task_mean"])  # [K + 1, N]
    np.testing.assert_allclose(np.asarray(videos["returns"]).T, per_task[:, :2], rtol=1e-5)

    suffix = ".mp4" if mp4_available() else ".gif"
    assert len(videos["files"]) == 2
    for file in videos["files"]:
        assert file.startswith("videos/task") and file.endswith(suffix)
        frames = read_video(out / file)
        # One grid frame per time step (the reset, then 5 steps), three panels (K = 2).
        assert len(frames) == STEPS + 1
        assert frames[0].shape == (_pad16(240 + HEADER), _pad16(3 * 240), 3)
        last = frames[-1].astype(int)
        panels = [last[HEADER:, j * 240 + 1 : (j + 1) * 240] for j in range(3)]
        # The point went elsewhere before and after adaptation (lossy codec: a margin).
        assert np.abs(panels[0] - panels[1]).max() > 100
        assert np.abs(panels[0] - panels[2]).max() > 100
        assert not np.array_equal(frames[0], frames[-1])  # the paths grow


def test_video_tensorboard_summaries(nav_video: tuple[dict[str, Any], Path]) -> None:
    result, out = nav_video
    images = _images(out / "tensorboard" / "run")
    assert sorted(images) == ["eval/video_step_0", "eval/video_step_1", "eval/video_step_2"]
    assert result["runs"][0]["videos"]["tensorboard_tags"] == sorted(images)
    for tag, (event,) in images.items():
        assert event.step == result["runs"][0]["env_steps"]
        frames = _gif_frames(event.encoded_image_string)
        # The two video tasks side by side, one GIF frame per time step.
        assert len(frames) == STEPS + 1, tag
        assert frames[0].shape == (event.height, event.width, 3)
        assert event.width == _pad16(2 * 160)


def test_cli_video_flags(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "e"
    args = ["evaluate", str(tiny_run), "--num-tasks", "2", "--adapt-steps", "1"]
    assert main([*args, "--episodes-per-step", "1", "--no-progress", "--out", str(out),
                 "--video-tasks", "1"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "videos (TensorBoard: eval/video_step_<k>" in printed
    assert len(list((out / "videos").iterdir())) == 1
    assert main([*args, "--video", "--video-tasks", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "maml-rl evaluate: error: --video-tasks must be ≥ 1, got 0"


def test_family_without_rgb_array_skips_videos_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = load_config(None, ["env.id=MetaRL/Bandit-5arm-v0", "env.max_episode_steps=3",
                                "policy.hidden_sizes=[4]"])  # fmt: skip
    run = hand_saved_run(tmp_path / "bandit", config)
    result = evaluate([run], quick_eval(num_tasks=2, adapt_steps=1, video_tasks=1), tmp_path / "e")
    skipped = result["runs"][0]["videos"]["skipped"]
    assert "has no render_mode 'rgb_array'" in skipped and "\n" not in skipped
    assert capsys.readouterr().err.strip() == f"maml-rl: no videos: {skipped}"
    assert (tmp_path / "e" / "eval.json").is_file()  # the evaluation itself went on


# -- HalfCheetah, where MuJoCo renders offscreen ----------------------------------------------


def test_halfcheetah_video(tmp_path: Path) -> None:
    try:
        backend = choose_gl_backend()
    except RenderUnavailable as exc:
        pytest.skip(f"no offscreen OpenGL for MuJoCo: {exc}")
    config = load_config(
        None,
        ["env.id=MetaRL/HalfCheetahVel-v0", f"env.max_episode_steps={STEPS}",
         "policy.hidden_sizes=[8, 8]"],
    )  # fmt: skip
    run = hand_saved_run(tmp_path / "cheetah", config)
    settings = quick_eval(num_tasks=2, adapt_steps=1, episodes_per_step=1, video_tasks=1)
    result = evaluate([run], settings, tmp_path / "e")
    videos = result["runs"][0]["videos"]
    assert "skipped" not in videos, f"MUJOCO_GL={backend}: {videos}"
    per_task = np.asarray(result["runs"][0]["curve"]["per_task_mean"])
    np.testing.assert_allclose(np.asarray(videos["returns"])[0], per_task[:, 0], rtol=1e-4)
    (file,) = videos["files"]
    frames = read_video(tmp_path / "e" / file)
    assert len(frames) == STEPS + 1 and frames[0].shape == (_pad16(240 + HEADER), 480, 3)
    scene = frames[-1][HEADER:].astype(int)
    assert scene.std() > 20  # a rendered scene (floor, body), not a blank frame
    before, after = scene[:, 1:240], scene[:, 241:480]
    assert np.abs(before - after).mean() > 1  # the body moved differently
    assert sorted(_images(tmp_path / "e" / "tensorboard" / "cheetah")) == [
        "eval/video_step_0",
        "eval/video_step_1",
    ]


# -- the GL backend ---------------------------------------------------------------------------


def test_gl_backend_user_choice_and_one_line_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert choose_gl_backend() == "osmesa"  # the user's choice, not probed
    monkeypatch.setenv("MUJOCO_GL", "disabled")
    with pytest.raises(RenderUnavailable, match="MUJOCO_GL='disabled' cannot render"):
        choose_gl_backend()
    monkeypatch.delenv("MUJOCO_GL")
    with pytest.raises(RenderUnavailable) as info:
        choose_gl_backend(backends=("nosuchbackend",))
    message = str(info.value)
    assert "\n" not in message and GL_PACKAGES in message
    assert "MUJOCO_GL" not in os.environ  # nothing chosen


# -- the trainer's video_every ----------------------------------------------------------------


def _train(tmp: Path, name: str, *overrides: str) -> tuple[Path, list[dict[str, float]]]:
    config = load_config(None, [*TINY, "num_batches=2", f"logdir={tmp}", f"run_name={name}",
                                *overrides])  # fmt: skip
    memory = InMemoryLogger()
    trainer = Trainer(config, console=False, loggers=[memory])
    trainer.train()
    return trainer.run_dir, [
        {k: v for k, v in m.items() if not k.startswith("time/")} for _, m in memory.records
    ]


def test_trainer_logs_videos_and_trains_the_same(tmp_path: Path) -> None:
    plain_dir, plain = _train(tmp_path, "plain")
    video_dir, with_video = _train(tmp_path, "video", "video_every=1", "video_tasks=2")
    assert with_video == plain  # videos draw on the evaluation's streams only
    images = _images(video_dir)
    assert sorted(images) == ["eval/video_step_0", "eval/video_step_1"]  # num_adapt_steps = 1
    steps = [int(r["env_steps"]) for r in _jsonl(video_dir)]
    for events in images.values():
        assert [e.step for e in events] == steps  # after each iteration, at its env step
    assert _images(plain_dir) == {}


def _jsonl(run_dir: Path) -> list[dict[str, Any]]:
    from maml_rl.logger import read_jsonl

    return read_jsonl(run_dir / "metrics.jsonl")


def test_video_every_is_validated() -> None:
    with pytest.raises(ValueError, match="video_every"):
        load_config(None, ["video_every=-1"])
    with pytest.raises(ValueError, match="video_tasks"):
        load_config(None, ["video_tasks=0"])
    assert load_config(None).video_every == 0  # off by default


def test_tensorboard_videos_keep_at_most_max_frames(tmp_path: Path) -> None:
    from maml_rl.evaluation.video import Episode, TaskVideo, log_step_videos
    from maml_rl.logger import TensorBoardLogger

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(201)]
    video = TaskVideo(0, GoalTask2D(goal=(0.1, 0.2)), [Episode(frames, list(range(201)))], 20.0)
    logger = TensorBoardLogger(tmp_path)
    try:
        assert log_step_videos([video], logger, step=7, thumbnail=32, max_frames=50) == [
            "eval/video_step_0"
        ]
    finally:
        logger.close()
    (event,) = _images(tmp_path)["eval/video_step_0"]
    gif = _gif_frames(event.encoded_image_string)
    # Stride 5 keeps steps 0, 5, ..., 200: 41 frames, the last one the final step.
    assert len(gif) == 41 and event.step == 7
    last_panel = gif[-1][HEADER : HEADER + 32, :32].astype(int)
    assert np.abs(last_panel - frames[200].astype(int)).mean() < 20  # GIF palette rounding


@pytest.mark.slow
@pytest.mark.skipif(bool(os.environ.get("DISPLAY")), reason="glfw works where there is a display")
def test_failing_gl_backend_is_one_line(tmp_path: Path) -> None:
    """A backend that cannot render (glfw without a display) costs the videos, not the
    evaluation: one line on stderr, in a fresh process (a failed GL start binds PyOpenGL)."""
    config = load_config(
        None,
        ["env.id=MetaRL/HalfCheetahVel-v0", "env.max_episode_steps=3",
         "policy.hidden_sizes=[4]"],
    )  # fmt: skip
    run = hand_saved_run(tmp_path / "cheetah", config)
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    proc = subprocess.run(
        [sys.executable, "-m", "maml_rl.cli", "evaluate", str(run), "--num-tasks", "1",
         "--adapt-steps", "1", "--episodes-per-step", "1", "--video", "--no-progress"],
        capture_output=True, text=True, timeout=300, env={**env, "MUJOCO_GL": "glfw"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("maml-rl: no videos: MuJoCo cannot render with MUJOCO_GL=glfw: ")
    assert (run / "eval" / "eval.json").is_file() and not (run / "eval" / "videos").exists()
