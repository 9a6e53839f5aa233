"""Lazy image collections for :mod:`skanomaly.validation`.

A lazy collection (:class:`skanomaly.datasets.ImageFolderSequence`, or any
object with ``__len__``, ``__getitem__``, ``shape`` and ``dtype``) is
validated from its metadata; its images are read, and their values checked,
batch by batch as the detector slices them.  A subset of a memmap or lazy
collection stays a view that reads its images when sliced.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from ._image_checks import _check_values, _release_pages


def _is_lazy_sequence(X):
    """Whether ``X`` is a lazy image collection (not an array, tensor or list).

    A lazy collection has ``__len__``, ``__getitem__`` (an int or a slice gives
    a NumPy array), ``shape`` and ``dtype``: validation reads its metadata
    only, never every image.
    """
    if isinstance(X, (np.ndarray, torch.Tensor, list, tuple)):
        return False
    return all(hasattr(X, a) for a in ("__len__", "__getitem__", "shape", "dtype"))


class _LazyImages:
    """A lazy collection seen as ``(n, H, W, C)``, its values checked when read.

    Slicing reads the images from the wrapped collection, checks their shape
    against the collection's declared shape and their values (NaN, inf, range)
    as :func:`~skanomaly.validation.check_images` does for arrays, naming the images read.
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
