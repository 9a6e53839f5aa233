"""The inpainting autoencoder of Bauer (2022), Table 1, as a plain PyTorch module.

Nothing here knows about scikit-learn or skorch: the estimator in
``_estimator.py`` wraps :class:`InpaintingAutoencoder` and turns its
reconstructions into anomaly maps with :func:`anomaly_maps`.
"""

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "InpaintingAutoencoder",
    "StackedDilatedConv",
    "anomaly_maps",
    "gaussian_smooth",
    "reconstruction_error",
]


def _conv_bn_relu(in_channels, out_channels, kernel_size=3, dilation=1):
    """A 'same'-padded convolution followed by batch norm and ReLU.

    The convolution has no bias: the batch norm that follows would cancel it.
    """
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            padding=padding,
            dilation=dilation,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _up_bn_relu(in_channels, out_channels):
    """A 3x3 transposed convolution with stride 2 that exactly doubles H and W."""
    return nn.Sequential(
        nn.ConvTranspose2d(
            in_channels,
            out_channels,
            kernel_size=3,
            stride=2,
            padding=1,
            output_padding=1,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class StackedDilatedConv(nn.Module):
    """A stacked dilated convolution block ``SDC_{d_1, ..., d_k}``.

    The same input goes through ``k`` parallel 'same'-padded dilated
    convolutions (one per dilation rate), each followed by batch norm and
    ReLU; their outputs are concatenated along the channels, so the block
    has ``k * out_channels`` output channels (5 x 64 = 320 in the paper).

    Parameters
    ----------
    in_channels : int
        Channels of the input.
    out_channels : int
        Filters of each dilated convolution.
    kernel_size : int, default=5
        Side of every dilated convolution kernel.
    dilations : sequence of int, default=(1, 2, 4, 8, 16)
        Dilation rates of the parallel convolutions.
    """

    def __init__(self, in_channels, out_channels, kernel_size=5, dilations=(1, 2, 4, 8, 16)):
        super().__init__()
        self.branches = nn.ModuleList(
            _conv_bn_relu(in_channels, out_channels, kernel_size, dilation=int(d))
            for d in dilations
        )

    def forward(self, x):
        return torch.cat([branch(x) for branch in self.branches], dim=1)


class InpaintingAutoencoder(nn.Module):
    """Convolutional autoencoder with stacked dilated convolutions (Table 1).

    With ``width=32`` (the default) the layers are exactly those of Table 1
    of the paper::

        conv 32, conv 32, maxpool /2,
        conv 64, conv 64, maxpool /2,
        conv 128, conv 128, maxpool /2,
        4 x SDC_{1,2,4,8,16} (5 x 64 = 320 channels, 5x5 kernels),
        conv 256, tconv 256 x2, conv 256, conv 128,
        tconv 128 x2, conv 128, conv 64,
        tconv 64 x2, conv 64, conv 32,
        conv 1x1 -> ``out_channels``, sigmoid.

    Every convolution except the last is followed by batch norm and ReLU;
    convolutions are 3x3 unless stated and 'same'-padded.  All filter
    counts are multiples of ``width`` (``width``, ``2 width``, ``4 width``,
    ``8 width``; the SDC branches have ``2 width`` filters each), so a
    small ``width`` gives the same architecture at a smaller cost.

    Parameters
    ----------
    in_channels : int, default=3
        Channels of the input images.
    out_channels : int or None, default=None
        Channels of the reconstruction; ``None`` means ``in_channels``.
    width : int, default=32
        Filters of the first convolution; every other width scales with it.
    n_sdc_blocks : int, default=4
        Number of stacked dilated convolution blocks in the bottleneck.
    dilations : sequence of int, default=(1, 2, 4, 8, 16)
        Dilation rates of each SDC block.

    Notes
    -----
    The input height and width must be multiples of 8 (three max-poolings
    followed by three stride-2 transposed convolutions).  The transposed
    convolutions use ``padding=1, output_padding=1`` so that they double the
    spatial size exactly, as the output sizes of Table 1 require.  The
    convolutions before a batch norm have no bias (it would be cancelled by
    the batch norm's shift); the last 1x1 convolution has one.
    """

    def __init__(
        self,
        in_channels=3,
        out_channels=None,
        width=32,
        n_sdc_blocks=4,
        dilations=(1, 2, 4, 8, 16),
    ):
        super().__init__()
        if out_channels is None:
            out_channels = in_channels
        w = int(width)
        sdc_filters = 2 * w
        sdc_out = sdc_filters * len(dilations)
        self.encoder = nn.Sequential(
            _conv_bn_relu(in_channels, w),
            _conv_bn_relu(w, w),
            nn.MaxPool2d(2, 2),
            _conv_bn_relu(w, 2 * w),
            _conv_bn_relu(2 * w, 2 * w),
            nn.MaxPool2d(2, 2),
            _conv_bn_relu(2 * w, 4 * w),
            _conv_bn_relu(4 * w, 4 * w),
            nn.MaxPool2d(2, 2),
        )
        blocks = []
        channels = 4 * w
        for _ in range(int(n_sdc_blocks)):
            blocks.append(StackedDilatedConv(channels, sdc_filters, 5, dilations))
            channels = sdc_out
        self.bottleneck = nn.Sequential(*blocks)
        self.decoder = nn.Sequential(
            _conv_bn_relu(channels, 8 * w),
            _up_bn_relu(8 * w, 8 * w),
            _conv_bn_relu(8 * w, 8 * w),
            _conv_bn_relu(8 * w, 4 * w),
            _up_bn_relu(4 * w, 4 * w),
            _conv_bn_relu(4 * w, 4 * w),
            _conv_bn_relu(4 * w, 2 * w),
            _up_bn_relu(2 * w, 2 * w),
            _conv_bn_relu(2 * w, 2 * w),
            _conv_bn_relu(2 * w, w),
        )
        self.head = nn.Conv2d(w, out_channels, kernel_size=1)

    def forward(self, x):
        """Reconstruct ``x`` (b, C, H, W) in [0, 1]; H and W multiples of 8."""
        if x.shape[-2] % 8 or x.shape[-1] % 8:
            raise ValueError(
                "InpaintingAutoencoder needs image sides that are multiples of 8, "
                f"got {tuple(x.shape[-2:])}."
            )
        z = self.bottleneck(self.encoder(x))
        return torch.sigmoid(self.head(self.decoder(z)))


def reconstruction_error(reconstruction, images):
    """Root mean square of ``reconstruction - images`` over the channels.

    The paper's "||F(X) - X||_2 averaged over the colour channels": the
    Euclidean norm over the channels divided by ``sqrt(C)``, so grey and
    colour maps share a scale.

    Parameters
    ----------
    reconstruction, images : torch.Tensor of shape (b, C, H, W)
        ``F(X)`` and ``X``.

    Returns
    -------
    error : torch.Tensor of shape (b, H, W)
    """
    return (reconstruction - images).pow(2).mean(dim=1).sqrt()


def _reflect_indices(size, radius, device):
    """Indices of a line of ``size`` extended by ``radius`` on both sides.

    The extension is scipy.ndimage's ``mode="reflect"`` (``d c b a | a b c d
    | d c b a``), repeated as often as ``radius`` needs.
    """
    index = torch.arange(-radius, size + radius, device=device) % (2 * size)
    return torch.where(index >= size, 2 * size - 1 - index, index)


def _smooth_axis(maps, kernel, dim):
    """Correlate ``maps`` (b, H, W) with the 1-D ``kernel`` along ``dim`` (1 or 2)."""
    radius = (len(kernel) - 1) // 2
    size = maps.shape[dim]
    padded = maps.index_select(dim, _reflect_indices(size, radius, maps.device))
    weight = kernel.view(1, 1, -1, 1) if dim == 1 else kernel.view(1, 1, 1, -1)
    return F.conv2d(padded[:, None], weight)[:, 0]


def gaussian_smooth(maps, sigma, truncate=4.0):
    """Gaussian filter of maps ``(b, H, W)`` over H and W, as scipy's.

    Computes what ``scipy.ndimage.gaussian_filter(maps, sigma=(0, sigma,
    sigma), mode="reflect", truncate=truncate)`` computes, on the maps'
    device: the same normalised kernel of radius ``int(truncate * sigma +
    0.5)``, the same reflected borders, one axis after the other in float64,
    each pass rounded to the maps' dtype as scipy rounds to its output's.

    Parameters
    ----------
    maps : torch.Tensor of shape (b, H, W)
        Floating-point maps.
    sigma : float
        Standard deviation in pixels; 0 returns ``maps`` unchanged.
    truncate : float, default=4.0
        Radius of the kernel in standard deviations.

    Returns
    -------
    smoothed : torch.Tensor of shape (b, H, W), dtype of ``maps``
    """
    sigma = float(sigma)
    if sigma <= 0:
        return maps
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64, device=maps.device)
    kernel = torch.exp(-0.5 / (sigma * sigma) * x**2)
    kernel = kernel / kernel.sum()
    out = maps
    for dim in (1, 2):
        out = _smooth_axis(out.to(torch.float64), kernel, dim).to(maps.dtype)
    return out


def anomaly_maps(reconstruction, images, sigma):
    """Smoothed reconstruction-error maps of the inpainting autoencoder.

    Parameters
    ----------
    reconstruction, images : torch.Tensor of shape (b, C, H, W)
        ``F(X)`` and ``X``.
    sigma : float
        Standard deviation of the Gaussian smoothing in pixels (0: none).

    Returns
    -------
    maps : torch.Tensor of shape (b, H, W), float32
        :func:`reconstruction_error` smoothed by :func:`gaussian_smooth`.
    """
    error = reconstruction_error(reconstruction, images).float()
    return gaussian_smooth(error, sigma)
