"""DFR's training loss (eq. 4)."""

from __future__ import annotations

from torch import nn

__all__ = ["DFRLoss", "feature_distance"]


def feature_distance(f, f_hat, eps=0.0):
    """Per-location l2 distance ``||f_ij - f_hat_ij||_2`` (eq. 5), ``(b, h, w)``."""
    return ((f - f_hat).pow(2).sum(dim=1) + eps).sqrt()



class DFRLoss(nn.Module):
    """Reconstruction loss of eq. (4): the averaged per-location l2 distance.

    Notes
    -----
    Eq. (4) sums ``||f_ij - f_hat_ij||_2`` over locations and the text calls
    it "averaged"; the mean over locations and images is used (Adam is
    invariant to that constant).  The distance is the l2 norm, not its
    square: the authors' code uses the mean squared error instead.  A tiny
    ``eps`` inside the square root keeps the gradient finite at zero.
    """

    def __init__(self, eps=1e-12):
        super().__init__()
        self.eps = eps

    def forward(self, f_hat, f):
        return feature_distance(f, f_hat, self.eps).mean()
