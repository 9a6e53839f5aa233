"""The single input-validation path of skanomaly.

Every detector accepts images in the layouts of the public contract and turns
them into float tensors ``(b, C, H, W)`` in ``[0, 1]`` through
:func:`check_images`.  Validation inspects the raw array once (shape, dtype,
finiteness, value range); the conversion to float tensors happens batch by
batch in :meth:`ImageSet.batches`, so scoring memory does not grow with the
number of images.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch

from ._image_checks import (
    _as_array,
    _check_dtype,
    _check_sizes,
    _check_values,
    _refuse_single_color_image,
    _release_pages,
    _unflatten,
)
from ._lazy_images import _is_lazy_sequence, _LazyImages, _Subset

__all__ = ["ImageSet", "check_images", "check_image_shape", "check_value_range"]


def check_image_shape(image_shape):
    """Validate the ``image_shape`` constructor parameter.

    Parameters
    ----------
    image_shape : tuple of int or None
        ``(H, W)`` or ``(H, W, C)``.  One of ``H``/``W`` may be ``-1`` and is
        then inferred from the number of features, as in :func:`numpy.reshape`.

    Returns
    -------
    image_shape : tuple of int or None
    """
    if image_shape is None:
        return None
    if isinstance(image_shape, (str, bytes)) or not hasattr(image_shape, "__len__"):
        raise TypeError(
            f"image_shape must be a tuple (H, W) or (H, W, C), got {image_shape!r}."
        )
    shape = tuple(image_shape)
    if len(shape) not in (2, 3) or not all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in shape
    ):
        raise ValueError(
            f"image_shape must be a tuple of 2 or 3 integers (H, W) or (H, W, C), "
            f"got {image_shape!r}."
        )
    h, w = shape[:2]
    if any(s == 0 or s < -1 for s in (h, w)) or (h == -1 and w == -1):
        raise ValueError(
            f"image_shape height/width must be positive (one of them may be -1), "
            f"got {image_shape!r}."
        )
    if len(shape) == 3 and shape[2] not in (1, 3):
        raise ValueError(
            f"image_shape channel count must be 1 or 3, got {shape[2]} in {image_shape!r}."
        )
    return tuple(int(s) for s in shape)


@dataclass
class ImageSet:
    """Validated images, converted to float tensors lazily, batch by batch.

    Attributes
    ----------
    data : ndarray or Tensor
        The validated raw images, ``(n, H, W, C)`` for arrays (channels last)
        or ``(n, C, H, W)`` for tensors (channels first).
    channels_last : bool
        Layout of ``data``.
    scale : float
        Divisor that maps raw values to ``[0, 1]`` (255 for integer images).
    shift : float
        Subtracted before dividing by ``scale`` (the low end of
        ``value_range``; 0 by default).
    flat : bool
        Whether the input was flattened 2-D ``(n, n_features)``; outputs of
        ``transform`` follow this layout.
    """

    data: object
    channels_last: bool
    scale: float
    flat: bool
    shift: float = 0.0

    @property
    def n_images(self):
        return int(self.data.shape[0])

    @property
    def height(self):
        return int(self.data.shape[1] if self.channels_last else self.data.shape[2])

    @property
    def width(self):
        return int(self.data.shape[2] if self.channels_last else self.data.shape[3])

    @property
    def n_channels(self):
        return int(self.data.shape[3] if self.channels_last else self.data.shape[1])

    @property
    def n_features(self):
        return self.height * self.width * self.n_channels

    def __len__(self):
        return self.n_images

    def tensor(self, start=0, stop=None, device=None):
        """Images ``start:stop`` as a float32 tensor ``(b, C, H, W)`` in [0, 1]."""
        chunk = self.data[start:stop]
        if isinstance(chunk, np.ndarray) and chunk.dtype.kind == "f" and chunk.itemsize > 8:
            chunk = chunk.astype(np.float64)  # long double: torch has no such dtype
        if isinstance(chunk, torch.Tensor):
            t = chunk.detach()
        elif isinstance(chunk, np.memmap) or not chunk.flags.writeable:
            # A private copy: the pages of a memmap are released once read, and
            # torch refuses to share read-only memory.
            t = torch.from_numpy(np.array(chunk, order="C"))
            _release_pages(chunk)
        else:
            t = torch.from_numpy(np.ascontiguousarray(chunk))
        if self.shift != 0.0:
            # value_range with low != 0: subtract and scale in float64 (on the
            # CPU), or an offset large against the range (a 1 mV span at 1000 V)
            # would round every pixel to a few float32 levels.
            t = ((t.to(torch.float64) - self.shift) / self.scale).to(torch.float32)
            if device is not None:
                t = t.to(device)
        else:
            if device is not None:
                t = t.to(device)
            t = t.to(torch.float32)
            if self.scale != 1.0:
                t = t / self.scale
        if self.channels_last:
            t = t.permute(0, 3, 1, 2)
        return t.contiguous()

    def batches(self, batch_size, device=None):
        """Yield float32 tensors ``(b, C, H, W)`` of at most ``batch_size`` images."""
        for start in range(0, self.n_images, batch_size):
            yield self.tensor(start, start + batch_size, device)

    def subset(self, indices):
        """A new :class:`ImageSet` holding the images at ``indices``."""
        idx = np.asarray(indices)
        if isinstance(self.data, torch.Tensor):
            data = self.data[torch.as_tensor(idx)]
        elif isinstance(self.data, np.ndarray) and not isinstance(self.data, np.memmap):
            data = self.data[idx]
        else:  # memmap or lazy sequence: a view that reads the images when sliced
            data = _Subset(self.data, idx)
        return ImageSet(data, self.channels_last, self.scale, self.flat, self.shift)


def check_images(X, *, image_shape=None, value_range=None, name="X"):
    """Validate a batch of images in any layout of the public contract.

    Parameters
    ----------
    X : array-like or torch.Tensor
        One of: ``(n, H, W)`` grayscale; ``(n, H, W, C)`` with ``C`` in {1, 3}
        (channels last); a list of such arrays of equal shape; a torch tensor
        ``(n, C, H, W)`` (channels first); a 2-D ``(n, n_features)`` array of
        flattened images when ``image_shape`` is given.  ``uint8`` (or any
        integer dtype) means 0-255; floats mean 0-1.

        A single image is not a batch.  A 3-D array is read as ``(n, H, W)``
        grey images, except that ``(H, W, 3)`` or ``(H, W, 4)`` with ``H``
        and ``W`` above 4 is refused as one colour image (pass ``X[None]``;
        a real batch of grey images 3 or 4 pixels wide passes as
        ``X[..., None]``).  A 3-D array ``(3, H, W)`` cannot be told from a
        batch of three grey images and is read as such; a detector fitted
        on RGB images then reports the channel mismatch.  A 3-D tensor is
        refused (tensors are ``(n, C, H, W)``; pass ``X[None]``).

        Lazy collections are accepted without being loaded: a NumPy memmap
        (scanned in small chunks), or a lazy sequence with ``__len__``,
        ``__getitem__``, ``shape`` ``(n, H, W)`` or ``(n, H, W, C)`` and
        ``dtype``, such as :class:`skanomaly.datasets.ImageFolderSequence`.
        A lazy sequence is validated from its shape and dtype here; its values
        (and each image's shape) are checked batch by batch as the detector
        reads them, so a bad image deep in the collection is reported when it
        is reached, not by this function.
    image_shape : tuple or None, default=None
        ``(H, W)`` or ``(H, W, C)`` used to unflatten 2-D input.
    value_range : tuple (low, high) or None, default=None
        Raw values that map to 0 and 1, for data of another range (12- or
        16-bit sensors, depth maps, standardised features): values outside
        it are rejected.  ``None``: integers mean 0-255, floats 0-1.
    name : str, default="X"
        Name used in error messages.

    Returns
    -------
    images : ImageSet
        The validated images.

    Raises
    ------
    TypeError
        ``X`` is None, a string, an object/boolean array or otherwise not images.
    ValueError
        Wrong number of dimensions, a single colour image without a batch
        axis, a channel count other than 1 or 3, an empty batch, NaN or inf,
        values out of range for the dtype (the message gives the offending
        value and the bound it violates), ragged lists, a tensor on the
        ``meta`` device, or flattened input without (or inconsistent with)
        ``image_shape``.
    """
    if X is None:
        raise TypeError(f"{name} is None; expected a batch of images.")
    if isinstance(X, (str, bytes)):
        raise TypeError(f"{name} is a string; expected a batch of images.")
    if scipy.sparse.issparse(X):
        raise TypeError(
            f"Sparse input is not supported: {name} must be a dense array of images."
        )
    image_shape = check_image_shape(image_shape)
    value_range = check_value_range(value_range)

    if isinstance(X, torch.Tensor):
        if X.layout != torch.strided:
            raise TypeError(
                f"Sparse input is not supported: {name} is a sparse tensor; pass dense "
                f"images ({name}.to_dense())."
            )
        if X.dtype.is_complex:
            raise ValueError(f"Complex data not supported: {name} has dtype {X.dtype}.")
        if X.dtype == torch.bool:
            raise TypeError(f"{name} has boolean dtype; images must be uint8 or float.")
        if X.device.type == "meta":
            raise ValueError(
                f"{name} is a tensor on the 'meta' device, which holds no values; "
                f"pass a tensor with data (on the CPU or CUDA)."
            )
        if X.ndim != 4:
            hint = (
                f" A single image (C, H, W) needs a leading batch axis: pass {name}[None]."
                if X.ndim == 3
                else ""
            )
            raise ValueError(
                f"A torch tensor {name} must be 4-D (n, C, H, W) channels first; got "
                f"{X.ndim}-D with shape {tuple(X.shape)}.{hint}"
            )
        data = X.detach().cpu()
        n, c, h, w = data.shape
        _check_sizes(n, h, w, c, name, "axis 1 of an (n, C, H, W) tensor")
        is_float = data.dtype.is_floating_point
        _check_values(data, name, is_float, value_range)
        return ImageSet(data, False, *_scaling(is_float, value_range, flat=False))

    if _is_lazy_sequence(X):
        return _check_lazy(X, name, value_range)
    if isinstance(X, (list, tuple)):
        X = _as_array(X, name)
    elif not isinstance(X, np.ndarray):
        if hasattr(X, "__array__") or hasattr(X, "__len__"):
            X = np.asarray(X)
        else:
            raise TypeError(
                f"{name} of type {type(X).__name__} is not a batch of images; pass a "
                f"NumPy array, a list of arrays or a torch tensor."
            )
    _check_dtype(X.dtype, name)

    flat = False
    if X.ndim == 2:
        if image_shape is None:
            raise ValueError(
                f"{name} is 2-D {X.shape}: flattened images need the detector's "
                f"image_shape=(H, W) or (H, W, C) to be unflattened; images should be "
                f"(n, H, W) or (n, H, W, C)."
            )
        X = _unflatten(X, image_shape, name)
        flat = True
    elif X.ndim == 3:
        _refuse_single_color_image(X.shape, name)
        X = X[..., np.newaxis]
    elif X.ndim < 2:
        raise ValueError(
            f"{name} has {X.ndim} dimension(s) (shape {X.shape}); expected a batch of "
            f"images (n, H, W) or (n, H, W, C). Reshape your data: a single image "
            f"needs a leading batch axis, e.g. X[np.newaxis]."
        )
    elif X.ndim != 4:
        raise ValueError(
            f"{name} has {X.ndim} dimensions (shape {X.shape}); expected images "
            f"(n, H, W) or (n, H, W, C), or flattened (n, n_features) with image_shape."
        )
    n, h, w, c = X.shape
    _check_sizes(n, h, w, c, name, f"last axis of shape {X.shape}")
    is_float = X.dtype.kind == "f"
    _check_values(X, name, is_float, value_range)
    # float16 stays float16 (no full-size copy): ImageSet.tensor converts
    # each batch to float32.
    return ImageSet(X, True, *_scaling(is_float, value_range, flat))


def _scaling(is_float, value_range, flat):
    """``(scale, flat, shift)`` arguments of :class:`ImageSet`."""
    if value_range is not None:
        lo, hi = value_range
        return float(hi - lo), flat, float(lo)
    return (1.0 if is_float else 255.0), flat, 0.0


def check_value_range(value_range):
    """Validate the ``value_range`` constructor parameter."""
    if value_range is None:
        return None
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"value_range must be a pair (low, high) of numbers, got {value_range!r}."
        ) from exc
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"value_range must satisfy low < high, got {value_range!r}.")
    if not np.isfinite(hi - lo):
        raise ValueError(
            f"value_range={value_range!r} is wider than the largest float "
            f"(high - low overflows); pass the range your data really spans."
        )
    return lo, hi


def _check_lazy(X, name, value_range):
    """Validate a lazy collection from its ``shape`` and ``dtype``; values per batch."""
    try:
        dtype = np.dtype(X.dtype)
        shape = tuple(int(s) for s in X.shape)
    except TypeError as exc:
        raise TypeError(
            f"{name} of type {type(X).__name__} has a shape {X.shape!r} or dtype "
            f"{X.dtype!r} that is not an array's; give it a tuple shape and a NumPy dtype."
        ) from exc
    _check_dtype(dtype, name)
    if len(shape) == 3:
        _refuse_single_color_image(shape, name)
        shape = shape + (1,)
    elif len(shape) != 4:
        raise ValueError(
            f"{name} of type {type(X).__name__} has shape {shape}; a lazy image "
            f"collection must be (n, H, W) or (n, H, W, C): flattened images are "
            f"only accepted as arrays."
        )
    if len(X) != shape[0]:
        raise ValueError(
            f"{name} has len {len(X)} but shape {tuple(X.shape)}; a lazy image "
            f"collection's len must equal shape[0]."
        )
    n, h, w, c = shape
    _check_sizes(n, h, w, c, name, f"last axis of shape {tuple(X.shape)}")
    is_float = dtype.kind == "f"
    lazy = _LazyImages(X, shape, dtype, name, is_float, value_range)
    return ImageSet(lazy, True, *_scaling(is_float, value_range, flat=False))


