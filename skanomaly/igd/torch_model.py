"""Pure PyTorch modules of IGD (Chen et al., 2022) and its anomaly computation.

Nothing here knows about scikit-learn or skorch.  An IGD *branch* is an
auto-encoder ``g_phi(f_theta(x))`` whose encoder ends in a linear projection
to the latent space, plus the Gaussian SVDD statistics ``(mu, sigma^2)`` of
its training embeddings; a *critic* ``d_psi`` regresses the interpolation
coefficient of ACAI.  :class:`IGDModel` holds the global branch (whole
images) and the local branch (32 x 32 patches, stride 16) and works on images
in [0, 1], normalised inside with ImageNet's mean and standard deviation (the
paper's pixel range ``L = 4.7579`` is that of ImageNet-normalised images).
:func:`igd_anomaly` turns a trained model into image scores (eq. 11) and
pixel maps (eq. 12); :class:`DistillationStudent` is the part of a branch
that eq. 10 trains.

Widths follow Sec. 4.2 of the paper with ``width = 64``:

========  =======================  ==============================  =====================
branch    encoder blocks           decoder blocks                  critic blocks
========  =======================  ==============================  =====================
global    64-128-256-512           512-512-256-128-64              128-256-512-512
local     128-256-512              256-128-64                      128-256-512
========  =======================  ==============================  =====================
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .losses import (
    LOCAL_WINDOW,
    gsvdd_loss,
    ms_ssim_settings,
    reconstruction_loss,
    reconstruction_map,
)
from .patches import extract_patches, fold_patch_maps, patch_starts

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DATA_RANGE",
    "PreActBlock",
    "Encoder",
    "Decoder",
    "Critic",
    "IGDBranch",
    "IGDModel",
    "IGDCritics",
    "TeacherFeatures",
    "DistillationStudent",
    "as_rgb",
    "branch_widths",
    "pooled_features",
    "patch_starts",
    "extract_patches",
    "fold_patch_maps",
    "branch_anomaly",
    "igd_anomaly",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Pixel range of ImageNet-normalised images, ``L`` in the paper (2.1179 + 2.6400).
DATA_RANGE = max((1.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)) + max(
    m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)
)


def as_rgb(x):
    """Repeat a single channel to three (the paper's images are RGB); (b, C, H, W)."""
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class PreActBlock(nn.Module):
    """Pre-activated residual block (He et al., 2016): (BN, ReLU, 3x3 conv) x 2.

    Parameters
    ----------
    in_channels, out_channels : int
    resample : {None, "down", "up"}, default=None
        ``"down"`` halves the resolution (2x2 average pooling after the
        convolutions, ceil mode); ``"up"`` doubles it (nearest neighbour
        before them).  The shortcut is a 1x1 convolution when the shape changes.
    """

    def __init__(self, in_channels, out_channels, resample=None):
        super().__init__()
        if resample not in (None, "down", "up"):
            raise ValueError(f"resample must be None, 'down' or 'up'; got {resample!r}.")
        self.resample = resample
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels or resample is not None:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        h = F.relu(self.bn1(x))
        if self.resample == "up":
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        h = self.conv1(h)
        h = self.conv2(F.relu(self.bn2(h)))
        if self.resample == "down":
            h = F.avg_pool2d(h, 2, ceil_mode=True)
            x = F.avg_pool2d(x, 2, ceil_mode=True)
        return h + self.shortcut(x)


def _fitting_blocks(widths, image_size, keep="last"):
    """The widths of the blocks a side of ``image_size`` pixels can take.

    Each block halves (or doubles) the resolution; blocks are dropped until
    the smallest feature map is at least 2 x 2 (batch normalisation needs
    more than one value per channel, even for a batch of one image).
    ``keep="last"`` drops the first blocks, ``"first"`` the last ones.
    """
    widths = [int(w) for w in widths]
    if image_size is None:
        return widths
    n = max(1, min(len(widths), int(math.floor(math.log2(max(int(image_size), 2) / 2)))))
    return widths[len(widths) - n :] if keep == "last" else widths[:n]


def pooled_features(stem, blocks, norm, x):
    """``relu(norm(blocks(stem(x))))`` averaged over positions: the distilled features."""
    return F.relu(norm(blocks(stem(x)))).mean(dim=(2, 3))


class Encoder(nn.Module):
    """``f_theta``: 3x3 stem, down-sampling residual blocks, pooling, linear projection.

    Parameters
    ----------
    widths : sequence of int
        Output channels of each down-sampling block.
    latent_dim : int
        Size ``d_z`` of the embedding.
    in_channels : int, default=3
    image_size : int or None, default=None
        Side of the input.  When given, the first (narrowest) blocks are
        dropped if there are more halvings than the size allows (the last
        feature map stays at least 2 x 2); the feature size is unchanged.

    Notes
    -----
    :meth:`features` returns the globally average-pooled output of the last
    block (``widths[-1]`` values): the representation distilled from the
    teacher (eq. 10).  :meth:`forward` adds the linear layer to ``d_z``.
    """

    def __init__(self, widths, latent_dim, in_channels=3, image_size=None):
        super().__init__()
        widths = _fitting_blocks(widths, image_size)
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        chans = [widths[0]] + widths
        self.blocks = nn.Sequential(*[PreActBlock(chans[i], chans[i + 1], "down") for i in range(len(widths))])
        self.norm = nn.BatchNorm2d(widths[-1])
        self.project = nn.Linear(widths[-1], latent_dim)
        self.n_features = widths[-1]

    def features(self, x):
        return pooled_features(self.stem, self.blocks, self.norm, x)

    def forward(self, x):
        return self.project(self.features(x))


class Decoder(nn.Module):
    """``g_phi``: linear layer to a small grid, up-sampling residual blocks, 3x3 conv.

    Parameters
    ----------
    latent_dim : int
    widths : sequence of int
        Channels of the grid (``widths[0]``) and output channels of the
        up-sampling blocks, each doubling the resolution.
    image_size : int
        Side of the output.  With ``n = len(widths)`` blocks the grid has
        side ``ceil(image_size / 2**n)``; when that would fall below 2 (so
        that batch normalisation would see a single value per channel), the
        first, widest blocks are dropped until it does not (at 32 px the
        global decoder keeps 4 of its 5 blocks).  An output larger than
        ``image_size`` is bilinearly resized to it.
    out_channels : int, default=3

    Notes
    -----
    The output is linear (no squashing): it reconstructs ImageNet-normalised
    images, whose range is about [-2.12, 2.64].
    """

    def __init__(self, latent_dim, widths, image_size, out_channels=3):
        super().__init__()
        self.image_size = int(image_size)
        # Small outputs drop leading (widest) blocks rather than start below 2 x 2.
        widths = _fitting_blocks(widths, self.image_size)
        self.start = max(2, math.ceil(self.image_size / 2 ** len(widths)))
        self.start_channels = widths[0]
        self.fc = nn.Linear(latent_dim, widths[0] * self.start * self.start)
        chans = [widths[0]] + widths
        self.blocks = nn.Sequential(*[PreActBlock(chans[i], chans[i + 1], "up") for i in range(len(widths))])
        self.norm = nn.BatchNorm2d(widths[-1])
        self.out = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, z):
        h = self.fc(z).view(-1, self.start_channels, self.start, self.start)
        h = self.out(F.relu(self.norm(self.blocks(h))))
        if h.shape[-1] != self.image_size:
            h = F.interpolate(h, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return h


class Critic(Encoder):
    """``d_psi``: the encoder's architecture with a single linear output.

    Returns one unbounded real per image: the estimate of ACAI's mixing
    coefficient ``alpha`` (no sigmoid; see the estimator's Notes).  With
    ``image_size`` given, blocks that the size cannot take are dropped as in
    :class:`Encoder`.
    """

    def __init__(self, widths, in_channels=3, image_size=None):
        super().__init__(widths, 1, in_channels=in_channels, image_size=image_size)

    def forward(self, x):
        return super().forward(x).squeeze(1)


def branch_widths(kind, width=64):
    """Encoder, decoder and critic block widths of a branch (Sec. 4.2 at ``width=64``).

    Parameters
    ----------
    kind : {"global", "local"}
    width : int, default=64

    Returns
    -------
    encoder, decoder, critic : tuple of int
    """
    w = int(width)
    if kind == "global":
        return (w, 2 * w, 4 * w, 8 * w), (8 * w, 8 * w, 4 * w, 2 * w, w), (2 * w, 4 * w, 8 * w, 8 * w)
    if kind == "local":
        return (2 * w, 4 * w, 8 * w), (4 * w, 2 * w, w), (2 * w, 4 * w, 8 * w)
    raise ValueError(f"kind must be 'global' or 'local'; got {kind!r}.")


class IGDBranch(nn.Module):
    """One IGD auto-encoder with its Gaussian SVDD statistics.

    Parameters
    ----------
    kind : {"global", "local"}
        Chooses the widths of :func:`branch_widths`.
    image_size : int
        Side of the branch's (square) input: the working size for the global
        branch, the patch size (32) for the local one.
    latent_dim : int, default=128
    width : int, default=64
    teacher_dim : int or None, default=None
        Size of the teacher's features.  When it differs from the encoder's
        feature size a linear distillation head maps the latter to the former
        (used only by the distillation loss, eq. 10).

    Attributes
    ----------
    mu : Tensor of shape (latent_dim,)
        Gaussian SVDD centre ``mu_gamma`` (buffer, set by the E-step).
    sigma2 : Tensor of shape ()
        Gaussian SVDD variance ``sigma_gamma^2`` (buffer, set by the E-step).
    """

    def __init__(self, kind, image_size, latent_dim=128, width=64, teacher_dim=None):
        super().__init__()
        enc, dec, _ = branch_widths(kind, width)
        self.kind = kind
        self.image_size = int(image_size)
        self.encoder = Encoder(enc, latent_dim, image_size=image_size)
        self.decoder = Decoder(latent_dim, dec, image_size)
        if teacher_dim is None or teacher_dim == self.encoder.n_features:
            self.kd_head = nn.Identity()
        else:
            self.kd_head = nn.Linear(self.encoder.n_features, int(teacher_dim))
        self.register_buffer("mu", torch.zeros(latent_dim))
        self.register_buffer("sigma2", torch.ones(()))
        self.backbone_frozen = False

    def freeze_backbone(self):
        """Fix the distilled encoder; only its final linear projection keeps training."""
        self.backbone_frozen = True
        for module in (self.encoder.stem, self.encoder.blocks, self.encoder.norm):
            module.requires_grad_(False)
            module.eval()
        return self

    def train(self, mode=True):
        super().train(mode)
        if self.backbone_frozen:
            for module in (self.encoder.stem, self.encoder.blocks, self.encoder.norm):
                module.eval()
        return self

    def forward(self, x):
        """Embed and reconstruct ImageNet-normalised images: ``(z, x_hat)``."""
        z = self.encoder(x)
        return z, self.decoder(z)


class IGDModel(nn.Module):
    """The two IGD branches, on images in [0, 1].

    Parameters
    ----------
    image_size : int
        Side of the square working images.
    latent_dim : int, default=128
    width : int, default=64
    use_global, use_local : bool, default=True
        Which branches to build (``beta = 1`` needs no local branch,
        ``beta = 0`` no global one).
    patch_size, patch_stride : int, default=32, 16
        Local patches (the paper's ``H_L = W_L = 32``; stride 16).
    teacher_dim : int or None, default=None
        See :class:`IGDBranch`.
    """

    def __init__(
        self,
        image_size,
        latent_dim=128,
        width=64,
        use_global=True,
        use_local=True,
        patch_size=32,
        patch_stride=16,
        teacher_dim=None,
    ):
        super().__init__()
        if not (use_global or use_local):
            raise ValueError("IGDModel needs at least one branch.")
        self.image_size = int(image_size)
        self.width = int(width)
        self.patch_size = int(patch_size)
        self.patch_stride = int(patch_stride)
        self.global_branch = (
            IGDBranch("global", image_size, latent_dim, width, teacher_dim) if use_global else None
        )
        self.local_branch = (
            IGDBranch("local", patch_size, latent_dim, width, teacher_dim) if use_local else None
        )
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def branches(self):
        """``(name, branch)`` pairs of the branches that exist."""
        return [(n, b) for n, b in (("global", self.global_branch), ("local", self.local_branch)) if b is not None]

    def branch(self, name):
        """The branch called ``name`` ("global" or "local"), or None if not built."""
        if name not in ("global", "local"):
            raise ValueError(f"name must be 'global' or 'local'; got {name!r}.")
        return self.global_branch if name == "global" else self.local_branch

    def normalize(self, x):
        """[0, 1] images to ImageNet-normalised ones."""
        return (x - self.mean) / self.std

    def branch_input(self, name, x):
        """The normalised inputs a branch sees: whole images or their patches.

        ``x`` is (b, C, H, W) in [0, 1]; one channel is repeated to three.
        """
        x = self.normalize(as_rgb(x))
        if name == "local":
            x = extract_patches(x, self.patch_size, self.patch_stride)
        return x

    def forward(self, x):
        """``{name: (inputs, z, x_hat)}`` for each branch, ``x`` in [0, 1]."""
        out = {}
        for name, branch in self.branches():
            xb = self.branch_input(name, x)
            z, x_hat = branch(xb)
            out[name] = (xb, z, x_hat)
        return out


class IGDCritics(nn.Module):
    """The ACAI critics of the two branches (``critic_`` of the skorch net).

    A container: each critic is called through :meth:`critic`.

    Parameters
    ----------
    width : int, default=64
        Width multiplier (:func:`branch_widths`).
    use_global, use_local : bool, default=True
        Which critics to build (those of the model's branches).
    image_size : int or None, default=None
        Side of the global branch's images; blocks the size cannot take are
        dropped (:class:`Critic`).
    patch_size : int, default=32
        Side of the local branch's patches.
    """

    def __init__(self, width=64, use_global=True, use_local=True, image_size=None, patch_size=32):
        super().__init__()
        self.global_critic = (
            Critic(branch_widths("global", width)[2], image_size=image_size) if use_global else None
        )
        self.local_critic = (
            Critic(branch_widths("local", width)[2], image_size=patch_size) if use_local else None
        )

    def critic(self, name):
        """The critic of branch ``name`` ("global" or "local"), or None if not built."""
        return self.global_critic if name == "global" else self.local_critic


class TeacherFeatures(nn.Module):
    """Frozen pretrained teacher ``f_theta(I)``: global average of its last stage.

    Parameters
    ----------
    name : {"resnet18", "efficientnet_lite0"}
        Backbone of :mod:`skanomaly.backbones`.  ResNet18's last stage
        (``layer4``) pooled is the 512-d vector before its classifier, the
        paper's teacher; EfficientNet-Lite0's is its last inverted residual
        block (320-d).
    weights : str, path or None

    Notes
    -----
    Takes images in [0, 1]; the backbone's own normalisation is applied inside.
    """

    def __init__(self, name, weights):
        super().__init__()
        from ..backbones import BACKBONES, FeatureStages

        if name not in ("resnet18", "efficientnet_lite0"):
            raise ValueError(f"teacher must be 'resnet18', 'efficientnet_lite0' or None; got {name!r}.")
        self.stages = FeatureStages(name, weights, [BACKBONES[name]["n_layers"]])
        with torch.no_grad():
            self.n_features = int(self.stages(torch.zeros(1, 3, 32, 32))[-1].shape[1])

    def train(self, mode=True):
        return super().train(False)

    @torch.no_grad()
    def forward(self, x):
        return self.stages(x)[-1].mean(dim=(2, 3))


class DistillationStudent(nn.Module):
    """The student of eq. 10: a branch's encoder features through its distillation head.

    Shares (does not copy) the convolutional part of the branch's encoder
    and its ``kd_head``, so training the student trains the branch; the
    encoder's final projection to ``d_z`` is not part of it.

    Parameters
    ----------
    model : IGDModel
    name : {"global", "local"}
        The branch to distil.

    Notes
    -----
    Takes images (or patches) in [0, 1]; they are ImageNet-normalised inside,
    as the branch's inputs are.
    """

    def __init__(self, model, name):
        super().__init__()
        branch = model.branch(name)
        if branch is None:
            raise ValueError(f"The model has no {name} branch to distil.")
        encoder = branch.encoder
        self.stem, self.blocks, self.norm = encoder.stem, encoder.blocks, encoder.norm
        self.head = branch.kd_head
        self.register_buffer("mean", model.mean.clone())
        self.register_buffer("std", model.std.clone())

    def forward(self, x):
        x = (as_rgb(x) - self.mean) / self.std
        return self.head(pooled_features(self.stem, self.blocks, self.norm, x))


def branch_anomaly(model, name, x, *, rho, global_window, local_window=LOCAL_WINDOW,
                   data_range=DATA_RANGE, chunk_size=None):
    """Per-image ``l_m`` and ``l_h`` and per-pixel ``l_m`` of one branch.

    Parameters
    ----------
    model : IGDModel
        In eval mode, with its Gaussian SVDD statistics set.
    name : {"global", "local"}
    x : Tensor of shape (b, C, H, W)
        Images in [0, 1] at the working size.
    rho : float
        Weight of the MAE in eqs. 8 and 12.
    global_window : int
        Gaussian window of the global MS-SSIM.
    local_window : int, default=LOCAL_WINDOW
        Gaussian window of the local MS-SSIM.
    data_range : float, default=DATA_RANGE
        ``L`` of eq. 8.
    chunk_size : int or None, default=None
        Local patches per forward pass (all of them when None); the results
        do not depend on it.

    Returns
    -------
    rec : Tensor of shape (b,)
        ``l_m`` of eq. 8; for the local branch, the mean over the image's patches.
    h_loss : Tensor of shape (b,)
        ``l_h = 1 - h_gamma(z)`` of eq. 7; local: mean over the patches.
    maps : Tensor of shape (b, H, W)
        Per-pixel ``l_m`` of eq. 12; local: patch maps with overlaps averaged.
    """
    branch = model.branch(name)
    settings = ms_ssim_settings(name, global_window, local_window)
    xb = model.branch_input(name, x)
    chunks = xb.split(int(chunk_size)) if name == "local" and chunk_size else (xb,)
    rec, h_loss, maps = [], [], []
    for chunk in chunks:
        z, x_hat = branch(chunk)
        rec.append(reconstruction_loss(chunk, x_hat, rho=rho, data_range=data_range, **settings))
        h_loss.append(gsvdd_loss(z, branch.mu, branch.sigma2))
        maps.append(reconstruction_map(chunk, x_hat, rho=rho, data_range=data_range, **settings))
    rec, h_loss, maps = torch.cat(rec), torch.cat(h_loss), torch.cat(maps)
    if name == "local":
        # Patches per image from the (fixed) working size, not the batch
        # size: an exported graph keeps a dynamic batch.
        n_patches = len(patch_starts(x.shape[-2], model.patch_size, model.patch_stride)) * len(
            patch_starts(x.shape[-1], model.patch_size, model.patch_stride)
        )
        rec = rec.view(-1, n_patches).mean(1)
        h_loss = h_loss.view(-1, n_patches).mean(1)
        maps = fold_patch_maps(maps, x.shape[-2], x.shape[-1], model.patch_stride)
    return rec, h_loss, maps


def igd_anomaly(model, x, *, beta, xi, rho, global_window, local_window=LOCAL_WINDOW,
                data_range=DATA_RANGE, chunk_size=None):
    """Image anomaly scores (eq. 11) and pixel maps (eq. 12) of images in [0, 1].

    Parameters
    ----------
    model : IGDModel
        In eval mode, with its Gaussian SVDD statistics set.
    x : Tensor of shape (b, C, H, W)
        Images in [0, 1] at the working size.
    beta : float
        Weight of the global branch against the local one.
    xi : float
        Weight of ``l_m`` against ``l_h`` in the score.
    rho, global_window, local_window, data_range, chunk_size
        As in :func:`branch_anomaly`.

    Returns
    -------
    scores : Tensor of shape (b,)
        ``xi * l_m + (1 - xi) * l_h``, each ``beta * global + (1 - beta) * local``.
    maps : Tensor of shape (b, H, W)
        ``beta`` times the global per-pixel ``l_m`` plus ``1 - beta`` times the local one.
    """
    rec = h_loss = maps = 0.0
    for name, _ in model.branches():
        weight = beta if name == "global" else 1.0 - beta
        r, h, m = branch_anomaly(
            model, name, x, rho=rho, global_window=global_window, local_window=local_window,
            data_range=data_range, chunk_size=chunk_size,
        )
        rec = rec + weight * r
        h_loss = h_loss + weight * h
        maps = maps + weight * m
    return xi * rec + (1.0 - xi) * h_loss, maps
