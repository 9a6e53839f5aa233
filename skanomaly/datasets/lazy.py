"""A folder of images read on demand: collections larger than memory."""

import os
from numbers import Integral
from pathlib import Path

import numpy as np

from ._io import GREY_MODES, _normalise_size, _open_image, _to_array, list_image_files

__all__ = ["ImageFolderSequence"]


class _MissingImages(FileNotFoundError, ValueError):
    """A folder or image file that does not exist (both an OSError and a ValueError)."""


class ImageFolderSequence:
    """Images of a folder (or a list of files), read only when indexed.

    Every detector's ``fit``, ``score_samples`` and ``transform`` accept it
    like an array of images: they read it batch by batch, so memory does not
    grow with the number of images.  Only the first image is read when the
    sequence is built (it gives the shape); the others are read when indexed.

    Parameters
    ----------
    paths_or_folder : str, path-like or sequence of them
        A folder (its files with an extension in
        :data:`~skanomaly.datasets.IMAGE_EXTENSIONS`, sorted; sub-folders and
        hidden files, whose names start with ``"."``, are not read) or a
        sequence of image files, kept in that order.
    mode : {"auto", "gray", "rgb"}, default="auto"
        ``"gray"`` gives images ``(H, W)``, ``"rgb"`` ``(H, W, 3)``.
        ``"auto"`` is ``"gray"`` when every file is grey and ``"rgb"``
        otherwise, as :func:`~skanomaly.datasets.read_images`; it opens each
        file's header (not its pixels) once, when the sequence is built.
    size : int, (int, int) or None, default=None
        Resize every image to ``(size, size)`` or ``(H, W)`` (bilinear,
        anti-aliased).  ``None`` keeps the first file's size, which every
        other file must then have.

    Attributes
    ----------
    paths : list of pathlib.Path
        The image files, in order.
    shape : tuple of int
        ``(n, H, W)`` or ``(n, H, W, 3)``.
    dtype : numpy.dtype
        ``uint8``.
    ndim : int
        ``len(shape)``.

    Notes
    -----
    Files are checked lazily: an unreadable file, or one of another size with
    ``size=None``, raises a :class:`ValueError` naming the file when it is
    read, which may be deep into ``fit`` for a large folder.

    Examples
    --------
    >>> from skanomaly.datasets import ImageFolderSequence  # doctest: +SKIP
    >>> X = ImageFolderSequence("train/good", mode="rgb", size=128)  # doctest: +SKIP
    >>> detector.fit(X)  # doctest: +SKIP
    """

    #: What the error about an image of another size tells the user to do.  A
    #: front end whose option for ``size`` has another name sets its own on
    #: the instance (the command line names ``--resize``).
    _size_hint = "pass size=(H, W) to resize every image"

    def __init__(self, paths_or_folder, mode="auto", size=None):
        if mode not in ("auto", "gray", "rgb"):
            raise ValueError(f"mode must be 'auto', 'gray' or 'rgb'; got {mode!r}.")
        self.paths = self._list(paths_or_folder)
        self.size = _normalise_size(size)
        if mode == "auto":
            mode = "gray" if all(self._is_grey(p) for p in self.paths) else "rgb"
        self.mode = mode
        first = self._read(0, check=False)
        self.shape = (len(self.paths),) + first.shape
        self.dtype = np.dtype(np.uint8)
        self.ndim = len(self.shape)

    @staticmethod
    def _list(paths_or_folder):
        if isinstance(paths_or_folder, (str, bytes, os.PathLike)):
            folder = Path(os.fsdecode(paths_or_folder))
            if not folder.is_dir():
                raise _MissingImages(
                    f"Image folder {folder} does not exist or is not a folder; pass an "
                    f"existing folder or a list of image files."
                )
            paths = list_image_files(folder)
            if not paths:
                raise ValueError(
                    f"Image folder {folder} holds no image files (extensions .png, .jpg, "
                    f"...); pass a folder of images."
                )
            return paths
        try:
            paths = [Path(os.fsdecode(p)) for p in paths_or_folder]
        except TypeError:
            raise TypeError(
                f"paths_or_folder must be a folder or a sequence of image files; got "
                f"{type(paths_or_folder).__name__}."
            ) from None
        if not paths:
            raise ValueError("paths_or_folder is empty; pass at least one image file.")
        for p in paths:
            if not p.is_file():
                raise _MissingImages(
                    f"Image file {p} does not exist; remove it from paths_or_folder."
                )
        return paths

    @staticmethod
    def _is_grey(path):
        return _open_image(path, header_only=True) in GREY_MODES

    def _read(self, i, check=True):
        path = self.paths[i]
        pil_mode = "L" if self.mode == "gray" else "RGB"
        try:
            image = _to_array(_open_image(path), pil_mode, self.size, path)
        except FileNotFoundError:
            raise _MissingImages(
                f"Image file {path} no longer exists; it was listed when the "
                f"ImageFolderSequence was built."
            ) from None
        if check and image.shape != self.shape[1:]:
            raise ValueError(
                f"Image {path} is {image.shape[1]}x{image.shape[0]} pixels but "
                f"{self.paths[0].name} (the first image) is {self.shape[2]}x"
                f"{self.shape[1]}; {self._size_hint}, or remove it."
            )
        return image

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        """Read images: an int gives one image, a slice or index array a batch.

        Parameters
        ----------
        key : int, slice or array-like of int
            Which images.

        Returns
        -------
        images : ndarray of uint8
            ``(H, W[, 3])`` for an int, ``(b, H, W[, 3])`` otherwise.
        """
        n = len(self)
        if isinstance(key, Integral) and not isinstance(key, bool):
            i = int(key)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of range for {n} images.")
            return self._read(i % n)
        if isinstance(key, slice):
            indices = range(*key.indices(n))
        else:
            indices = np.asarray(key)
            if indices.dtype == bool:
                indices = np.flatnonzero(indices)
            if indices.ndim != 1 or indices.dtype.kind not in "iu":
                raise TypeError(
                    f"ImageFolderSequence indices must be an int, a slice or a 1-D "
                    f"array of ints; got {key!r}."
                )
            if len(indices) and not (-n <= indices.min() and indices.max() < n):
                raise IndexError(f"an index is out of range for {n} images.")
            indices = indices % n if len(indices) else indices
        out = np.empty((len(indices),) + self.shape[1:], dtype=self.dtype)
        for j, i in enumerate(indices):
            out[j] = self._read(int(i))
        return out

    def __iter__(self):
        for i in range(len(self)):
            yield self._read(i)

    def __array__(self, dtype=None, copy=None):
        """All images in one array (reads every file: explicit conversion only)."""
        images = self[:]
        return images if dtype is None else images.astype(dtype)

    def __repr__(self):
        where = self.paths[0].parent if self.paths else "?"
        return (
            f"ImageFolderSequence({len(self)} images in {where}, mode={self.mode!r}, "
            f"shape={self.shape})"
        )
