"""Pure PyTorch parts of DFR (Shi et al., "Unsupervised anomaly segmentation
via deep feature reconstruction", Neurocomputing 2021).

Nothing here knows scikit-learn or skorch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import FeatureStages

__all__ = [
    "CAE",
    "RegionalFeatures",
    "regional_features_literal",
    "regional_error_map",
]


def _alignment_operator(n_in, n_out, pool, mode):
    """1-D linear operator: resize ``n_in -> n_out`` then mean over ``pool``.

    Resizing (nearest or linear) and the stride-``pool`` mean filter are both
    linear and act separably on rows and columns, so
    ``pool(resize(phi)) == A_h @ phi @ A_w.T`` exactly, with
    ``A = P @ U``.  ``U`` is built by resizing the identity with
    :func:`torch.nn.functional.interpolate` itself, so the result matches the
    literal definition to floating-point rounding without ever materialising a
    full-resolution feature map.
    """
    eye = torch.eye(n_in, dtype=torch.float64).unsqueeze(1)  # (n_in, 1, n_in)
    if mode == "nearest":
        up = F.interpolate(eye, size=n_out, mode="nearest")
    else:
        up = F.interpolate(eye, size=n_out, mode="linear", align_corners=mode == "bilinear-corners")
    up = up[:, 0, :].T  # (n_out, n_in): column j is the resized basis vector e_j
    pooled = up.reshape(n_out // pool, pool, n_in).mean(dim=1)
    return pooled.to(torch.float32)


def regional_features_literal(feature_maps, size, pool=4, mode="nearest"):
    """The paper's definition, eqs. (1)-(3), computed literally.

    Each map is resized to ``size`` (eq. 1), filtered with a ``pool x pool``
    mean of stride ``pool`` (eq. 2), and the results are concatenated (eq. 3).
    Used as the reference in tests; :class:`RegionalFeatures` computes the same
    numbers without the full-resolution intermediate.
    """
    out = []
    for phi in feature_maps:
        if mode == "nearest":
            aligned = F.interpolate(phi, size=size, mode="nearest")
        else:
            aligned = F.interpolate(
                phi, size=size, mode="bilinear", align_corners=mode == "bilinear-corners"
            )
        out.append(F.avg_pool2d(aligned, kernel_size=pool, stride=pool))
    return torch.cat(out, dim=1)


class RegionalFeatures(nn.Module):
    """Multi-scale regional feature generator (paper §III-B).

    Parameters
    ----------
    backbone : str
        Name for :class:`~skanomaly.backbones.FeatureStages`.
    weights : str, path or None
        Backbone weights.
    layers : sequence of int
        Numbered backbone layers forming the scales.
    image_size : int or None
        Side of the (square) working image; a multiple of ``pool``.  ``None``:
        each input's own ``(H, W)`` (multiples of ``pool`` and of the deepest
        layer's stride, so that every feature map aligns exactly).
    pool : int, default=4
        Size and stride of the mean filter (eq. 2).
    mode : {"nearest", "bilinear", "bilinear-corners"}, default="nearest"
        Alignment interpolation (eq. 1).  The paper uses nearest neighbour;
        the authors' code bilinear with ``align_corners=True``
        (``"bilinear-corners"``).

    Notes
    -----
    Output: ``(b, c_o, H/pool, W/pool)`` (``H = W = image_size`` unless None) with
    ``c_o = sum_l c_l``.  The backbone is frozen and runs in eval mode.
    """

    def __init__(self, backbone, weights, layers, image_size, pool=4, mode="nearest"):
        super().__init__()
        self.backbone = FeatureStages(backbone, weights, layers)
        self.image_size = None if image_size is None else int(image_size)
        self.pool = int(pool)
        self.mode = mode
        self._operators = {}

    def _operator(self, n_in, device, n_out=None):
        n_out = self.image_size if n_out is None else int(n_out)
        key = (n_in, n_out, str(device))
        if key not in self._operators:
            self._operators[key] = _alignment_operator(
                n_in, n_out, self.pool, self.mode
            ).to(device)
        return self._operators[key]

    def __getstate__(self):
        state = super().__getstate__()
        state["_operators"] = {}
        return state

    def forward(self, x):
        if self.image_size is None:
            height, width = (int(s) for s in x.shape[-2:])
        else:
            height = width = self.image_size
        maps = self.backbone(x)
        out = []
        for phi in maps:
            a_h = self._operator(phi.shape[-2], phi.device, height)
            a_w = self._operator(phi.shape[-1], phi.device, width)
            out.append(torch.einsum("Hh,bchw,Ww->bcHW", a_h, phi, a_w))
        return torch.cat(out, dim=1)


class CAE(nn.Module):
    """The 1x1 convolutional autoencoder of the paper's Appendix B (Table VIII).

    Parameters
    ----------
    in_channels : int
        ``c_o``, the depth of the regional features.
    latent_dim : int
        ``c_d``, the latent depth.

    Notes
    -----
    Exactly Table VIII: six 1x1 convolutions with ReLU after layers 1, 2, 4
    and 5.  The authors' code inserts BatchNorm between the convolutions; the
    paper has none, and neither does this module.
    """

    def __init__(self, in_channels, latent_dim):
        super().__init__()
        c_o, c_d = int(in_channels), int(latent_dim)
        mid = (c_o + c_d) // 2
        self.encoder = nn.Sequential(
            nn.Conv2d(c_o, mid, 1),
            nn.ReLU(),
            nn.Conv2d(mid, 2 * c_d, 1),
            nn.ReLU(),
            nn.Conv2d(2 * c_d, c_d, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(c_d, 2 * c_d, 1),
            nn.ReLU(),
            nn.Conv2d(2 * c_d, mid, 1),
            nn.ReLU(),
            nn.Conv2d(mid, c_o, 1),
        )

    def forward(self, f):
        return self.decoder(self.encoder(f))


def regional_error_map(f, f_hat):
    """The anomaly map of eq. (5), ``||f_ij - f_hat_ij||_2`` per location, in place.

    Equal to :func:`feature_distance` without ``eps`` but overwrites ``f_hat``
    instead of allocating: at 256 px with ``f_{1:12}`` each
    ``(4, 3456, 64, 64)`` temporary is 226 MB.  For inference only.

    Parameters
    ----------
    f, f_hat : Tensor of shape (b, c, h, w)
        Regional features and their reconstruction (``f_hat`` is consumed).

    Returns
    -------
    map : Tensor of shape (b, h, w)
    """
    return f_hat.sub_(f).square_().sum(dim=1).sqrt_()
