"""Blender images to and from the wire: pixels out as raw float RGBA, PNG results in.

Blender keeps pixels as float RGBA, bottom row first. Whether they are linear light or
sRGB-encoded depends on the image: float buffers in a linear colour space are linear,
8-bit images are sRGB-encoded. The server is told which (``transfer``) and converts; results
come back as sRGB PNG and are converted for images that live in linear space.
"""

from __future__ import annotations

import os
import tempfile

import bpy
import numpy as np

from .impasto_http import RawImage

LINEAR_SPACES = ("Linear Rec.709", "Linear", "Linear CIE-XYZ E", "Linear CIE-XYZ D65", "Linear FilmLight E-Gamut",
                 "Linear Rec.2020", "ACES2065-1", "ACEScg")


def is_linear(image: bpy.types.Image) -> bool:
    """Whether ``image.pixels`` hold linear light (float buffers in a linear colour space)."""
    return bool(image.is_float) and image.colorspace_settings.name in LINEAR_SPACES


def pixels(image: bpy.types.Image) -> np.ndarray:
    """(H, W, 4) float32 RGBA, bottom row first, as Blender stores it."""
    w, h = image.size
    if w == 0 or h == 0:
        raise ValueError(f"image '{image.name}' has no pixels (is its file missing?)")
    buffer = np.empty(w * h * 4, dtype=np.float32)
    image.pixels.foreach_get(buffer)
    return buffer.reshape(h, w, 4)


def raw_image(image: bpy.types.Image) -> RawImage:
    """An image as it leaves Blender: float32 RGBA, bottom-up rows, linear or sRGB as it is."""
    w, h = image.size
    return RawImage(pixels(image).tobytes(), w, h, 4, dtype="DTYPE_F32", bottom_up=True,
                    transfer="TRANSFER_LINEAR" if is_linear(image) else "TRANSFER_SRGB")


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def load_png(png: bytes, name: str) -> bpy.types.Image:
    """A new image from PNG bytes, packed into the .blend (no file left behind)."""
    fd, path = tempfile.mkstemp(suffix=".png", prefix="impasto-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(png)
        image = bpy.data.images.load(path)
        image.pack()
        image.filepath_raw = ""
        image.name = name
    finally:
        os.unlink(path)
    return image


def replace_pixels(target: bpy.types.Image, png: bytes) -> None:
    """Write a PNG result into ``target`` in place, in the target's colour space.

    A result of another size (an op whose output size is an option) is scaled to the target's.
    """
    result = load_png(png, "impasto result")
    try:
        if tuple(result.size) != tuple(target.size):
            if 0 in tuple(target.size):
                raise ValueError(f"image '{target.name}' has no pixels")
            result.scale(*target.size)
        values = pixels(result)
        if is_linear(target):
            values[..., :3] = srgb_to_linear(values[..., :3])
        target.pixels.foreach_set(values.ravel())
        target.update()
    finally:
        bpy.data.images.remove(result)


def material_with(image: bpy.types.Image, name: str) -> bpy.types.Material:
    """A material whose Principled BSDF takes its base colour from ``image``."""
    material = bpy.data.materials.new(name)
    material.use_nodes = True
    nodes = material.node_tree.nodes
    bsdf = nodes.get("Principled BSDF")
    texture = nodes.new("ShaderNodeTexImage")
    texture.image = image
    texture.location = (-350, 300)
    material.node_tree.links.new(texture.outputs["Color"], bsdf.inputs["Base Color"])
    return material
