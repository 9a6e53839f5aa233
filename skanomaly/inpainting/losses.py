"""Training objectives of the inpainting autoencoder (Bauer 2022, eq. 1 and 3).

Notation of the paper: ``X`` is a normal image, ``X_hat`` a copy of it with a
distorted region marked by the binary mask ``M`` (``M_bar`` is its
complement), ``F`` the autoencoder, ``D = F(X_hat) - X`` the residual.

* eq. (1), ``objective="restore"``::

      lam / |M_bar|_1 * |M_bar * D|_2  +  (1 - lam) / |M|_1 * |M * D|_2

* eq. (3), ``objective="amplify"``::

      lam / |M_bar|_1 * |M_bar * D|_2  -  (1 - lam) / |X_hat - X|_1 * ||X_hat - X| * D|_2

The norms are the L1 and L2 norms of the whole (C, H, W) tensor of one
image, exactly as the paper writes them (the L2 norm is not squared); the
mask has the image's channels, so ``|M|_1`` counts channel elements.  The
loss of a batch is the mean of the per-image losses.  ``squared=True``
squares the L2 norms, turning each term into its region's mean squared
error (an option, not the paper's formula; see ``InpaintingAE``'s Notes).
"""

import torch
from torch import nn

__all__ = ["OBJECTIVES", "inpainting_loss", "InpaintingLoss"]

OBJECTIVES = ("restore", "amplify")

# Guards the divisions; the data generator makes every denominator positive,
# so this only matters for degenerate hand-made inputs.
_EPS = 1e-12


def _per_image_l2(t, squared=False):
    if squared:
        return t.flatten(1).pow(2).sum(dim=1)
    return torch.linalg.vector_norm(t.flatten(1), ord=2, dim=1)


def _per_image_l1(t):
    return t.flatten(1).abs().sum(dim=1)


def inpainting_loss(
    output, target, distorted, mask, *, objective="restore", lam=0.5, squared=False
):
    """Loss of eq. (1) (``"restore"``) or eq. (3) (``"amplify"``) of the paper.

    Parameters
    ----------
    output : torch.Tensor of shape (b, C, H, W)
        The reconstruction ``F(X_hat)``.
    target : torch.Tensor of shape (b, C, H, W)
        The undistorted images ``X``.
    distorted : torch.Tensor of shape (b, C, H, W)
        The network's inputs ``X_hat`` (used by ``"amplify"`` only).
    mask : torch.Tensor of shape (b, 1, H, W) or (b, C, H, W)
        The binary mask ``M`` of the distorted regions (1 = distorted).
    objective : {"restore", "amplify"}, default="restore"
        Which equation to use.
    lam : float in [0, 1], default=0.5
        The weight ``lambda`` of the term on the undistorted region.
    squared : bool, default=False
        Use squared L2 norms, which turns each term into a mean squared
        error over its region (a common reading of ``|.|_2`` in losses);
        ``False`` is the paper's formula as written.

    Returns
    -------
    loss : torch.Tensor
        A scalar: the mean of the per-image losses.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}.")
    mask = mask.to(output.dtype).expand_as(output)
    keep = 1.0 - mask
    residual = output - target
    normal_term = (
        lam * _per_image_l2(keep * residual, squared) / _per_image_l1(keep).clamp_min(_EPS)
    )
    if objective == "restore":
        changed_term = (
            (1.0 - lam)
            * _per_image_l2(mask * residual, squared)
            / _per_image_l1(mask).clamp_min(_EPS)
        )
        loss = normal_term + changed_term
    else:
        soft_mask = (distorted - target).abs()
        changed_term = (
            (1.0 - lam)
            * _per_image_l2(soft_mask * residual, squared)
            / _per_image_l1(soft_mask).clamp_min(_EPS)
        )
        loss = normal_term - changed_term
    return loss.mean()


class InpaintingLoss(nn.Module):
    """:func:`inpainting_loss` as a module with a fixed objective and ``lam``.

    ``forward(output, target, distorted, mask)`` returns the scalar loss.

    Parameters
    ----------
    objective : {"restore", "amplify"}, default="restore"
        Eq. (1) or eq. (3) of the paper.
    lam : float in [0, 1], default=0.5
        The weight ``lambda``.
    squared : bool, default=False
        Squared L2 norms (per-region mean squared errors) instead of the
        paper's plain L2 norms.
    """

    def __init__(self, objective="restore", lam=0.5, squared=False):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}.")
        self.objective = objective
        self.lam = float(lam)
        self.squared = bool(squared)

    def forward(self, output, target, distorted, mask):
        return inpainting_loss(
            output,
            target,
            distorted,
            mask,
            objective=self.objective,
            lam=self.lam,
            squared=self.squared,
        )

    def extra_repr(self):
        return f"objective={self.objective!r}, lam={self.lam}, squared={self.squared}"
