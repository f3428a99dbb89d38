"""SketchyGAN's diversity loss: outputs from different noise should differ in proportion to the noise distance.

Chen & Hays (CVPR 2018) run the generator twice on the same sketch and class with two noise
codes ``z_a``, ``z_b`` and minimise, for each sample ``i`` of the batch,

    L_div = - mean_i [ mean_pixels |G(x, z_a,i) - G(x, z_b,i)| / ||z_a,i - z_b,i||_2 ]

(the reference code, wchen342/SketchyGAN ``graph_single.py``: the L1 difference of the two
images divided per sample by the L2 distance of the two codes, averaged, negated; weight 10
there). It rewards the generator for spreading outputs apart where the codes are apart, the
same ratio that Mao et al. later called the mode-seeking loss (MSGAN, CVPR 2019) and Yang et
al. the diversity-sensitive loss (DSGAN, ICLR 2019). The generator's outputs are tanh-bounded,
so the loss is bounded below by ``-2 / ||z_a - z_b||``. Codes are not detached: a caller who
feeds codes from an encoder decides whether gradients should reach it.
"""

from __future__ import annotations

import torch

__all__ = ["diversity_loss", "diversity_ratio"]


def diversity_ratio(out_a: torch.Tensor, out_b: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor,
                    eps: float = 1e-8) -> torch.Tensor:
    """Per sample, the mean absolute difference of the outputs over the L2 distance of the codes: (N,).

    ``eps`` keeps the ratio finite when two codes coincide (then it is the output difference / eps).
    """
    if out_a.shape != out_b.shape or out_a.ndim < 2:
        raise ValueError(f"diversity: the two outputs must be batches of one shape, got {tuple(out_a.shape)} "
                         f"and {tuple(out_b.shape)}")
    if z_a.shape != z_b.shape or z_a.ndim != 2 or z_a.shape[0] != out_a.shape[0]:
        raise ValueError(f"diversity: the codes must be (N, z_dim) with N = {out_a.shape[0]} as the outputs, got "
                         f"{tuple(z_a.shape)} and {tuple(z_b.shape)}")
    difference = (out_a - out_b).abs().flatten(1).mean(dim=1)
    distance = (z_a - z_b).to(difference.dtype).norm(dim=1)
    return difference / (distance + eps)


def diversity_loss(out_a: torch.Tensor, out_b: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor,
                   eps: float = 1e-8) -> torch.Tensor:
    """SketchyGAN's diversity loss (to minimise): ``-mean(diversity_ratio(...))``, a scalar <= 0.

    Zero when the two outputs are equal; more negative the further apart they are for the
    same code distance; its gradient pushes each output away from the other.
    """
    return -diversity_ratio(out_a, out_b, z_a, z_b, eps).mean()
