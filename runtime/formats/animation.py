"""Animations of a painting being laid down, stroke by stroke (GIF; MP4 with imageio-ffmpeg)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import torch
from PIL import Image

from impasto.runtime.atomic import atomic_output
from impasto.runtime.images import resize, to_uint8
from impasto.train.brushes import get_brush
from impasto.train.brushes.canvas import blank_canvas, composite


def painting_frames(
    brush: str,
    strokes: torch.Tensor,
    height: int,
    width: int,
    background=(1.0, 1.0, 1.0),
    *,
    frames: int = 60,
) -> list[torch.Tensor]:
    """``frames`` canvases: the strokes composited in order, about N/frames more in each."""
    b = get_brush(brush)
    canvas = blank_canvas(height, width, background)
    n = strokes.shape[0]
    per = max(1, math.ceil(n / max(1, frames)))
    out = [canvas.clone()]
    for i in range(0, n, per):
        composite(canvas, b, strokes[i : i + per])
        out.append(canvas.clone())
    return out


def _frames(brush, strokes, height, width, background, frames, max_side, seconds):
    """uint8 frames at most ``max_side`` px a side, and the frame rate for ``seconds`` of animation."""
    scale = min(1.0, max_side / max(height, width))
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    if isinstance(background, torch.Tensor):
        background = resize(background, h, w)
    shots = painting_frames(brush, strokes, h, w, background, frames=frames)
    images = [to_uint8(f) for f in shots]
    return images, max(1.0, len(images) / seconds)


def animation_gif(
    brush: str,
    strokes: torch.Tensor,
    height: int,
    width: int,
    background=(1.0, 1.0, 1.0),
    *,
    frames: int = 60,
    max_side: int = 512,
    seconds: float = 4.0,
) -> bytes:
    """The painting process as GIF file bytes; the last frame is held for a second."""
    images, fps = _frames(brush, strokes, height, width, background, frames, max_side, seconds)
    pil = [Image.fromarray(a).convert("P", palette=Image.Palette.ADAPTIVE, colors=255) for a in images]
    durations = [round(1000 / fps)] * (len(pil) - 1) + [1000]
    buffer = io.BytesIO()
    pil[0].save(buffer, format="GIF", save_all=True, append_images=pil[1:], duration=durations, loop=0)
    return buffer.getvalue()


def save_gif_as(gif: bytes, path: Path) -> Path:
    """Write an animation made by :func:`animation_gif` to ``path``: as it is (.gif) or re-encoded (.mp4)."""
    suffix = path.suffix.lower()
    if suffix == ".gif":
        with atomic_output(path) as f:
            f.write(gif)
        return path
    if suffix != ".mp4":
        raise ValueError(f"cannot write animation '{path.name}': use .gif or .mp4")
    try:
        import imageio.v3 as iio
        import imageio_ffmpeg  # noqa: F401  (the plugin that writes MP4)
    except ImportError:
        raise ValueError("writing .mp4 needs imageio-ffmpeg (pip install imageio-ffmpeg); or use .gif") from None
    import numpy as np

    with Image.open(io.BytesIO(gif)) as im:
        durations, frames = [], []
        for i in range(im.n_frames):
            im.seek(i)
            frames.append(np.asarray(im.convert("RGB")))
            durations.append(im.info.get("duration", 66))
    fps = max(1.0, 1000 / max(1, durations[0]))
    frames_np = np.stack(frames + [frames[-1]] * round(fps))  # hold the end a second
    even = frames_np[:, : frames_np.shape[1] // 2 * 2, : frames_np.shape[2] // 2 * 2]  # yuv420 needs even sides
    with atomic_output(path) as f:
        f.write(iio.imwrite("<bytes>", even, extension=".mp4", fps=fps, codec="libx264"))
    return path
