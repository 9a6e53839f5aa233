"""SSIM and MS-SSIM as per-pixel maps, and MS-SSIM values for small images.

:mod:`pytorch_msssim` returns only the mean SSIM / MS-SSIM of each image and
refuses images whose smaller side is not above ``(win_size - 1) * 16`` (it
asserts room for four halvings whatever the number of scales).  IGD needs

* per-pixel MS-SSIM maps for its anomaly heatmaps (eq. 12), and
* the local MS-SSIM of 32 x 32 patches with a 3-pixel window (four scales:
  32, 16, 8, 4), which that assertion rejects.

This module computes the same quantities as :mod:`pytorch_msssim` (same
Gaussian window, same constants ``C1 = (K1 L)^2``, ``C2 = (K2 L)^2``,
``C3 = C2 / 2`` folded into the contrast-structure term, same 2x2 average
pooling between scales, same ReLU before the weighted product), but keeps the
maps.  With ``padding="valid"`` the mean of :func:`ssim_maps` equals
``pytorch_msssim.ssim`` and :func:`ms_ssim` equals ``pytorch_msssim.ms_ssim``
wherever the latter accepts the input (tested).  :func:`ms_ssim_value` calls
:mod:`pytorch_msssim` itself whenever it can and this module otherwise.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
import torch.nn.functional as F

from .._docstrings import fill_doc

__all__ = [
    "gaussian_window",
    "ssim_maps",
    "ms_ssim",
    "ms_ssim_map",
    "ms_ssim_value",
    "pytorch_msssim_accepts",
    "GLOBAL_WEIGHTS",
    "LOCAL_WEIGHTS",
]

#: The five-scale weights of Wang et al. (2003), used by IGD's global MS-SSIM.
GLOBAL_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
#: IGD's four-scale weights for the local (32 x 32 patch) MS-SSIM (Sec. 4.2).
LOCAL_WEIGHTS = (0.0516, 0.3295, 0.3463, 0.2726)


def gaussian_window(size, sigma=1.5, *, dtype=torch.float32, device=None):
    """Normalised 1-D Gaussian window of odd length ``size``.

    Parameters
    ----------
    size : int
        Odd window length.
    sigma : float, default=1.5
        Standard deviation in pixels.
    dtype, device : torch dtype and device of the result.

    Returns
    -------
    win : Tensor of shape (size,)
    """
    if size < 1 or size % 2 != 1:
        raise ValueError(f"The SSIM window size must be a positive odd integer; got {size}.")
    coords = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _blur(x, win, padding):
    """Separable Gaussian filtering of every channel of ``x`` (b, C, H, W).

    A dimension shorter than the window is left unfiltered, as
    :mod:`pytorch_msssim` does.  ``padding="same"`` reflects the border so the
    output keeps the input's size; ``"valid"`` shrinks it by ``len(win) - 1``.
    """
    channels = x.shape[1]
    size = win.shape[0]
    half = size // 2
    for dim in (2, 3):
        if x.shape[dim] < size:
            continue
        shape = [channels, 1, 1, 1]
        shape[dim] = size
        kernel = win.view(1, 1, -1).expand(channels, 1, size).reshape(shape)
        if padding == "same" and half > 0:
            pad = (0, 0, half, half) if dim == 2 else (half, half, 0, 0)
            x = F.pad(x, pad, mode="reflect")
        x = F.conv2d(x, kernel, groups=channels)
    return x


#: The parameters of every SSIM function here, documented once.
_IMAGE_PAIR_DOC = """\
x, y : Tensor of shape (b, C, H, W)
    Images to compare.
data_range : float
    Dynamic range ``L`` of the pixel values."""
_WINDOW_DOC = """\
win_size : int, default=11
    Odd length of the Gaussian window.
win_sigma : float, default=1.5
    Standard deviation of the window."""


@fill_doc(image_pair=_IMAGE_PAIR_DOC, window=_WINDOW_DOC)
def ssim_maps(x, y, *, data_range, win_size=11, win_sigma=1.5, K=(0.01, 0.03), padding="valid"):
    """Per-pixel SSIM and contrast-structure maps of two image batches.

    Parameters
    ----------
    [image_pair]
    [window]
    K : (float, float), default=(0.01, 0.03)
        ``(K1, K2)``; ``C1 = (K1 L)^2``, ``C2 = (K2 L)^2``, ``C3 = C2 / 2``.
    padding : {"valid", "same"}, default="valid"
        ``"valid"`` gives the maps :mod:`pytorch_msssim` averages;
        ``"same"`` reflects the border so the maps have size (H, W).

    Returns
    -------
    ssim_map, cs_map : Tensor of shape (b, C, H', W')
        ``l * c * s`` and ``c * s`` per pixel and channel.
    """
    if x.shape != y.shape:
        raise ValueError(f"Images to compare differ in shape: {tuple(x.shape)} and {tuple(y.shape)}.")
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same'; got {padding!r}.")
    win = gaussian_window(win_size, win_sigma, dtype=x.dtype, device=x.device)
    c1 = (K[0] * data_range) ** 2
    c2 = (K[1] * data_range) ** 2
    mu_x = _blur(x, win, padding)
    mu_y = _blur(y, win, padding)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    sigma_xx = _blur(x * x, win, padding) - mu_xx
    sigma_yy = _blur(y * y, win, padding) - mu_yy
    sigma_xy = _blur(x * y, win, padding) - mu_xy
    cs_map = (2.0 * sigma_xy + c2) / (sigma_xx + sigma_yy + c2)
    ssim_map = (2.0 * mu_xy + c1) / (mu_xx + mu_yy + c1) * cs_map
    return ssim_map, cs_map


def _downsample(x):
    # The 2x2 average pooling pytorch_msssim applies between scales.
    padding = [int(s) % 2 for s in x.shape[2:]]
    return F.avg_pool2d(x, kernel_size=2, padding=padding)


def _check_weights(weights):
    weights = tuple(float(w) for w in weights)
    if not weights:
        raise ValueError("MS-SSIM needs at least one scale weight.")
    return weights


#: The parameters of :func:`ms_ssim` and :func:`ms_ssim_map`, documented once.
_MS_SSIM_PARAMETERS_DOC = f"""\
Parameters
----------
{_IMAGE_PAIR_DOC}
weights : sequence of float, default=GLOBAL_WEIGHTS
    One exponent per scale, finest first; the last also weighs luminance.
{_WINDOW_DOC}
K : (float, float), default=(0.01, 0.03)
    SSIM constants ``(K1, K2)``."""


def _scale_maps(x, y, weights, **ssim_kwargs):
    """Yield ``(weight, map)`` of each scale of MS-SSIM, finest first.

    The map is :func:`ssim_maps`'s contrast-structure map (``ssim_kwargs``
    passed on), except at the coarsest scale where it is the SSIM map; the
    images are halved (:func:`_downsample`) between scales.
    """
    weights = _check_weights(weights)
    for level, w in enumerate(weights):
        ssim_map, cs_map = ssim_maps(x, y, **ssim_kwargs)
        last = level == len(weights) - 1
        yield w, (ssim_map if last else cs_map)
        if not last:
            x, y = _downsample(x), _downsample(y)


@fill_doc(ms_ssim_parameters=_MS_SSIM_PARAMETERS_DOC)
def ms_ssim(x, y, *, data_range, weights=GLOBAL_WEIGHTS, win_size=11, win_sigma=1.5, K=(0.01, 0.03)):
    """MS-SSIM of each image pair (channel mean), for any image size.

    The same value as ``pytorch_msssim.ms_ssim(..., size_average=False)``
    wherever that function accepts the input; unlike it, small images are
    accepted (a scale smaller than the window is left unfiltered along the
    short dimension, as :mod:`pytorch_msssim` already does for coarse scales).

    [ms_ssim_parameters]

    Returns
    -------
    values : Tensor of shape (b,)
        MS-SSIM of each pair, averaged over channels.
    """
    scales = _scale_maps(x, y, weights, data_range=data_range, win_size=win_size, win_sigma=win_sigma, K=K)
    factors = [torch.relu(m.flatten(2).mean(-1)) ** w for w, m in scales]
    return torch.stack(factors).prod(0).mean(1)


@fill_doc(ms_ssim_parameters=_MS_SSIM_PARAMETERS_DOC)
def ms_ssim_map(x, y, *, data_range, weights=GLOBAL_WEIGHTS, win_size=11, win_sigma=1.5, K=(0.01, 0.03)):
    """Per-pixel MS-SSIM map at the input resolution.

    At every scale the contrast-structure map (the SSIM map at the coarsest
    scale) is computed with a border-reflecting Gaussian window
    (``padding="same"``), bilinearly resized back to (H, W), clipped at 0 and
    raised to its scale weight; the map is the product of these factors,
    averaged over channels.  Identical images give a map of ones.

    [ms_ssim_parameters]

    Returns
    -------
    map : Tensor of shape (b, H, W)
        Local MS-SSIM, in [0, 1]; low where the images differ.
    """
    size = x.shape[-2:]
    out = None
    scales = _scale_maps(
        x, y, weights, data_range=data_range, win_size=win_size, win_sigma=win_sigma, K=K, padding="same"
    )
    for w, factor in scales:
        if factor.shape[-2:] != size:
            factor = F.interpolate(factor, size=size, mode="bilinear", align_corners=False)
        factor = torch.relu(factor) ** w
        out = factor if out is None else out * factor
    return out.mean(1)


def pytorch_msssim_accepts(height, width, *, n_scales, win_size):
    """Whether ``pytorch_msssim.ms_ssim`` takes this size without assertion or warning.

    It asserts ``min(H, W) > (win_size - 1) * 16`` and warns (skipping the
    smoothing) when a scale is narrower than the window.
    """
    smaller = min(height, width)
    coarsest = smaller
    for _ in range(n_scales - 1):
        coarsest = (coarsest + coarsest % 2) // 2
    return smaller > (win_size - 1) * 16 and coarsest >= win_size


_OWN_ONLY = [False]


@contextlib.contextmanager
def own_ms_ssim_only():
    """Inside the block :func:`ms_ssim_value` always uses :func:`ms_ssim`.

    For ONNX export: :mod:`pytorch_msssim` builds its Gaussian window from
    tensor operations, which the exporter sees as a convolution kernel of
    unknown shape; :func:`ms_ssim` computes the same formula with a constant
    window (the two agree to float32 rounding, which the export parity
    tests check).
    """
    _OWN_ONLY[0], saved = True, _OWN_ONLY[0]
    try:
        yield
    finally:
        _OWN_ONLY[0] = saved


def ms_ssim_value(x, y, *, data_range, weights, win_size):
    """MS-SSIM of each image pair, by :mod:`pytorch_msssim` whenever it accepts the size.

    Falls back to :func:`ms_ssim` (the same formula) for images too small for
    :mod:`pytorch_msssim`'s assertion, or so small that it would skip the
    smoothing at a coarse scale and warn.

    Returns
    -------
    values : Tensor of shape (b,)
    """
    weights = _check_weights(weights)
    h, w = x.shape[-2:]
    if not _OWN_ONLY[0] and pytorch_msssim_accepts(h, w, n_scales=len(weights), win_size=win_size):
        from pytorch_msssim import ms_ssim as _library_ms_ssim

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return _library_ms_ssim(
                x, y, data_range=data_range, size_average=False, win_size=win_size, weights=list(weights)
            )
    return ms_ssim(x, y, data_range=data_range, weights=weights, win_size=win_size)
