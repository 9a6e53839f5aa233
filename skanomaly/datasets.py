"""Data sets and synthetic defects for visual anomaly detection.

This module gathers what the examples, tests and benchmarks need to obtain
images:

- :func:`make_defects` plants realistic synthetic defects (scratches, stains,
  foreign patches, smears) into normal images and returns exact
  ground-truth masks;
- :func:`make_texture_defects` builds a small train/test set from a texture
  shipped with scikit-image, with defects planted in part of the test set;
- :func:`one_class_split` implements the one-class protocol used on
  classification data sets (one class is normal, the others are anomalies);
- :func:`load_fashion_mnist` reads Fashion-MNIST's IDX files;
- :func:`load_mvtec_ad` reads one category of MVTec AD;
- :func:`load_image_folder` reads a user's own folders of images.

Only NumPy, SciPy and Pillow are needed at run time; scikit-image is imported
lazily by :func:`make_texture_defects` alone.
"""

import colorsys
import gzip
import os
import struct
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from scipy import ndimage
from sklearn.utils import Bunch, check_random_state

__all__ = [
    "DEFECT_KINDS",
    "FASHION_MNIST_CLASSES",
    "IMAGE_EXTENSIONS",
    "load_fashion_mnist",
    "load_image_folder",
    "load_mvtec_ad",
    "make_defects",
    "make_texture_defects",
    "one_class_split",
    "read_images",
]

#: The kinds of defect :func:`make_defects` can plant.
DEFECT_KINDS = ("scratch", "stain", "patch", "smear")

#: Fashion-MNIST's class names, indexed by label.
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: File name extensions (lower case) read as images by the folder loaders.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# Opacity below which a defect's footprint is cut to exactly zero, so that the
# returned mask is finite and the image is bit-identical outside it.
_ALPHA_FLOOR = 0.1


# --------------------------------------------------------------------------
# Input handling for make_defects
# --------------------------------------------------------------------------


def _as_image_stack(images):
    """Validate ``images``; return ``(float view (n, H, W, C), original array)``."""
    if hasattr(images, "detach") and hasattr(images, "numpy"):
        raise TypeError(
            "make_defects expects a NumPy array (n, H, W) or (n, H, W, C), got a "
            "torch tensor; convert it with tensor.permute(0, 2, 3, 1).numpy()."
        )
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError("images is an empty list; at least one image is needed.")
        shapes = {np.shape(im) for im in images}
        if len(shapes) != 1:
            raise ValueError(
                f"All images must have the same shape; got shapes {sorted(shapes)}."
            )
        images = np.stack([np.asarray(im) for im in images])
    arr = np.asarray(images)
    if arr.dtype == np.bool_ or not (
        arr.dtype == np.uint8 or np.issubdtype(arr.dtype, np.floating)
    ):
        raise TypeError(
            f"images must be uint8 (0-255) or float (0-1); got dtype {arr.dtype}."
        )
    if arr.ndim not in (3, 4):
        raise ValueError(
            "images must be an array of shape (n, H, W) or (n, H, W, C); got "
            f"ndim={arr.ndim} (shape {arr.shape})."
        )
    if arr.ndim == 4 and arr.shape[-1] not in (1, 3):
        raise ValueError(
            f"images must have 1 or 3 channels (last axis); got {arr.shape[-1]}."
        )
    if arr.shape[0] == 0:
        raise ValueError("images is empty; at least one image is needed.")
    if arr.shape[1] < 2 or arr.shape[2] < 2:
        raise ValueError(f"images are too small to hold a defect: {arr.shape[1:3]}.")
    if arr.dtype != np.uint8:
        if not np.all(np.isfinite(arr)):
            raise ValueError("images contains NaN or infinite values.")
        if arr.min() < 0.0 or arr.max() > 1.0:
            raise ValueError(
                "Float images must lie in [0, 1]; got values in "
                f"[{arr.min():.4g}, {arr.max():.4g}]."
            )
    return _FloatImages(arr), arr


class _FloatImages:
    """Read-only view of validated images as float64 (H, W, C) in [0, 1].

    Images are converted one at a time, so planting defects in a large batch
    never holds more than a few float copies of single images.
    """

    def __init__(self, arr):
        self.arr = arr
        n, h, w = arr.shape[:3]
        self.shape = (n, h, w, arr.shape[3] if arr.ndim == 4 else 1)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, i):
        x = self.arr[i].astype(np.float64)
        if self.arr.dtype == np.uint8:
            x /= 255.0
        return x[..., None] if x.ndim == 2 else x


def _check_kinds(kinds):
    if isinstance(kinds, str):
        kinds = (kinds,)
    kinds = tuple(kinds)
    if len(kinds) == 0:
        raise ValueError("kinds must name at least one defect kind.")
    unknown = [k for k in kinds if k not in DEFECT_KINDS]
    if unknown:
        raise ValueError(
            f"Unknown defect kind(s) {unknown}; choose among {list(DEFECT_KINDS)}."
        )
    return kinds


def _check_n_defects(n_defects):
    if isinstance(n_defects, Integral) and not isinstance(n_defects, bool):
        lo = hi = int(n_defects)
    elif (
        isinstance(n_defects, (tuple, list))
        and len(n_defects) == 2
        and all(isinstance(v, Integral) and not isinstance(v, bool) for v in n_defects)
    ):
        lo, hi = int(n_defects[0]), int(n_defects[1])
    else:
        raise TypeError(
            f"n_defects must be an int or a pair (min, max) of ints; got {n_defects!r}."
        )
    if lo < 1 or hi < lo:
        raise ValueError(f"n_defects must satisfy 1 <= min <= max; got {n_defects!r}.")
    return lo, hi


def _check_size_range(size_range):
    try:
        lo, hi = (float(v) for v in size_range)
    except (TypeError, ValueError):
        raise TypeError(
            f"size_range must be a pair (min, max) of floats; got {size_range!r}."
        ) from None
    if not (0.0 < lo <= hi <= 1.0):
        raise ValueError(
            f"size_range must satisfy 0 < min <= max <= 1; got {size_range!r}."
        )
    return lo, hi


# --------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------


def _window(cy, cx, radius, shape):
    """Integer window around (cy, cx) covering ``radius`` pixels, clipped."""
    h, w = shape
    y0 = max(int(np.floor(cy - radius)), 0)
    y1 = min(int(np.ceil(cy + radius)) + 1, h)
    x0 = max(int(np.floor(cx - radius)), 0)
    x1 = min(int(np.ceil(cx + radius)) + 1, w)
    if y1 <= y0:
        y0, y1 = min(max(int(cy), 0), h - 1), min(max(int(cy), 0), h - 1) + 1
    if x1 <= x0:
        x0, x1 = min(max(int(cx), 0), w - 1), min(max(int(cx), 0), w - 1) + 1
    return slice(y0, y1), slice(x0, x1)


def _grid(sl):
    """Pixel-centre coordinates (yy, xx) of a window."""
    yy, xx = np.mgrid[sl[0], sl[1]]
    return yy.astype(np.float64), xx.astype(np.float64)


def _pick_centre(rng, shape, radius):
    """A centre that keeps a defect of ``radius`` inside the image if possible."""
    centre = []
    for side in shape:
        lo = min(radius, (side - 1) / 2.0)
        hi = max(side - 1 - radius, (side - 1) / 2.0)
        centre.append(rng.uniform(lo, hi))
    return centre


def _luminance(pixels):
    """Mean luminance of pixels (..., C) in [0, 1]."""
    if pixels.shape[-1] == 3:
        return float(np.mean(pixels @ np.array([0.299, 0.587, 0.114])))
    return float(np.mean(pixels))


def _weighted_luminance(patch, alpha):
    wsum = alpha.sum()
    if wsum <= 0:
        return _luminance(patch)
    lum = patch @ np.array([0.299, 0.587, 0.114]) if patch.shape[-1] == 3 else patch[..., 0]
    return float((lum * alpha).sum() / wsum)


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _floor_alpha(alpha):
    alpha = np.clip(alpha, 0.0, 1.0)
    alpha[alpha < _ALPHA_FLOOR] = 0.0
    return alpha


def _stain_colour(rng, n_channels, dark):
    """A stain colour: dark or light, tinted for RGB images."""
    value = rng.uniform(0.05, 0.3) if dark else rng.uniform(0.7, 0.95)
    if n_channels == 1:
        return np.array([value])
    hue = rng.uniform(0.0, 1.0)
    sat = rng.uniform(0.3, 0.8)
    return np.array(colorsys.hsv_to_rgb(hue, sat, value))


# --------------------------------------------------------------------------
# The four defect kinds. Each returns (window, alpha, content) where alpha is
# the opacity (exactly 0 outside the footprint) and content the values the
# defect paints, both on the window.
# --------------------------------------------------------------------------


def _scratch(image, extent, rng, pool, index):
    h, w, c = image.shape
    n_seg = rng.randint(1, 4)
    theta = rng.uniform(0.0, np.pi)
    seg_len = extent / n_seg
    points = [np.zeros(2)]
    for _ in range(n_seg):
        theta += rng.normal(0.0, 0.35)
        step = seg_len * np.array([np.sin(theta), np.cos(theta)])
        points.append(points[-1] + step)
    points = np.array(points)
    points -= points.mean(axis=0)
    half = np.abs(points).max(axis=0)
    cy, cx = _pick_centre(rng, (h, w), float(half.max()))
    points += np.array([cy, cx])
    thickness = max(1.0, extent * rng.uniform(0.03, 0.07))

    sl = _window(cy, cx, float(half.max()) + thickness + 1.0, (h, w))
    yy, xx = _grid(sl)
    dist = np.full(yy.shape, np.inf)
    for p, q in zip(points[:-1], points[1:]):
        d = q - p
        length2 = float(d @ d)
        if length2 == 0.0:
            t = np.zeros_like(yy)
        else:
            t = np.clip(((yy - p[0]) * d[0] + (xx - p[1]) * d[1]) / length2, 0.0, 1.0)
        dist = np.minimum(dist, np.hypot(yy - (p[0] + t * d[0]), xx - (p[1] + t * d[1])))
    # Anti-aliased line: full opacity within thickness / 2, one-pixel ramp.
    alpha = np.clip(thickness / 2.0 + 0.5 - dist, 0.0, 1.0)
    if alpha.max() < _ALPHA_FLOOR:  # degenerate tiny window: mark the centre
        alpha.flat[np.argmin(dist)] = 1.0
    alpha *= rng.uniform(0.85, 1.0)
    alpha = _floor_alpha(alpha)
    local = _weighted_luminance(image[sl], alpha)
    dark = local > 0.5
    value = rng.uniform(0.0, 0.12) if dark else rng.uniform(0.88, 1.0)
    content = np.broadcast_to(np.full(c, value), alpha.shape + (c,))
    return sl, alpha, content


def _stain(image, extent, rng, pool, index):
    h, w, c = image.shape
    radius = max(extent / 2.0, 1.5)
    sigma = max(0.15 * radius, 0.5)
    cy, cx = _pick_centre(rng, (h, w), radius)
    sl = _window(cy, cx, radius + 2.0 * sigma, (h, w))
    yy, xx = _grid(sl)
    shape = np.zeros(yy.shape)
    for _ in range(rng.randint(1, 5)):
        oy, ox = rng.uniform(-0.4, 0.4, size=2) * radius
        a, b = rng.uniform(0.45, 0.8, size=2) * radius
        phi = rng.uniform(0.0, np.pi)
        dy, dx = yy - (cy + oy), xx - (cx + ox)
        u = dy * np.cos(phi) + dx * np.sin(phi)
        v = -dy * np.sin(phi) + dx * np.cos(phi)
        shape = np.maximum(shape, ((u / a) ** 2 + (v / b) ** 2 <= 1.0).astype(float))
    if shape.max() == 0.0:
        shape[np.unravel_index(np.argmin(np.hypot(yy - cy, xx - cx)), yy.shape)] = 1.0
    blob = ndimage.gaussian_filter(shape, sigma, mode="constant")
    blob /= blob.max()
    # Uneven density inside the stain (low-frequency noise).
    noise = ndimage.gaussian_filter(rng.uniform(size=yy.shape), max(radius / 3.0, 0.5))
    noise = (noise - noise.min()) / max(np.ptp(noise), 1e-12)
    alpha = blob * rng.uniform(0.6, 0.9) * (0.75 + 0.25 * noise)
    alpha = _floor_alpha(alpha)
    if not alpha.any():
        alpha[np.unravel_index(np.argmax(blob), blob.shape)] = 0.6
    dark = _weighted_luminance(image[sl], alpha) > 0.4
    colour = _stain_colour(rng, c, dark)
    content = np.broadcast_to(colour, alpha.shape + (c,))
    return sl, alpha, content


def _patch(image, extent, rng, pool, index):
    h, w, c = image.shape
    side_a = max(extent, 2.0)
    side_b = max(extent * rng.uniform(0.6, 1.0), 2.0)
    radius = 0.5 * np.hypot(side_a, side_b)
    cy, cx = _pick_centre(rng, (h, w), radius)
    theta = rng.uniform(0.0, np.pi)  # orientation of the footprint
    phi = rng.uniform(np.pi / 6.0, 2.0 * np.pi - np.pi / 6.0)  # content rotation
    scale = rng.uniform(0.8, 1.25)

    n_images = len(pool)
    if n_images > 1 and rng.uniform() < 0.5:
        other = rng.randint(n_images - 1)  # any image but this one
        source = pool[other + (other >= index)]
        sy, sx = rng.uniform(0, h - 1), rng.uniform(0, w - 1)
    else:
        source = image
        best, best_d = None, -1.0
        for _ in range(20):
            sy, sx = rng.uniform(0, h - 1), rng.uniform(0, w - 1)
            d = np.hypot(sy - cy, sx - cx)
            if d >= radius * 1.5:
                best = (sy, sx)
                break
            if d > best_d:
                best, best_d = (sy, sx), d
        sy, sx = best

    sl = _window(cy, cx, radius + 1.0, (h, w))
    yy, xx = _grid(sl)
    dy, dx = yy - cy, xx - cx
    u = dy * np.cos(theta) + dx * np.sin(theta)
    v = -dy * np.sin(theta) + dx * np.cos(theta)
    inside = np.minimum(side_a / 2.0 - np.abs(u), side_b / 2.0 - np.abs(v))
    alpha = np.clip(inside + 0.5, 0.0, 1.0)
    if alpha.max() < _ALPHA_FLOOR:
        alpha[np.unravel_index(np.argmax(inside), inside.shape)] = 1.0
    alpha = _floor_alpha(alpha)

    src_y = sy + scale * (dy * np.cos(phi) - dx * np.sin(phi))
    src_x = sx + scale * (dy * np.sin(phi) + dx * np.cos(phi))
    content = np.stack(
        [
            ndimage.map_coordinates(source[..., ch], [src_y, src_x], order=1, mode="mirror")
            for ch in range(c)
        ],
        axis=-1,
    )
    # A foreign patch identical to its surroundings (flat images) would be no
    # defect at all: give it a brightness offset away from the local level.
    weights = alpha[..., None]
    change = float((np.abs(content - image[sl]) * weights).sum() / (weights.sum() * c))
    if change < 0.08:
        level = _weighted_luminance(content, alpha)
        delta = rng.uniform(0.15, 0.3) * (-1.0 if level > 0.5 else 1.0)
        content = np.clip(content + delta, 0.0, 1.0)
    return sl, alpha, content


def _smear(image, extent, rng, pool, index):
    h, w, c = image.shape
    major = max(extent / 2.0, 1.5)
    minor = max(major * rng.uniform(0.35, 0.7), 1.0)
    cy, cx = _pick_centre(rng, (h, w), major)
    theta = rng.uniform(0.0, np.pi)
    sl = _window(cy, cx, major + 1.0, (h, w))
    yy, xx = _grid(sl)
    dy, dx = yy - cy, xx - cx
    u = dy * np.cos(theta) + dx * np.sin(theta)
    v = -dy * np.sin(theta) + dx * np.cos(theta)
    ellipse = np.sqrt((u / major) ** 2 + (v / minor) ** 2)
    alpha = _smoothstep((1.0 - ellipse) / 0.4)
    if alpha.max() < _ALPHA_FLOOR:
        alpha[np.unravel_index(np.argmin(ellipse), ellipse.shape)] = 1.0
    alpha = _floor_alpha(alpha)

    # Motion blur along the smear's direction (the smudge), sampled from the
    # whole image so that the blur reaches across the footprint's border.
    length = max(major * rng.uniform(0.5, 1.0), 2.0)
    n_taps = int(np.clip(np.ceil(length), 5, 33))
    offsets = np.linspace(-length / 2.0, length / 2.0, n_taps)
    blurred = np.zeros(yy.shape + (c,))
    for t in offsets:
        coords = [yy + t * np.cos(theta), xx + t * np.sin(theta)]
        for ch in range(c):
            blurred[..., ch] += ndimage.map_coordinates(
                image[..., ch], coords, order=1, mode="mirror"
            )
    blurred /= n_taps
    # Smudging also lowers contrast and leaves a faint film of dirt.
    mean = blurred.reshape(-1, c).mean(axis=0)
    content = mean + (blurred - mean) * (1.0 - rng.uniform(0.2, 0.5))
    if _weighted_luminance(image[sl], alpha) < 0.25:
        content = content + (1.0 - content) * rng.uniform(0.1, 0.25)
    else:
        content = content * rng.uniform(0.78, 0.92)
    return sl, alpha, np.clip(content, 0.0, 1.0)


_DEFECT_FUNCTIONS = {
    "scratch": _scratch,
    "stain": _stain,
    "patch": _patch,
    "smear": _smear,
}


def make_defects(
    images,
    *,
    kinds=DEFECT_KINDS,
    n_defects=1,
    size_range=(0.08, 0.25),
    random_state=None,
):
    """Plant synthetic defects into normal images.

    Every image receives ``n_defects`` defects, each of a kind drawn uniformly
    from ``kinds``, at a random place, size and orientation:

    - ``"scratch"``: a thin anti-aliased polyline (one to three segments with
      slight bends), dark on bright surroundings and bright on dark ones;
    - ``"stain"``: a blurred blob of uneven density made of a few ellipses,
      dark (or light on dark surroundings) and tinted for RGB images, partly
      transparent so the surface shows through;
    - ``"patch"``: a foreign rectangle of material copied from another place of
      the same image or from another image of the batch, rotated (30 to 330
      degrees) and rescaled (0.8 to 1.25), pasted at a random orientation;
    - ``"smear"``: an elliptical region smudged by a motion blur along its
      long axis, with lowered contrast and a faint film of dirt.

    Parameters
    ----------
    images : ndarray of shape (n_images, H, W) or (n_images, H, W, C)
        Normal images, ``C`` in {1, 3}, channels last. ``uint8`` means 0-255,
        floats mean 0-1. A list of equally shaped arrays is accepted too.
    kinds : str or sequence of str, default=("scratch", "stain", "patch", "smear")
        Kinds of defect to draw from; see :data:`DEFECT_KINDS`.
    n_defects : int or tuple of (int, int), default=1
        Number of defects per image, or the inclusive range ``(min, max)`` it
        is drawn from uniformly for each image.
    size_range : tuple of (float, float), default=(0.08, 0.25)
        Range of a defect's extent (a scratch's length, a stain's or smear's
        diameter, a patch's longer side) as a fraction of the shorter image
        side; drawn uniformly for each defect. Defects are at least about
        three pixels across whatever the image size.
    random_state : int, RandomState instance or None, default=None
        Seed of every random choice; pass an int for reproducible output.

    Returns
    -------
    defective : ndarray of the shape and dtype of ``images``
        The images with defects planted (a NumPy array even when ``images`` is
        a list).
    masks : ndarray of shape (n_images, H, W), dtype=bool
        Ground truth: ``True`` on each defect's footprint, ``False``
        elsewhere.

    Notes
    -----
    The mask is the footprint of the planted defects: the pixels where a
    defect's opacity is non-zero. Opacities below 0.1 (anti-aliasing and
    blur tails) are cut to exactly zero, so outside the mask the returned
    image is bit-for-bit the input image. Inside the mask a pixel may keep
    its value (a smear over a flat region, a rounding to the same ``uint8``
    level, a stain of the surface's colour); ground truth marks the
    defect's region, as human annotations of real defects do, rather than
    the exact set of changed values.

    Defects are made visible on any background: scratches and stains take the
    opposite brightness of their surroundings, and a foreign patch whose
    content would be indistinguishable from the place it covers gets a
    brightness offset of 0.15 to 0.3. Defects are placed so that they fit in
    the image where possible; with ``n_defects > 1`` they may overlap.

    Examples
    --------
    >>> import numpy as np
    >>> from skanomaly.datasets import make_defects
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(0.3, 0.7, size=(4, 32, 32))
    >>> X_bad, masks = make_defects(X, kinds="scratch", random_state=0)
    >>> X_bad.shape, masks.shape, masks.dtype
    ((4, 32, 32), (4, 32, 32), dtype('bool'))
    >>> bool(np.all(X_bad[~masks] == X[~masks]))
    True
    """
    work, original = _as_image_stack(images)
    kinds = _check_kinds(kinds)
    lo_n, hi_n = _check_n_defects(n_defects)
    lo_s, hi_s = _check_size_range(size_range)
    rng = check_random_state(random_state)

    n, h, w, c = work.shape
    masks = np.zeros((n, h, w), dtype=bool)
    defective = original.copy()
    for i in range(n):
        image = work[i]
        mask = masks[i]
        for _ in range(rng.randint(lo_n, hi_n + 1)):
            kind = kinds[rng.randint(len(kinds))]
            extent = max(rng.uniform(lo_s, hi_s) * min(h, w), 3.0)
            # Foreign patches are copied from the clean images in ``work``.
            sl, alpha, content = _DEFECT_FUNCTIONS[kind](image, extent, rng, work, i)
            a = alpha[..., None]
            region = image[sl]
            image[sl] = np.where(a > 0.0, (1.0 - a) * region + a * content, region)
            mask[sl] |= alpha > 0.0
        if original.dtype == np.uint8:
            painted = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
        else:
            painted = np.clip(image, 0.0, 1.0).astype(original.dtype)
        if original.ndim == 3:
            painted, keep = painted[..., 0], mask
        else:
            keep = mask[..., None]
        defective[i] = np.where(keep, painted, original[i])
    return defective, masks


# --------------------------------------------------------------------------
# Texture data set
# --------------------------------------------------------------------------

_TEXTURES = ("brick", "grass", "gravel")


def make_texture_defects(
    texture="brick",
    *,
    n_train=60,
    n_test=40,
    image_size=64,
    defect_ratio=0.5,
    kinds=DEFECT_KINDS,
    n_defects=1,
    size_range=(0.1, 0.3),
    random_state=None,
):
    """Crops of a texture from scikit-image, with defects planted in some.

    The texture (512 x 512 grey levels, shipped with scikit-image) is cut in
    two: training crops come from its upper 60 %, test crops from its lower
    40 %, so no test pixel is seen during training. A share ``defect_ratio``
    of the test crops receive defects from :func:`make_defects`.

    Parameters
    ----------
    texture : {"brick", "grass", "gravel"} or ndarray of shape (H, W) or (H, W, 3), default="brick"
        A texture from :mod:`skimage.data`, or your own image (uint8 or
        float in [0, 1]), large enough for the crops.
    n_train : int, default=60
        Number of normal training crops.
    n_test : int, default=40
        Number of test crops.
    image_size : int, default=64
        Side of the square crops, in pixels.
    defect_ratio : float, default=0.5
        Share of test crops that receive defects (rounded to an integer
        count, at least one when ``defect_ratio > 0``).
    kinds, n_defects, size_range
        Passed to :func:`make_defects`.
    random_state : int, RandomState instance or None, default=None
        Seed of the crop positions and defects.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        ``X_train`` (n_train, s, s[, 3]) uint8 normal crops; ``X_test``
        (n_test, s, s[, 3]) uint8; ``y_test`` (n_test,) int, 1 for a
        defective crop, 0 for a normal one; ``masks_test`` (n_test, s, s)
        bool ground truth (all ``False`` for normal crops); ``texture`` the
        texture's name.

    Notes
    -----
    scikit-image is needed for the named textures; it is imported here only.
    """
    name = texture if isinstance(texture, str) else "custom"
    if isinstance(texture, str):
        if texture not in _TEXTURES:
            raise ValueError(f"texture must be one of {list(_TEXTURES)}; got {texture!r}.")
        try:
            import skimage.data
        except ImportError as exc:  # pragma: no cover - depends on environment
            raise ImportError(
                "make_texture_defects needs scikit-image for its textures: "
                "pip install scikit-image"
            ) from exc
        source = getattr(skimage.data, texture)()
    else:
        source = np.asarray(texture)
        if source.ndim not in (2, 3):
            raise ValueError("texture must be a 2-D (H, W) or 3-D (H, W, 3) array.")
        if np.issubdtype(source.dtype, np.floating):
            source = np.clip(np.rint(source * 255.0), 0, 255).astype(np.uint8)
        elif source.dtype != np.uint8:
            raise TypeError(f"texture must be uint8 or float; got {source.dtype}.")
    for param, value in (("n_train", n_train), ("n_test", n_test), ("image_size", image_size)):
        if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{param} must be a positive int; got {value!r}.")
    if not isinstance(defect_ratio, Real) or not 0.0 <= defect_ratio <= 1.0:
        raise ValueError(f"defect_ratio must be a float in [0, 1]; got {defect_ratio!r}.")
    h, w = source.shape[:2]
    split = int(round(0.6 * h))
    if image_size > min(split, h - split, w):
        raise ValueError(
            f"image_size={image_size} is too large for a {h}x{w} texture "
            f"(at most {min(split, h - split, w)})."
        )
    rng = check_random_state(random_state)

    def crops(top, bottom, count):
        ys = rng.randint(top, bottom - image_size + 1, size=count)
        xs = rng.randint(0, w - image_size + 1, size=count)
        return np.stack([source[y : y + image_size, x : x + image_size] for y, x in zip(ys, xs)])

    X_train = crops(0, split, n_train)
    X_test = crops(split, h, n_test)
    n_bad = int(round(defect_ratio * n_test))
    if defect_ratio > 0 and n_bad == 0:
        n_bad = 1
    order = rng.permutation(n_test)
    bad = np.sort(order[:n_bad])
    y_test = np.zeros(n_test, dtype=int)
    y_test[bad] = 1
    masks_test = np.zeros((n_test, image_size, image_size), dtype=bool)
    if n_bad:
        X_bad, masks_bad = make_defects(
            X_test[bad],
            kinds=kinds,
            n_defects=n_defects,
            size_range=size_range,
            random_state=rng,
        )
        X_test[bad] = X_bad
        masks_test[bad] = masks_bad
    return Bunch(
        X_train=X_train,
        X_test=X_test,
        y_test=y_test,
        masks_test=masks_test,
        texture=name,
    )


# --------------------------------------------------------------------------
# One-class protocol
# --------------------------------------------------------------------------


def one_class_split(X, y, normal_class, *, train_size=0.8, random_state=None):
    """Split a labelled data set for the one-class protocol.

    The images of ``normal_class`` are normal; every other class is an
    anomaly. A random share ``train_size`` of the normal images forms the
    training set (normal images only); the rest of the normal images and all
    images of the other classes form the test set, in their original order.

    Parameters
    ----------
    X : array-like of shape (n_samples, ...)
        Images (any layout; only the first axis is indexed).
    y : array-like of shape (n_samples,)
        Class labels.
    normal_class : label or sequence of labels
        The class (or classes) taken as normal.
    train_size : float or int, default=0.8
        A float in (0, 1) is the share of normal images used for training; an
        int is their number. At least one normal image is left for the test
        set.
    random_state : int, RandomState instance or None, default=None
        Seed of the choice of training images.

    Returns
    -------
    X_train : ndarray of shape (n_train, ...)
        Normal training images.
    X_test : ndarray of shape (n_test, ...)
        Test images: remaining normal images and all anomalies.
    y_test : ndarray of shape (n_test,), dtype=int
        1 for an anomaly (a class other than ``normal_class``), 0 for normal.

    Notes
    -----
    The usual protocol on MNIST-like data sets (as in IGD's experiments)
    trains on the normal class of the official training split and tests on
    the whole official test split; with separate splits call this function
    with ``train_size`` equal to all normal images of the training split, or
    select them directly with ``X_train[y_train == c]``.

    Examples
    --------
    >>> import numpy as np
    >>> from skanomaly.datasets import one_class_split
    >>> X = np.arange(10)[:, None]
    >>> y = np.array([0, 1] * 5)
    >>> X_train, X_test, y_test = one_class_split(X, y, 0, train_size=3, random_state=0)
    >>> len(X_train), len(X_test), int(y_test.sum())
    (3, 7, 5)
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D; got shape {y.shape}.")
    if X.shape[0] != y.shape[0]:
        raise ValueError(
            f"X and y have different numbers of samples: {X.shape[0]} and {y.shape[0]}."
        )
    classes = np.atleast_1d(np.asarray(normal_class))
    missing = [c for c in classes.tolist() if not np.any(y == c)]
    if missing:
        raise ValueError(
            f"normal_class {missing} does not occur in y (classes: {np.unique(y).tolist()})."
        )
    normal = np.isin(y, classes)
    normal_idx = np.flatnonzero(normal)
    n_normal = normal_idx.size
    if isinstance(train_size, bool):
        raise TypeError("train_size must be a float or an int, not a bool.")
    if isinstance(train_size, Integral):
        n_train = int(train_size)
        if not 1 <= n_train < n_normal:
            raise ValueError(
                f"train_size={train_size} must be in [1, {n_normal - 1}]: there are "
                f"{n_normal} normal samples and one is kept for testing."
            )
    elif isinstance(train_size, Real):
        if not 0.0 < train_size < 1.0:
            raise ValueError(f"A float train_size must be in (0, 1); got {train_size}.")
        n_train = int(np.floor(train_size * n_normal))
        n_train = min(max(n_train, 1), n_normal - 1)
        if n_train < 1:
            raise ValueError("There are too few normal samples to split.")
    else:
        raise TypeError(f"train_size must be a float or an int; got {train_size!r}.")
    rng = check_random_state(random_state)
    train_idx = np.sort(rng.choice(normal_idx, size=n_train, replace=False))
    test_mask = np.ones(y.shape[0], dtype=bool)
    test_mask[train_idx] = False
    test_idx = np.flatnonzero(test_mask)
    y_test = (~normal[test_idx]).astype(int)
    return X[train_idx], X[test_idx], y_test


# --------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_idx(path):
    """Read an IDX file (optionally gzip-compressed) into an ndarray."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"Cannot read IDX file {path}: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number).")
    dtype = _IDX_DTYPES[data[2]]
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path} is truncated (incomplete header).")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    count = int(np.prod(shape)) if ndim else 1
    if len(data) - header != count * dtype.itemsize:
        raise ValueError(
            f"{path} holds {len(data) - header} data bytes; its header announces "
            f"shape {shape} ({count * dtype.itemsize} bytes)."
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _find_idx(root, stem):
    for name in (stem, stem + ".gz"):
        path = root / name
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}[.gz] not found in {root}. Install the data set "
        "with `apt-get install dataset-fashion-mnist` or download it from "
        "https://github.com/zalandoresearch/fashion-mnist and pass its folder as root."
    )


def load_fashion_mnist(root="/usr/share/datasets/fashion-mnist", *, subset="train"):
    """Load Fashion-MNIST from its IDX files.

    Parameters
    ----------
    root : str or path-like, default="/usr/share/datasets/fashion-mnist"
        Folder holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each
        optionally gzip-compressed (``.gz``).
    subset : {"train", "test", "all"}, default="train"
        The official training split (60 000 images), test split (10 000), or
        both concatenated (training first).

    Returns
    -------
    X : ndarray of shape (n_images, 28, 28), dtype=uint8
        Grey-level images.
    y : ndarray of shape (n_images,), dtype=int64
        Class labels 0-9; names in :data:`FASHION_MNIST_CLASSES`.

    Raises
    ------
    FileNotFoundError
        When the files are absent (the message says how to install them).
    ValueError
        When a file is not a valid IDX file or images and labels disagree.
    """
    if subset not in ("train", "test", "all"):
        raise ValueError(f"subset must be 'train', 'test' or 'all'; got {subset!r}.")
    root = Path(os.fspath(root)).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"Fashion-MNIST folder {root} does not exist. Install the data set with "
            "`apt-get install dataset-fashion-mnist` or pass the folder holding its "
            "IDX files as root."
        )
    prefixes = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}[subset]
    images, labels = [], []
    for prefix in prefixes:
        X = _read_idx(_find_idx(root, f"{prefix}-images-idx3-ubyte"))
        y = _read_idx(_find_idx(root, f"{prefix}-labels-idx1-ubyte"))
        if X.ndim != 3 or y.ndim != 1 or X.shape[0] != y.shape[0]:
            raise ValueError(
                f"Fashion-MNIST {prefix} files disagree: images {X.shape}, labels {y.shape}."
            )
        images.append(X.astype(np.uint8, copy=False))
        labels.append(y.astype(np.int64))
    return np.concatenate(images), np.concatenate(labels)


# --------------------------------------------------------------------------
# Image folders and MVTec AD
# --------------------------------------------------------------------------


def _list_images(folder):
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Image folder {folder} does not exist or is not a folder.")
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _normalise_size(image_size):
    if image_size is None:
        return None
    if isinstance(image_size, Integral) and not isinstance(image_size, bool):
        size = (int(image_size), int(image_size))
    else:
        try:
            size = tuple(int(v) for v in image_size)
        except TypeError:
            raise TypeError(
                f"image_size must be None, an int or a pair (H, W); got {image_size!r}."
            ) from None
        if len(size) != 2:
            raise ValueError(f"image_size must be an int or a pair (H, W); got {image_size!r}.")
    if min(size) < 1:
        raise ValueError(f"image_size must be positive; got {image_size!r}.")
    return size


def _open_image(path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"Cannot read image {path}: {exc}") from exc


def _image_mode(images):
    """'L' if every image is grey, else 'RGB'."""
    grey = all(im.mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F", "LA") for im in images)
    return "L" if grey else "RGB"


def _to_array(im, mode, size):
    from PIL import Image

    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F") and mode == "L":
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8))
    im = im.convert(mode)
    if size is not None and im.size != (size[1], size[0]):
        im = im.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def read_images(paths, *, image_size=None, color="auto"):
    """Read image files into one uint8 array.

    Parameters
    ----------
    paths : sequence of str or path-like
        Image files (any format Pillow reads).
    image_size : int, (int, int) or None, default=None
        Resize every image to ``(image_size, image_size)`` or ``(H, W)``
        (bilinear, anti-aliased); ``None`` keeps the files' size, which must
        then agree.
    color : {"auto", "rgb", "gray"}, default="auto"
        ``"auto"`` gives grey images ``(n, H, W)`` when every file is grey and
        RGB images ``(n, H, W, 3)`` otherwise.

    Returns
    -------
    images : ndarray of shape (n, H, W) or (n, H, W, 3), dtype=uint8

    Raises
    ------
    FileNotFoundError
        When a file does not exist.
    ValueError
        When a file cannot be read as an image, no paths are given, or sizes
        differ with ``image_size=None``.
    """
    if color not in ("auto", "rgb", "gray"):
        raise ValueError(f"color must be 'auto', 'rgb' or 'gray'; got {color!r}.")
    paths = [Path(os.fspath(p)) for p in paths]
    if not paths:
        raise ValueError("No image files to read.")
    size = _normalise_size(image_size)
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"Image file {p} does not exist.")
    opened = [_open_image(p) for p in paths]
    mode = {"rgb": "RGB", "gray": "L"}.get(color) or _image_mode(opened)
    arrays = [_to_array(im, mode, size) for im in opened]
    shapes = {}
    for p, a in zip(paths, arrays):
        shapes.setdefault(a.shape[:2], p)
    if len(shapes) > 1:
        listed = ", ".join(f"{p.name}: {s[0]}x{s[1]}" for s, p in shapes.items())
        raise ValueError(
            f"Images have different sizes ({listed}); pass image_size to resize them."
        )
    return np.stack(arrays)


def _read_masks(paths, shape):
    from PIL import Image

    masks = []
    for p in paths:
        im = _open_image(p).convert("L")
        if im.size != (shape[1], shape[0]):
            im = im.resize((shape[1], shape[0]), Image.NEAREST)
        masks.append(np.asarray(im) > 127)
    return np.stack(masks) if masks else np.zeros((0,) + tuple(shape), dtype=bool)


def load_mvtec_ad(root, category, *, image_size=None, color="auto"):
    """Load one category of the MVTec AD data set.

    Parameters
    ----------
    root : str or path-like
        The data set's folder, holding one folder per category.
    category : str
        A category, e.g. ``"carpet"``, ``"bottle"``. Its folder must follow
        MVTec AD's layout: ``train/good/*.png``, ``test/<defect>/*.png`` (with
        ``test/good`` for normal test images) and
        ``ground_truth/<defect>/<stem>_mask.png``.
    image_size : int, (int, int) or None, default=None
        Resize images (bilinear, anti-aliased) and masks (nearest) to this
        size; ``None`` keeps the original size.
    color : {"auto", "rgb", "gray"}, default="auto"
        ``"auto"`` keeps grey categories (grid, screw, zipper) grey,
        ``(n, H, W)``; others are RGB ``(n, H, W, 3)``.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        ``X_train`` uint8 normal training images; ``X_test`` uint8 test
        images; ``y_test`` (n_test,) int, 1 for a defective image;
        ``masks_test`` (n_test, H, W) bool ground truth (all ``False`` for good
        images); ``defect_types`` (n_test,) str, the test image's folder
        (``"good"`` for normal ones); ``paths_train``, ``paths_test`` lists
        of the files read; ``category``.

    Raises
    ------
    FileNotFoundError
        When the folder, a part of the layout, or a defective image's mask is
        missing.
    ValueError
        When a file cannot be read as an image.
    """
    root = Path(os.fspath(root)).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"MVTec AD folder {root} does not exist.")
    base = root / category
    if not base.is_dir():
        available = sorted(p.name for p in root.iterdir() if (p / "train").is_dir())
        raise FileNotFoundError(
            f"Category {category!r} not found in {root}"
            + (f"; available: {available}." if available else ".")
        )
    train_paths = _list_images(base / "train" / "good")
    if not train_paths:
        raise FileNotFoundError(f"No training images in {base / 'train' / 'good'}.")
    test_dir = base / "test"
    if not test_dir.is_dir():
        raise FileNotFoundError(f"Test folder {test_dir} does not exist.")
    defect_dirs = sorted(p for p in test_dir.iterdir() if p.is_dir())
    test_paths, types, mask_paths = [], [], []
    for d in defect_dirs:
        for p in _list_images(d):
            test_paths.append(p)
            types.append(d.name)
            if d.name == "good":
                mask_paths.append(None)
            else:
                candidates = [
                    base / "ground_truth" / d.name / f"{p.stem}_mask{ext}"
                    for ext in (p.suffix, ".png")
                ]
                found = next((m for m in candidates if m.is_file()), None)
                if found is None:
                    raise FileNotFoundError(
                        f"Ground-truth mask {candidates[-1]} for {p} does not exist."
                    )
                mask_paths.append(found)
    if not test_paths:
        raise FileNotFoundError(f"No test images in {test_dir}.")
    mode_color = color
    if color == "auto":
        probe = [_open_image(p) for p in train_paths[:1] + test_paths[:1]]
        mode_color = "gray" if _image_mode(probe) == "L" else "rgb"
    X_train = read_images(train_paths, image_size=image_size, color=mode_color)
    X_test = read_images(test_paths, image_size=image_size, color=mode_color)
    shape = X_test.shape[1:3]
    masks = np.zeros((len(test_paths),) + shape, dtype=bool)
    bad = [i for i, m in enumerate(mask_paths) if m is not None]
    if bad:
        masks[bad] = _read_masks([mask_paths[i] for i in bad], shape)
    y_test = np.array([0 if t == "good" else 1 for t in types], dtype=int)
    return Bunch(
        X_train=X_train,
        X_test=X_test,
        y_test=y_test,
        masks_test=masks,
        defect_types=np.array(types),
        paths_train=[str(p) for p in train_paths],
        paths_test=[str(p) for p in test_paths],
        category=category,
    )


def load_image_folder(
    path_good,
    path_defective=None,
    *,
    path_masks=None,
    mask_suffix="_mask",
    image_size=None,
    color="auto",
):
    """Load a user's own folders of normal (and defective) images.

    Parameters
    ----------
    path_good : str or path-like
        Folder of normal images (files with an extension in
        :data:`IMAGE_EXTENSIONS`; sub-folders are not read).
    path_defective : str or path-like, default=None
        Folder of defective images, if any.
    path_masks : str or path-like, default=None
        Folder of ground-truth masks for the defective images, named
        ``<stem><mask_suffix>.<ext>`` (non-zero = defect); a defective image
        without a mask file gets an all-``False`` mask. Only used with
        ``path_defective``.
    mask_suffix : str, default="_mask"
        Suffix of the mask files' stems.
    image_size : int, (int, int) or None, default=None
        Resize every image (and mask) to this size; ``None`` needs all
        images of one size.
    color : {"auto", "rgb", "gray"}, default="auto"
        ``"auto"``: grey ``(n, H, W)`` when every image is grey, else RGB.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        ``X`` uint8 normal images and ``paths``; with ``path_defective`` also
        ``X_defective``, ``paths_defective`` and, with ``path_masks``,
        ``masks_defective`` (bool). Both image sets share one colour mode
        and, with ``image_size``, one size.

    Raises
    ------
    FileNotFoundError
        When a folder does not exist or holds no images.
    ValueError
        When a file cannot be read as an image, or sizes differ with
        ``image_size=None``.
    """
    good = _list_images(path_good)
    if not good:
        raise FileNotFoundError(f"No image files in {path_good}.")
    defective = []
    if path_defective is not None:
        defective = _list_images(path_defective)
        if not defective:
            raise FileNotFoundError(f"No image files in {path_defective}.")
    if color == "auto":
        probe = [_open_image(p) for p in good + defective]
        color = "gray" if _image_mode(probe) == "L" else "rgb"
    X = read_images(good, image_size=image_size, color=color)
    data = Bunch(X=X, paths=[str(p) for p in good])
    if path_defective is not None:
        X_bad = read_images(defective, image_size=image_size, color=color)
        if X_bad.shape[1:3] != X.shape[1:3]:
            raise ValueError(
                f"Defective images are {X_bad.shape[1]}x{X_bad.shape[2]} but normal "
                f"images are {X.shape[1]}x{X.shape[2]}; pass image_size to resize them."
            )
        data.X_defective = X_bad
        data.paths_defective = [str(p) for p in defective]
        if path_masks is not None:
            mask_dir = Path(os.fspath(path_masks))
            if not mask_dir.is_dir():
                raise FileNotFoundError(f"Mask folder {mask_dir} does not exist.")
            available = {p.stem: p for p in _list_images(mask_dir)}
            masks = np.zeros(X_bad.shape[:3], dtype=bool)
            for i, p in enumerate(defective):
                m = available.get(p.stem + mask_suffix)
                if m is not None:
                    masks[i] = _read_masks([m], X_bad.shape[1:3])[0]
            data.masks_defective = masks
    return data
