"""Reading and writing images.

Reading checks what users get wrong (unreadable files, empty or huge images, formats other
than PNG, JPEG and WebP) and says so. Every check that bounds memory (side, pixel count,
format, mode) is made from the file's header before a pixel is decoded; decoding applies the
EXIF orientation, so sizes from the header and decoded pixels agree. Writing goes through a
temp file and a rename, so a failed run never leaves half a file.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

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
    if path.is_dir():
        raise ImageInputError(f"{what} '{path}' is a folder, not an image file")
    if not path.is_file():
        raise ImageInputError(f"{what} '{path}' does not exist")
    return decode_image(path.read_bytes(), max_side=max_side, what=f"{what} '{path}'")


# PIL's name -> the name users read (PIL opens many camera JPEGs, with a preview image inside, as MPO)
ACCEPTED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WebP"}
ACCEPTED_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I;16B", "I;16L", "I")
ACCEPTED = "PNG, JPEG or WebP, 8- or 16-bit grey, RGB or RGBA"
MAX_PIXELS = 64 << 20  # 8192 x 8192: about 1 GB decoded as float RGB; larger images are refused unread

# EXIF orientation -> the transposition that shows the picture upright (as PIL.ImageOps.exif_transpose)
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


def pixel_limit(max_side: int) -> int:
    """The most pixels an image may have: ``max_side`` squared, and never over :data:`MAX_PIXELS`."""
    return min(max_side * max_side, MAX_PIXELS)


def _megapixels(limit: int) -> str:
    side = math.isqrt(limit)
    return f"{limit / 1e6:.1f} megapixels ({side}x{side})"


@dataclass(frozen=True)
class Header:
    """What an image file says about itself before any pixel is decoded."""

    format: str
    mode: str
    width: int  # as shown, after the EXIF orientation (a portrait photo stored on its side is taller than wide)
    height: int
    orientation: int  # EXIF Orientation, 1 (as stored) to 8


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation read from the header alone (a PNG's eXIf chunk after the pixels is not looked at)."""
    if im.format == "PNG" and "exif" not in im.info:
        return 1  # PIL's getexif() would decode the whole PNG to look for it
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block: show the picture as stored
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def _open(data: bytes, max_side: int, what: str, max_pixels: int | None = None) -> tuple[Image.Image, Header]:
    """The image opened (header read, pixels not decoded) and checked: format, mode, size and pixel count."""
    if not data:
        raise ImageInputError(f"{what} is empty (0 bytes)")
    limit = max_pixels or pixel_limit(max_side)
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:  # PIL's own guard, at open: far over ours
        declared = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(declared[1]) / 1e6:.1f}" if declared else f"over {2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f}"
        raise ImageInputError(f"{what} declares {size} megapixels; the limit is {_megapixels(limit)}") from None
    except Exception as e:  # PIL raises many types for a broken header
        raise ImageInputError(f"{what} is not a readable image ({e.__class__.__name__}); use {ACCEPTED}") from None
    if im.format not in ACCEPTED_FORMATS or im.mode not in ACCEPTED_MODES:
        im.close()
        raise ImageInputError(f"{what} is a {im.format} image of mode {im.mode}; accepted: {ACCEPTED}")
    orientation = _orientation(im)
    w, h = im.size
    if orientation >= 5:  # 5 to 8 turn the picture by a quarter
        w, h = h, w
    if w == 0 or h == 0:
        im.close()
        raise ImageInputError(f"{what} is empty ({w}x{h})")
    if max(w, h) > max_side:
        im.close()
        raise ImageInputError(f"{what} is {w}x{h}; the limit is {max_side} px a side")
    if w * h > limit:
        im.close()
        raise ImageInputError(f"{what} is {w}x{h} ({w * h / 1e6:.1f} megapixels); the limit is {_megapixels(limit)}")
    return im, Header(ACCEPTED_FORMATS[im.format], im.mode, w, h, orientation)


def read_header(data: bytes, *, max_side: int = DEFAULT_MAX_SIDE, what: str = "image") -> Header:
    """Format, mode and shown size of encoded image bytes, checked against the limits, without decoding."""
    im, header = _open(data, max_side, what)
    im.close()
    return header


def _decode(data: bytes, max_side: int, what: str, mode: str, max_pixels: int | None = None) -> np.ndarray:
    """(H, W, C) uint8 pixels in ``mode`` (RGB: alpha composited on white; RGBA), upright.

    The header is checked first, so only images within the limits are ever decoded.
    """
    im, header = _open(data, max_side, what, max_pixels)
    try:
        with im:
            im.load()
            if im.mode.startswith("I"):  # 16-bit grey: keep the top 8 bits (convert() would clip at 255)
                im = Image.fromarray((np.asarray(im, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8))
            if header.orientation in _TRANSPOSE:
                im = im.transpose(_TRANSPOSE[header.orientation])
            if mode == "RGB" and (im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)):
                rgba = im.convert("RGBA")
                im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            array = np.array(im.convert(mode))
    except MemoryError:
        raise
    except Exception as e:  # a broken body: PIL's decoders raise OSError, EOFError, SyntaxError, struct.error, ...
        raise ImageInputError(f"{what} is not a readable image ({e.__class__.__name__}: {e})") from None
    return array


def decode_image(data: bytes, *, max_side: int = DEFAULT_MAX_SIDE, what: str = "image",
                 max_pixels: int | None = None) -> torch.Tensor:
    """Encoded image bytes (PNG, JPEG, WebP) as an upright (3, H, W) float tensor in [0, 1].

    Alpha is composited on white; the EXIF orientation is applied (a portrait photo comes out
    upright). Format, mode, size and pixel count are checked from the header before the pixels
    are decoded, so a small file that declares a huge image is refused without allocating it.
    ``max_pixels`` overrides the pixel limit (:func:`pixel_limit`), for images impasto made itself.
    """
    return from_uint8(_decode(data, max_side, what, "RGB", max_pixels))


def decode_rgba(data: bytes, *, max_side: int = DEFAULT_MAX_SIDE, what: str = "image") -> torch.Tensor:
    """Encoded image bytes as an upright (4, H, W) RGBA float tensor in [0, 1] (alpha kept: colour hints)."""
    return from_uint8(_decode(data, max_side, what, "RGBA"))


def image_size(data: bytes, *, max_side: int = DEFAULT_MAX_SIDE, what: str = "image") -> tuple[int, int]:
    """(width, height) of encoded image bytes as shown (EXIF orientation applied), read from the
    header and checked against the limits (format, mode, side, pixels)."""
    header = read_header(data, max_side=max_side, what=what)
    return header.width, header.height


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
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div_(255.0)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (H, W, 3) float in [0, 1] -> (H, W, 3) uint8, rounded."""
    if image.dim() == 3 and image.shape[0] in (1, 3, 4):
        image = image.permute(1, 2, 0)
    return (image.detach().float().cpu().clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


NO_ALPHA = ("JPEG", "BMP", "PPM")  # formats PIL writes without an alpha channel


def save_image(image: torch.Tensor | np.ndarray, path: str | Path) -> Path:
    """Write ``image`` to ``path`` (format from the suffix); never leaves a half-written file."""
    path = Path(path)
    array = image if isinstance(image, np.ndarray) else to_uint8(image)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot write '{path.name}': unknown image type '{path.suffix}' (use .png or .jpg)")
    picture = Image.fromarray(array)
    if picture.mode in ("RGBA", "LA") and fmt in NO_ALPHA:  # a transparent layer saved as JPEG: on white, as shown
        white = Image.new("RGBA", picture.size, (255, 255, 255, 255))
        picture = Image.alpha_composite(white, picture.convert("RGBA")).convert("RGB")
    with atomic_output(path) as f:
        picture.save(f, format=fmt)
    return path
