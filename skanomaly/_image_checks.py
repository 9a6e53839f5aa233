"""Checks of raw image data for :mod:`skanomaly.validation`.

Dtype, values (NaN, inf, range, scanned in chunks), channel count, empty
batches, ragged lists, single colour images and flattened rows: each check
raises a ValueError or TypeError that names the input and says what to do.
"""

from __future__ import annotations

import mmap

import numpy as np
import torch

# Finiteness/range checks run over chunks of this many elements so that a
# large batch never needs a full-size boolean temporary.
_CHUNK_ELEMENTS = 1 << 24
# Memmaps are scanned in smaller chunks: each chunk's pages are mapped into the
# process while it is read, then released (see _release_pages).
_MEMMAP_CHUNK_ELEMENTS = 1 << 20
# Pages are released in aligned windows of this size around a chunk: a fault
# maps a whole page-cache folio (up to 2 MiB on x86-64 and arm64 with 4 KiB
# pages) into the process, including pages of the neighbouring chunks, which a
# page-granular release would leave mapped (resident memory then grew with the
# number of images read).
_RELEASE_WINDOW = 2 * 1024 * 1024


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
        window = max(_RELEASE_WINDOW, mmap.PAGESIZE)
        start -= start % window
        end = min(len(mm), -(-end // window) * window)
        if 0 <= start < end:
            mm.madvise(advise, start, end - start)
    except (OSError, ValueError, TypeError, AttributeError):  # pragma: no cover
        pass  # a closed or unusual mapping: keep the pages


def _as_array(X, name):
    """Turn a list/tuple of images into one array, refusing ragged input."""
    if len(X) == 0:
        raise ValueError(f"{name} is an empty list: at least one image is required.")
    arrays = []
    for i, item in enumerate(X):
        if item is None:
            raise TypeError(f"{name}[{i}] is None; expected an image array.")
        if isinstance(item, torch.Tensor):
            if item.ndim == 3:  # (C, H, W) by the tensor convention, (H, W, C) in a list
                raise ValueError(
                    f"{name}[{i}] is a 3-D torch tensor {tuple(item.shape)}: list items "
                    f"are read channels last (H, W) or (H, W, C). Stack (C, H, W) tensors "
                    f"into one (n, C, H, W) tensor with torch.stack({name})."
                )
            if item.layout != torch.strided:
                raise TypeError(
                    f"Sparse input is not supported: {name}[{i}] is a sparse tensor; "
                    f"pass dense images (item.to_dense())."
                )
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


def _check_sizes(n, h, w, c, name, channel_axis):
    """Refuse a channel count other than 1 or 3, an empty batch or empty images.

    ``channel_axis`` says where the channels are, for the message (e.g.
    ``"last axis of shape (2, 8, 8, 4)"``).
    """
    if c not in (1, 3):
        raise ValueError(
            f"{name} has {c} channels ({channel_axis}); only 1 (grayscale) or 3 (RGB) "
            f"are supported."
        )
    _check_count(n, name)
    if h == 0 or w == 0:
        raise ValueError(f"{name} has empty images of size {h}x{w}.")


def _check_count(n, name):
    if n == 0:
        raise ValueError(f"{name} is an empty batch: 0 images; at least one is required.")


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


def _unflatten(X, image_shape, name):
    n, n_features = X.shape
    _check_count(n, name)
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
