"""Synthetic defects: :func:`make_defects` and :func:`make_texture_defects`.

Only NumPy and SciPy are needed; scikit-image is imported lazily by
:func:`make_texture_defects` alone, for its textures.
"""

from numbers import Integral, Real

import numpy as np
from sklearn.utils import Bunch, check_random_state

from .._optional import import_optional
from ._painters import DEFECT_KINDS, DEFECT_PAINTERS

__all__ = ["DEFECT_KINDS", "make_defects", "make_texture_defects"]


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
    defective, masks, _ = _plant_defects(images, kinds, n_defects, size_range, random_state)
    return defective, masks


def _plant_defects(images, kinds, n_defects, size_range, random_state):
    """:func:`make_defects`, also returning the kinds planted in each image."""
    work, original = _as_image_stack(images)
    kinds = _check_kinds(kinds)
    lo_n, hi_n = _check_n_defects(n_defects)
    lo_s, hi_s = _check_size_range(size_range)
    rng = check_random_state(random_state)

    n, h, w, c = work.shape
    masks = np.zeros((n, h, w), dtype=bool)
    defective = original.copy()
    planted = []
    for i in range(n):
        image = work[i]
        mask = masks[i]
        planted.append([])
        for _ in range(rng.randint(lo_n, hi_n + 1)):
            kind = kinds[rng.randint(len(kinds))]
            planted[-1].append(kind)
            extent = max(rng.uniform(lo_s, hi_s) * min(h, w), 3.0)
            # Foreign patches are copied from the clean images in ``work``.
            sl, alpha, content = DEFECT_PAINTERS[kind](image, extent, rng, work, i)
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
    return defective, masks, [tuple(k) for k in planted]


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
        bool ground truth (all ``False`` for normal crops); ``kinds_test`` a
        list of ``n_test`` tuples, the kinds of the defects planted in each
        test crop (empty for normal crops), for results by kind of defect;
        ``texture`` the texture's name.

    Notes
    -----
    scikit-image is needed for the named textures; it is imported here only.
    """
    name = texture if isinstance(texture, str) else "custom"
    if isinstance(texture, str):
        if texture not in _TEXTURES:
            raise ValueError(f"texture must be one of {list(_TEXTURES)}; got {texture!r}.")
        skimage_data = import_optional(
            "skimage.data",
            "make_texture_defects needs scikit-image for its textures: pip install scikit-image",
        )
        source = getattr(skimage_data, texture)()
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
    kinds_test = [()] * n_test
    if n_bad:
        X_bad, masks_bad, kinds_bad = _plant_defects(
            X_test[bad], kinds, n_defects, size_range, rng
        )
        X_test[bad] = X_bad
        masks_test[bad] = masks_bad
        for i, planted in zip(bad, kinds_bad):
            kinds_test[i] = planted
    return Bunch(
        X_train=X_train,
        X_test=X_test,
        y_test=y_test,
        masks_test=masks_test,
        kinds_test=kinds_test,
        texture=name,
    )
