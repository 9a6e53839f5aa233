"""Pure PyTorch parts of SCADN (Yan et al., AAAI 2021).

* :class:`SCADNGenerator` -- the inpainting generator (EdgeConnect-style
  encoder, dilated residual blocks, decoder; instance normalisation in every
  layer but the output).
* :class:`PatchDiscriminator` -- a PatchGAN with spectral normalisation.
* :func:`scale_error_maps` and :func:`select_scale` -- the multi-scale
  aggregated inference of eqs. 5-10.

Nothing here knows about scikit-learn or skorch.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = [
    "ResidualBlock",
    "SCADNGenerator",
    "PatchDiscriminator",
    "init_weights",
    "masked_inputs",
    "scale_error_maps",
    "select_scale",
]


def init_weights(module, std=0.02):
    """Normal(0, ``std``) weights and zero biases for every convolution.

    The paper gives no initialisation; this is the one of EdgeConnect and of
    the authors' code.  Call it before wrapping layers in spectral norm.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


class ResidualBlock(nn.Module):
    """Residual block whose first 3x3 convolution is dilated.

    ``x + IN(conv3x3(ReLU(IN(dilated_conv3x3(x)))))`` with reflection padding
    and no activation after the sum (EdgeConnect's block).

    Parameters
    ----------
    channels : int
    dilation : int, default=2
    """

    def __init__(self, channels, dilation=2):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(dilation),
            nn.Conv2d(channels, channels, 3, dilation=dilation),
            nn.InstanceNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, x):
        return x + self.body(x)


class SCADNGenerator(nn.Module):
    """The inpainting generator G of SCADN.

    A 7x7 convolution, three stride-2 4x4 convolutions down to 1/8 of the
    input size, ``n_blocks`` residual blocks with dilated convolutions, three
    (nearest x2 up-sampling, 3x3 convolution) stages back to the input size and
    a 7x7 convolution; instance normalisation and ReLU after every hidden
    convolution; the output is ``(tanh(.) + 1) / 2``, in [0, 1].

    Parameters
    ----------
    in_channels : int, default=3
        Channels of the images (and of the output).
    width : int, default=64
        Channels of the first layer; deeper layers use 2, 4 and 8 times it.
    n_blocks : int, default=8
        Number of residual blocks at 1/8 resolution.
    dilation : int, default=2
        Dilation of the first convolution of each residual block.

    Notes
    -----
    Height and width of the input must be multiples of 8.  With reflection
    padding, the 1/8-resolution feature map must be larger than ``dilation``
    pixels, i.e. inputs of at least ``8 * (dilation + 1)`` pixels (24 px for
    the default).
    """

    def __init__(self, in_channels=3, width=64, n_blocks=8, dilation=2):
        super().__init__()
        w = width
        layers = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, w, 7),
            nn.InstanceNorm2d(w),
            nn.ReLU(inplace=True),
        ]
        for c_in, c_out in ((w, 2 * w), (2 * w, 4 * w), (4 * w, 8 * w)):
            layers += [
                nn.Conv2d(c_in, c_out, 4, stride=2, padding=1),
                nn.InstanceNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        self.encoder = nn.Sequential(*layers)
        self.middle = nn.Sequential(*[ResidualBlock(8 * w, dilation) for _ in range(n_blocks)])
        layers = []
        for c_in, c_out in ((8 * w, 4 * w), (4 * w, 2 * w), (2 * w, w)):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c_in, c_out, 3, padding=1),
                nn.InstanceNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(w, in_channels, 7)]
        self.decoder = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x):
        """Inpaint masked images ``x = I * M`` of shape (b, C, H, W)."""
        h = self.decoder(self.middle(self.encoder(x)))
        return (torch.tanh(h) + 1) / 2


def _rebuild_module(cls, kwargs, training, params, buffers):
    """Unpickle a module from its constructor arguments and its own tensors."""
    module = cls(**kwargs)
    for name, value in {**params, **buffers}.items():
        owner, _, attr = name.rpartition(".")
        # setattr keeps the unpickled objects, so that an optimizer pickled
        # alongside still refers to this module's parameters
        setattr(module.get_submodule(owner), attr, value)
    return module.train(training)


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator with spectral normalisation.

    Five 4x4 convolutions (strides 2, 2, 2, 1, 1; ``width`` x 1, 2, 4, 8
    channels, then 1), LeakyReLU(0.2) between them, spectral normalisation on
    every convolution (``torch.nn.utils.parametrizations.spectral_norm``).

    Parameters
    ----------
    in_channels : int, default=3
    width : int, default=64

    Notes
    -----
    The forward pass returns a map of real/fake *logits*, one per patch; the
    sigmoid of the paper's D is folded into the losses
    (:mod:`skanomaly.scadn.losses`), which is the same function computed more
    stably.  Inputs need at least 24 px per side (the map is then 1x1).

    torch refuses to pickle parametrised modules; this one pickles as its
    constructor arguments plus its parameters and buffers, so that fitted
    detectors round-trip through ``joblib``/``pickle`` and ``copy.deepcopy``.
    """

    def __init__(self, in_channels=3, width=64):
        super().__init__()
        self._init_kwargs = {"in_channels": in_channels, "width": width}
        w = width
        chans = (in_channels, w, 2 * w, 4 * w, 8 * w, 1)
        strides = (2, 2, 2, 1, 1)
        layers = []
        for i, stride in enumerate(strides):
            conv = nn.Conv2d(chans[i], chans[i + 1], 4, stride=stride, padding=1, bias=False)
            init_weights(conv)
            layers.append(spectral_norm(conv))
            if i < len(strides) - 1:
                layers.append(nn.LeakyReLU(0.2, inplace=True))
        self.net = nn.Sequential(*layers)

    def __reduce_ex__(self, protocol):
        params = dict(self.named_parameters(remove_duplicate=False))
        buffers = dict(self.named_buffers(remove_duplicate=False))
        args = (type(self), dict(self._init_kwargs), self.training, params, buffers)
        return _rebuild_module, args

    def forward(self, x):
        """Patch logits (b, 1, h, w) for images x of shape (b, C, H, W)."""
        return self.net(x)


def masked_inputs(images, masks):
    """The generator input ``I * M`` (eq. 1): removed pixels set to zero."""
    return images * masks


def scale_error_maps(generator, images, masks, chunk_size=64):
    """Per-scale error maps ``E_i`` of eqs. 5-7.

    Every image goes through every mask; the error ``E_ij`` is the squared
    difference averaged over colour channels, kept on the removed region
    ``1 - M_ij`` only (eq. 6), and ``E_i`` is its pixel-wise maximum over the
    four masks of scale ``i`` (eq. 7).

    Parameters
    ----------
    generator : nn.Module
        Maps masked images (n, C, H, W) to reconstructions of the same shape.
    images : Tensor of shape (b, C, H, W)
    masks : Tensor of shape (n_scales, 4, 1, H, W)
        From :func:`skanomaly.scadn.masks.striped_masks`.
    chunk_size : int, default=64
        Most masked images passed to the generator at once (memory bound;
        results do not depend on it).

    Returns
    -------
    maps : Tensor of shape (b, n_scales, H, W)
    """
    b, _, h, w = images.shape
    n_scales, n_types = masks.shape[:2]
    flat_masks = masks.reshape(n_scales * n_types, 1, h, w)
    k = flat_masks.shape[0]
    errors = images.new_empty(b * k, h, w)
    # Pair index p = image * k + mask, so a chunk mixes images and masks freely.
    for start in range(0, b * k, chunk_size):
        idx = torch.arange(start, min(start + chunk_size, b * k), device=images.device)
        img = images[idx // k]
        m = flat_masks[idx % k]
        out = generator(masked_inputs(img, m))
        errors[idx] = (out - img).square().mean(dim=1) * (1 - m[:, 0])
    return errors.reshape(b, n_scales, n_types, h, w).amax(dim=2)


def select_scale(maps, mu):
    """Choose one scale per image (eqs. 8-10).

    Parameters
    ----------
    maps : Tensor of shape (b, n_scales, H, W)
        Per-scale error maps ``E_i``.
    mu : Tensor of shape (n_scales,)
        Mean of ``average(E_i)`` over the training images.

    Returns
    -------
    scores : Tensor of shape (b,)
        ``average(E_final)`` (eq. 10).
    final : Tensor of shape (b, H, W)
        ``E_f`` with ``f = argmax_i(average(E_i) - mu_i)`` (eqs. 8-9).
    chosen : LongTensor of shape (b,)
        The selected scale index ``f`` of each image.
    """
    means = maps.mean(dim=(2, 3))
    chosen = torch.argmax(means - mu.to(means), dim=1)
    final = maps[torch.arange(maps.shape[0], device=maps.device), chosen]
    return final.mean(dim=(1, 2)), final, chosen
