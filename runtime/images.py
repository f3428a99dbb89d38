"""Reading and writing images.

Reading checks what users get wrong (unreadable files, empty or huge images) and says so;
writing goes through a temp file and a rename, so a failed run never leaves half a file.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from impasto.runtime.atomic import atomic_output
from impasto.runtime.config import DEFAULT_MAX_SIDE
from impasto.runtime.errors import InvalidArgument


class ImageInputError(InvalidArgument):
    """An input image that cannot be used; the message names the file and the limit."""


EXAMPLES = ("astronaut", "coffee", "chelsea", "rocket")


def load_example(name: str) -> torch.Tensor:
    """A sample photo shipped inside scikit-image (``example:astronaut`` on the command line)."""
    if name not in EXAMPLES:
        raise ImageInputError(f"unknown example image '{name}': choose one of {', '.join(EXAMPLES)}")
    from skimage import data

    return from_uint8(getattr(data, name)())


def load_image(path: str | Path, *, max_side: int = DEFAULT_MAX_SIDE, what: str = "image") -> torch.Tensor:
    """An RGB image file as a (3, H, W) float tensor in [0, 1] (alpha is composited on white).

    ``example:NAME`` loads one of scikit-image's sample photos instead (see ``EXAMPLES``).
    """
    if isinstance(path, str) and path.startswith("example:"):
        return load_example(path.split(":", 1)[1])
    path = Path(path)
    if not path.is_file():
        raise ImageInputError(f"{what} '{path}' does not exist")
    return decode_image(path.read_bytes(), max_side=max_side, what=f"{what} '{path}'")


def decode_image(data: bytes, *, max_side: int = DEFAULT_MAX_SIDE, what: str = "image") -> torch.Tensor:
    """Encoded image bytes (PNG, JPEG, ...) as a (3, H, W) float tensor in [0, 1].

    Alpha is composited on white. The size is checked from the header before the pixels
    are decoded, so a huge image is refused without allocating it.
    """
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our own limit (image_size), with a clearer message
    try:
        image_size(data, max_side=max_side, what=what)
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                im = Image.alpha_composite(white, rgba)
            array = np.array(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, ImageInputError):
            raise
        raise ImageInputError(f"{what} is not a readable image ({e.__class__.__name__})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    return from_uint8(array)


def decode_rgba(data: bytes, *, max_side: int = DEFAULT_MAX_SIDE, what: str = "image") -> torch.Tensor:
    """Encoded image bytes as a (4, H, W) RGBA float tensor in [0, 1] (alpha kept: colour hints)."""
    image_size(data, max_side=max_side, what=what)
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(io.BytesIO(data)) as im:
            array = np.array(im.convert("RGBA"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageInputError(f"{what} is not a readable image ({e.__class__.__name__})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    return from_uint8(array)


def image_size(data: bytes, *, max_side: int = DEFAULT_MAX_SIDE, what: str = "image") -> tuple[int, int]:
    """(width, height) of encoded image bytes, read from the header and checked against the limit."""
    if not data:
        raise ImageInputError(f"{what} is empty (0 bytes)")
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Exception as e:  # PIL raises many types for a broken header
        raise ImageInputError(f"{what} is not a readable image ({e.__class__.__name__})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    if w == 0 or h == 0:
        raise ImageInputError(f"{what} is empty ({w}x{h})")
    if max(w, h) > max_side:
        raise ImageInputError(f"{what} is {w}x{h}; the limit is {max_side} px a side")
    return w, h


def encode_png(image: torch.Tensor | np.ndarray) -> bytes:
    """(3, H, W) float in [0, 1] (or (H, W, C) uint8) as PNG file bytes."""
    array = image if isinstance(image, np.ndarray) else to_uint8(image)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def load_mask(path: str | Path, size: tuple[int, int], *, max_side: int = DEFAULT_MAX_SIDE) -> torch.Tensor:
    """A mask file as a (1, H, W) tensor in [0, 1] (white = paint here); must be ``size`` = (H, W)."""
    mask = load_image(path, max_side=max_side, what="mask").mean(0, keepdim=True)
    if tuple(mask.shape[1:]) != tuple(size):
        raise ImageInputError(
            f"mask '{path}' is {mask.shape[2]}x{mask.shape[1]}, the image is {size[1]}x{size[0]}: they must match"
        )
    return mask


def resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(C, H, W) -> (C, height, width), bilinear with antialiasing; the same tensor if already that size."""
    if tuple(image.shape[1:]) == (height, width):
        return image
    return torch.nn.functional.interpolate(
        image.unsqueeze(0), size=(height, width), mode="bilinear", antialias=True, align_corners=False
    )[0]


def from_uint8(array: np.ndarray) -> torch.Tensor:
    """(H, W, C) uint8 -> (C, H, W) float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float() / 255.0


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (H, W, 3) float in [0, 1] -> (H, W, 3) uint8, rounded."""
    if image.dim() == 3 and image.shape[0] in (1, 3, 4):
        image = image.permute(1, 2, 0)
    return (image.detach().float().cpu().clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


def save_image(image: torch.Tensor | np.ndarray, path: str | Path) -> Path:
    """Write ``image`` to ``path`` (format from the suffix); never leaves a half-written file."""
    path = Path(path)
    array = image if isinstance(image, np.ndarray) else to_uint8(image)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot write '{path.name}': unknown image type '{path.suffix}' (use .png or .jpg)")
    with atomic_output(path) as f:
        Image.fromarray(array).save(f, format=fmt)
    return path
