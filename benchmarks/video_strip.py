"""A still strip of an adaptation video: its grid frames at a few time steps, stacked.

    maml-rl evaluate RUN --adapt-steps 3 --video --video-tasks 3
    python benchmarks/video_strip.py RUN/eval/videos/task0_velocity_1.23.mp4 \\
        --times 20,100,200 --out docs/halfcheetah_vel_adaptation.png

Each row is the video's frame after ``t`` steps (every panel: before adaptation, after
1, 2, … steps, with its running return), labelled with ``t``. The PNG is written with a
256-colour palette to stay small. Prints the file's size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from maml_rl.evaluation.video import read_video


def strip(frames: list[np.ndarray], times: list[int], scale: float) -> Image.Image:
    """Rows of ``frames[t]`` for each ``t`` (a frame per time step, the reset first),
    each under a ``t = …`` band."""
    font = ImageFont.load_default(size=13)
    band = 18
    rows = []
    for t in times:
        if not 0 <= t < len(frames):
            raise SystemExit(f"--times: {t} is not a time step of the video (0..{len(frames) - 1})")
        frame = Image.fromarray(frames[t])
        if scale != 1.0:
            size = (round(frame.width * scale), round(frame.height * scale))
            frame = frame.resize(size, Image.Resampling.LANCZOS)
        row = Image.new("RGB", (frame.width, frame.height + band), (255, 255, 255))
        ImageDraw.Draw(row).text((4, 2), f"t = {t} steps", fill=(90, 90, 90), font=font)
        row.paste(frame, (0, band))
        rows.append(row)
    out = Image.new("RGB", (rows[0].width, sum(r.height for r in rows)), (255, 255, 255))
    y = 0
    for row in rows:
        out.paste(row, (0, y))
        y += row.height
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", help="an .mp4 or .gif written by maml-rl evaluate --video")
    parser.add_argument("--times", default="20,100,200", help="time steps to show (20,100,200)")
    parser.add_argument("--scale", type=float, default=1.0, help="resize factor (1)")
    parser.add_argument("--out", required=True, help="the PNG to write")
    args = parser.parse_args()
    times = [int(t) for t in args.times.split(",")]
    image = strip(read_video(args.video), times, args.scale)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(f"{out}: {image.width} × {image.height} px, {out.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
