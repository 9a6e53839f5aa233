"""Multi-scale striped masks of SCADN (Yan et al., AAAI 2021, Fig. 3).

A mask ``M`` is 1 where a pixel is kept and 0 where it is removed (the paper's
convention, eq. 1: the generator sees ``I * M``).  Each scale contributes four
masks, in this order:

0. vertical stripes,
1. their complement,
2. horizontal stripes,
3. their complement.

Each mask removes half of the image (exactly half when the side is a multiple
of twice the stripe width), and over the four masks of a scale every pixel is
removed exactly twice: once by the vertical pair and once by the horizontal
pair.
"""

from __future__ import annotations

from numbers import Real

import torch

__all__ = ["DEFAULT_MASK_SCALES", "stripe_width", "striped_masks", "random_mask_indices"]

#: Stripe widths as fractions of the image side.  The authors' released masks,
#: at 512 px, have stripes 128, 64 and 32 px wide (large, middle, small scale).
DEFAULT_MASK_SCALES = (1 / 4, 1 / 8, 1 / 16)


def stripe_width(side, scale):
    """Width in pixels of the stripes of one scale.

    Parameters
    ----------
    side : int
        Image side (height for horizontal stripes, width for vertical ones).
    scale : float
        Stripe width as a fraction of ``side``, in (0, 0.5].

    Returns
    -------
    width : int
        ``round(side * scale)``, at least 1.
    """
    if not isinstance(scale, Real) or not 0 < scale <= 0.5:
        raise ValueError(f"A mask scale must be a number in (0, 0.5]; got {scale!r}.")
    return max(1, int(round(side * float(scale))))


def _stripes(side, width, device):
    # 1 on even-numbered stripes (kept), 0 on odd-numbered ones (removed).
    index = torch.arange(side, device=device) // width
    return (index % 2 == 0).to(torch.float32)


def striped_masks(height, width, scales=DEFAULT_MASK_SCALES, *, device=None):
    """All striped masks for an image size.

    Parameters
    ----------
    height, width : int
        Image size in pixels.
    scales : sequence of float, default=DEFAULT_MASK_SCALES
        Stripe widths as fractions of the side, one entry per scale.
    device : torch.device or str, default=None

    Returns
    -------
    masks : Tensor of shape (n_scales, 4, 1, height, width)
        float32, 1 = kept, 0 = removed; per scale: vertical, its complement,
        horizontal, its complement.
    """
    scales = tuple(scales)
    if not scales:
        raise ValueError("At least one mask scale is needed.")
    out = torch.empty(len(scales), 4, 1, height, width, device=device)
    for i, scale in enumerate(scales):
        cols = _stripes(width, stripe_width(width, scale), device)
        rows = _stripes(height, stripe_width(height, scale), device)
        vertical = cols.expand(height, width)
        horizontal = rows[:, None].expand(height, width)
        out[i, 0, 0] = vertical
        out[i, 1, 0] = 1 - vertical
        out[i, 2, 0] = horizontal
        out[i, 3, 0] = 1 - horizontal
    return out


def random_mask_indices(n, n_masks, *, generator=None, device=None):
    """One uniformly drawn mask index per training image.

    Parameters
    ----------
    n : int
        Number of images.
    n_masks : int
        Number of masks to draw from (``4 * n_scales``).
    generator : torch.Generator, default=None
        A CPU generator; torch's global CPU generator when None (seeded by
        the estimator during ``fit``).
    device : torch.device or str, default=None

    Returns
    -------
    indices : LongTensor of shape (n,)
    """
    # Drawn on the CPU so that the same seed gives the same masks on any device.
    indices = torch.randint(n_masks, (n,), generator=generator)
    return indices.to(device) if device is not None else indices
