"""Classification data for anomaly detection: Fashion-MNIST and the one-class split."""

import gzip
import os
import struct
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from sklearn.utils import check_random_state

__all__ = ["FASHION_MNIST_CLASSES", "load_fashion_mnist", "one_class_split"]

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
