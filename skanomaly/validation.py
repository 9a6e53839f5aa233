"""The single input-validation path of skanomaly.

Every detector accepts images in the layouts of the public contract and turns
them into float tensors ``(b, C, H, W)`` in ``[0, 1]`` through
:func:`check_images`.  Validation inspects the raw array once (shape, dtype,
finiteness, value range); the conversion to float tensors happens batch by
batch in :meth:`ImageSet.batches`, so scoring memory does not grow with the
number of images.
"""

from __future__ import annotations

import mmap
import numbers
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch

__all__ = ["ImageSet", "check_images", "check_image_shape", "check_value_range"]

# Finiteness/range checks run over chunks of this many elements so that a
# large batch never needs a full-size boolean temporary.
_CHUNK_ELEMENTS = 1 << 24
# Memmaps are scanned in smaller chunks: each chunk's pages are mapped into the
# process while it is read, then released (see _release_pages).
_MEMMAP_CHUNK_ELEMENTS = 1 << 20


def _release_pages(chunk):
    """Unmap the pages of a memmap ``chunk`` from this process once it is read.

    Reading a memmap maps its file pages into the process (resident memory
    that grows with the number of images read).  For shared mappings
    (``mode`` ``"r"``, ``"r+"`` or ``"w+"``) the pages stay in the kernel's
    page cache and are read back, unchanged, on the next access, so this only
    bounds the process's memory.  Copy-on-write memmaps (``mode="c"``) keep
    their pages: releasing them would drop the caller's private changes.
    """
    mm = getattr(chunk, "_mmap", None)
    advise = getattr(mmap, "MADV_DONTNEED", None)
    if (
        mm is None
        or advise is None
        or getattr(chunk, "mode", None) not in ("r", "r+", "w+")
        or not chunk.flags.c_contiguous
        or chunk.nbytes == 0
    ):
        return
    try:
        base = np.frombuffer(mm, dtype=np.uint8).__array_interface__["data"][0]
        start = chunk.__array_interface__["data"][0] - base
        end = start + chunk.nbytes
        start -= start % mmap.PAGESIZE
        end = min(len(mm), -(-end // mmap.PAGESIZE) * mmap.PAGESIZE)
        if 0 <= start < end:
            mm.madvise(advise, start, end - start)
    except (OSError, ValueError, TypeError, AttributeError):  # pragma: no cover
        pass  # a closed or unusual mapping: keep the pages


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
        if isinstance(chunk, torch.Tensor):
            t = chunk.detach()
        elif isinstance(chunk, np.memmap) or not chunk.flags.writeable:
            # A private copy: the pages of a memmap are released once read, and
            # torch refuses to share read-only memory.
            t = torch.from_numpy(np.array(chunk, order="C"))
            _release_pages(chunk)
        else:
            t = torch.from_numpy(np.ascontiguousarray(chunk))
        if device is not None:
            t = t.to(device)
        t = t.to(torch.float32)
        if self.shift != 0.0:
            t = t - self.shift
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


def _as_array(X, name):
    """Turn a list/tuple of images into one array, refusing ragged input."""
    if len(X) == 0:
        raise ValueError(f"{name} is an empty list: at least one image is required.")
    arrays = []
    for i, item in enumerate(X):
        if item is None:
            raise TypeError(f"{name}[{i}] is None; expected an image array.")
        if isinstance(item, torch.Tensor):
            item = item.detach().cpu().numpy()
        a = np.asarray(item)
        arrays.append(a)
    first = arrays[0].shape
    for i, a in enumerate(arrays):
        if a.shape != first:
            raise ValueError(
                f"{name} is a ragged list of images: image 0 has shape {first} but "
                f"image {i} has shape {a.shape}; all images must have the same size."
            )
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) > 1:
        arrays = [a.astype(np.result_type(*dtypes)) for a in arrays]
    return np.stack(arrays)


def _check_dtype(dtype, name):
    kind = dtype.kind
    if kind == "c":
        raise ValueError(f"Complex data not supported: {name} has dtype {dtype}.")
    if kind == "b":
        raise TypeError(
            f"{name} has boolean dtype; images must be uint8 (0-255) or float (0-1)."
        )
    if kind not in "uif":
        raise TypeError(
            f"{name} has dtype {dtype!r}; images must be numeric arrays: uint8 "
            f"(0-255) or float (0-1)."
        )


def _check_values(data, name, is_float, value_range=None):
    """Reject NaN/inf and values outside the dtype's documented range."""
    flat = data.reshape(-1)
    lo = hi = None
    step = _MEMMAP_CHUNK_ELEMENTS if isinstance(data, np.memmap) else _CHUNK_ELEMENTS
    for start in range(0, flat.shape[0], step):
        chunk = flat[start : start + step]
        if isinstance(chunk, np.memmap):
            # Read once into a small private chunk and release its pages.
            mapped, chunk = chunk, np.array(chunk)
            _release_pages(mapped)
        if isinstance(chunk, torch.Tensor):
            chunk = chunk.detach().cpu()
            if chunk.dtype == torch.bfloat16:  # NumPy has no bfloat16
                chunk = chunk.float()
            chunk = chunk.numpy()
        if is_float:
            if np.isnan(chunk).any():
                raise ValueError(f"Input {name} contains NaN.")
            if np.isinf(chunk).any():
                raise ValueError(f"Input {name} contains infinity or a value too large.")
        # Kept in the data's dtype, so that messages show its exact values.
        cmin, cmax = chunk.min(), chunk.max()
        lo = cmin if lo is None else min(lo, cmin)
        hi = cmax if hi is None else max(hi, cmax)
    if value_range is not None:
        low, high = value_range
        what = f"value_range={tuple(value_range)}"
        fix = "widen value_range or clip the data"
    elif is_float:
        low, high = 0.0, 1.0
        what = "the range [0, 1] of float images"
        fix = "clip to [0, 1], divide 0-255 data by 255, or pass value_range=(low, high)"
    else:
        low, high = 0, 255
        what = "the range [0, 255] of integer images"
        fix = (
            "pass uint8 data, or value_range=(0, 4095) / (0, 65535) for 12- or 16-bit "
            "images"
        )
    problems = []
    if lo < low:
        problems.append(f"a value {_exact(lo)} below the lower bound {_exact(low)}")
    if hi > high:
        problems.append(f"a value {_exact(hi)} above the upper bound {_exact(high)}")
    if problems:
        raise ValueError(
            f"{name} holds {' and '.join(problems)} of {what}; {fix}."
        )


def _exact(value):
    """A number in its shortest exact form (``1.0001``, not ``1``)."""
    if isinstance(value, (np.floating, np.integer)):
        return str(value)  # NumPy's shortest round-trip form in the data's dtype
    return repr(value)


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
        if c not in (1, 3):
            raise ValueError(
                f"{name} has {c} channels (axis 1 of an (n, C, H, W) tensor); only 1 "
                f"(grayscale) or 3 (RGB) are supported."
            )
        _check_nonempty(n, h, w, name)
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
    if c not in (1, 3):
        raise ValueError(
            f"{name} has {c} channels (last axis of shape {X.shape}); only 1 "
            f"(grayscale) or 3 (RGB) are supported."
        )
    _check_nonempty(n, h, w, name)
    is_float = X.dtype.kind == "f"
    _check_values(X, name, is_float, value_range)
    # float16 stays float16 (no full-size copy): ImageSet.tensor converts
    # each batch to float32.
    return ImageSet(X, True, *_scaling(is_float, value_range, flat))


def _refuse_single_color_image(shape, name):
    """Refuse a 3-D array that is one colour image ``(H, W, 3|4)``, not a batch.

    A 3-D array is read as ``(n, H, W)`` grey images, except when its last
    axis has 3 or 4 entries and both others exceed 4: grey images 3 or 4
    pixels wide are implausible, while one RGB(A) image ``(H, W, 3|4)`` is
    the common mistake.
    """
    h, w, c = shape
    if c in (3, 4) and h > 4 and w > 4:
        drop = "[..., :3]" if c == 4 else ""
        raise ValueError(
            f"{name} of shape {tuple(shape)} looks like one {'RGBA' if c == 4 else 'RGB'} "
            f"image (H, W, {c}), not a batch; pass {name}[None]{drop} for a batch of "
            f"one image ({'dropping alpha' if c == 4 else 'shape (1, H, W, 3)'}). If it "
            f"really is {h} grey images {w}x{c} pixels, pass {name}[..., None]."
        )


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
    return lo, hi


def _check_nonempty(n, h, w, name):
    if n == 0:
        raise ValueError(f"{name} is an empty batch: 0 images; at least one is required.")
    if h == 0 or w == 0:
        raise ValueError(f"{name} has empty images of size {h}x{w}.")


def _unflatten(X, image_shape, name):
    n, n_features = X.shape
    if n == 0:
        raise ValueError(f"{name} is an empty batch: 0 images; at least one is required.")
    if n_features == 0:
        raise ValueError(
            f"0 feature(s) (shape=({n}, 0)) while a minimum of 1 is required: {name} "
            f"holds empty images."
        )
    h, w = image_shape[:2]
    c = image_shape[2] if len(image_shape) == 3 else 1
    if h == -1:
        h = n_features // max(w * c, 1)
    elif w == -1:
        w = n_features // max(h * c, 1)
    if h * w * c != n_features or h <= 0 or w <= 0:
        raise ValueError(
            f"{name} has {n_features} features per row, which image_shape="
            f"{tuple(image_shape)} cannot unflatten (it implies H*W*C = "
            f"{max(h, 0) * max(w, 0) * c})."
        )
    return X.reshape(n, h, w, c)


# ------------------------------------------------------------ lazy sequences
def _is_lazy_sequence(X):
    """Whether ``X`` is a lazy image collection (not an array, tensor or list).

    A lazy collection has ``__len__``, ``__getitem__`` (an int or a slice gives
    a NumPy array), ``shape`` and ``dtype``: validation reads its metadata
    only, never every image.
    """
    if isinstance(X, (np.ndarray, torch.Tensor, list, tuple)):
        return False
    return all(hasattr(X, a) for a in ("__len__", "__getitem__", "shape", "dtype"))


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
    if c not in (1, 3):
        raise ValueError(
            f"{name} has {c} channels (last axis of shape {tuple(X.shape)}); only 1 "
            f"(grayscale) or 3 (RGB) are supported."
        )
    _check_nonempty(n, h, w, name)
    is_float = dtype.kind == "f"
    lazy = _LazyImages(X, shape, dtype, name, is_float, value_range)
    return ImageSet(lazy, True, *_scaling(is_float, value_range, flat=False))


class _LazyImages:
    """A lazy collection seen as ``(n, H, W, C)``, its values checked when read.

    Slicing reads the images from the wrapped collection, checks their shape
    against the collection's declared shape and their values (NaN, inf, range)
    as :func:`check_images` does for arrays, naming the images read.
    """

    def __init__(self, source, shape, dtype, name, is_float, value_range):
        self.source = source
        self.shape = shape
        self.dtype = dtype
        self.ndim = 4
        self.name = name
        self.is_float = is_float
        self.value_range = value_range

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            label = f"{self.name}[{start}:{stop}" + (f":{step}" if step != 1 else "") + "]"
        elif isinstance(key, numbers.Integral):
            return self[int(key) : int(key) + 1 or None][0]
        else:
            key = np.asarray(key)
            label = f"{self.name}[{key.tolist()}]" if key.size <= 8 else f"images of {self.name}"
        batch = np.asarray(self.source[key])
        expected = self.shape[1:] if batch.ndim == 4 else self.shape[1:3]
        if batch.ndim not in (3, 4) or batch.shape[1:] != expected:
            raise ValueError(
                f"{label} has shape {batch.shape} but {self.name} declares images of "
                f"shape {tuple(self.source.shape[1:])}; every image of a lazy collection "
                f"must have the declared shape."
            )
        if batch.dtype != self.dtype:
            raise ValueError(
                f"{label} has dtype {batch.dtype} but {self.name} declares "
                f"{self.dtype}; every image of a lazy collection must have its dtype."
            )
        if batch.ndim == 3:
            batch = batch[..., np.newaxis]
        if batch.shape[0]:
            _check_values(batch, label, self.is_float, self.value_range)
        return batch


class _Subset:
    """Images ``indices`` of a memmap or lazy collection, read when sliced."""

    def __init__(self, source, indices):
        self.source = source
        self.indices = np.asarray(indices, dtype=np.intp).reshape(-1)
        self.shape = (len(self.indices),) + tuple(source.shape[1:])
        self.dtype = source.dtype
        self.ndim = len(self.shape)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        idx = self.indices[key]
        if np.ndim(idx) == 0:
            return self.source[int(idx) : int(idx) + 1][0]
        if len(idx) and np.all(np.diff(idx) == 1):  # a run: one contiguous read
            return self.source[int(idx[0]) : int(idx[-1]) + 1]
        if isinstance(self.source, np.memmap):
            # Row by row, each row's pages released once copied.
            rows = []
            for i in idx:
                row = self.source[int(i) : int(i) + 1]
                rows.append(np.array(row))
                _release_pages(row)
            if rows:
                return np.concatenate(rows)
        return self.source[idx]
