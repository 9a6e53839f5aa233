"""Cross-validation for detectors trained on normal images only."""

from __future__ import annotations

import warnings
from numbers import Integral

import numpy as np
from sklearn.model_selection import KFold
from sklearn.model_selection._split import BaseCrossValidator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_consistent_length

from .metrics import _image_labels

__all__ = ["NormalOnlyKFold"]


class NormalOnlyKFold(BaseCrossValidator):
    """K-fold splitter whose training folds hold normal images only.

    Normal images are split into ``n_splits`` folds as by
    :class:`~sklearn.model_selection.KFold`; anomalous images are split the
    same way but only ever join test folds.  Each image is tested exactly
    once, and each training fold is ``(n_splits - 1) / n_splits`` of the
    normal images, so ``GridSearchCV`` on a labelled validation set trains
    every candidate the way the detectors are meant to be trained.

    Parameters
    ----------
    n_splits : int, default=3
        Number of folds (at least 2).
    shuffle : bool, default=True
        Shuffle each class before splitting.
    random_state : int, RandomState instance or None, default=None
        Used when ``shuffle`` is True.

    Notes
    -----
    ``y`` holds image labels (1 = anomalous, or scikit-learn's -1 =
    anomalous) or ground-truth masks ``(n, H, W)``; an image with any mask
    pixel set is anomalous.  Labels holding NaN or infinity are refused.

    ``y`` needs at least ``n_splits`` normal images (a ValueError
    otherwise) and at least one anomalous image (a ValueError otherwise: a
    test fold of normal images only cannot be scored by an AUROC or PRO).
    With fewer anomalous images than ``n_splits``, each anomalous image is
    still tested once, so some test folds hold none and an AUROC scorer
    fails on them; a UserWarning says so (as
    :class:`~sklearn.model_selection.StratifiedKFold` warns of a class with
    fewer members than ``n_splits``).

    Examples
    --------
    >>> import numpy as np
    >>> from skanomaly.model_selection import NormalOnlyKFold
    >>> y = np.array([0, 0, 0, 0, 1, 1])
    >>> [sorted(y[tr]) for tr, te in NormalOnlyKFold(2, random_state=0).split(y, y)]
    [[0, 0], [0, 0]]
    """

    def __init__(self, n_splits=3, *, shuffle=True, random_state=None):
        self.n_splits = n_splits
        self.shuffle = shuffle
        self.random_state = random_state

    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of splits, ``n_splits``.

        Parameters
        ----------
        X, y, groups : object
            Ignored, present for API compatibility.

        Returns
        -------
        n_splits : int
        """
        return self.n_splits

    def _checked_n_splits(self):
        n_splits = self.n_splits
        if not isinstance(n_splits, Integral) or isinstance(n_splits, bool):
            raise TypeError(
                f"n_splits must be an integer of at least 2, got {n_splits!r} "
                f"({type(n_splits).__name__})."
            )
        if n_splits < 2:
            raise ValueError(
                f"n_splits must be at least 2 (one training and one test fold), "
                f"got {n_splits}."
            )
        return int(n_splits)

    def split(self, X, y=None, groups=None):
        """Indices of the training (normal only) and test images of each fold.

        Parameters
        ----------
        X : array-like, torch.Tensor or lazy collection
            The images; only their number is used (it must equal ``y``'s).
        y : array-like of shape (n,) or (n, H, W)
            Image labels (1 = anomalous, or scikit-learn's +1/-1) or
            ground-truth masks.
        groups : object
            Ignored, present for API compatibility.

        Yields
        ------
        train : ndarray
            Indices of the training images of the fold: normal ones only.
        test : ndarray
            Indices of its test images, normal and anomalous, sorted.

        Raises
        ------
        ValueError
            ``y`` is missing, holds NaN or infinity, differs from ``X`` in
            length, has fewer than ``n_splits`` normal images or no
            anomalous image.

        Warns
        -----
        UserWarning
            Fewer anomalous images than ``n_splits``: some test folds hold
            no anomalous image.
        """
        n_splits = self._checked_n_splits()
        if y is None:
            raise ValueError("NormalOnlyKFold needs y (labels or masks) to find normal images.")
        anomalous = _image_labels(y, name="y")
        check_consistent_length(X, anomalous)
        normal_idx = np.flatnonzero(~anomalous)
        anomalous_idx = np.flatnonzero(anomalous)
        if len(normal_idx) < n_splits:
            raise ValueError(
                f"y has only {len(normal_idx)} normal image(s) for n_splits={n_splits}: "
                f"every fold trains on normal images; lower n_splits or add normal images."
            )
        if len(anomalous_idx) == 0:
            raise ValueError(
                f"y marks none of its {len(anomalous)} images anomalous, so every test "
                f"fold would hold normal images only, which an AUROC or PRO cannot score. "
                f"Pass labels with anomalous images (1 = anomalous, or -1 in "
                f"scikit-learn's +1/-1 convention)."
            )
        seed = self.random_state if self.shuffle else None
        kfold = KFold(n_splits, shuffle=self.shuffle, random_state=seed)
        normal_folds = [test for _, test in kfold.split(normal_idx)]
        if len(anomalous_idx) >= n_splits:
            anomalous_folds = [test for _, test in kfold.split(anomalous_idx)]
        else:
            n = len(anomalous_idx)
            warnings.warn(
                f"y has only {n} anomalous image(s), fewer than n_splits={n_splits}: "
                f"each is tested once, so {n_splits - n} test fold(s) hold no anomalous "
                f"image and an AUROC scorer fails on them. Lower n_splits to at most {n} "
                f"or add anomalous images.",
                UserWarning,
                stacklevel=2,
            )
            order = np.arange(n)
            if self.shuffle:
                check_random_state(seed).shuffle(order)
            anomalous_folds = np.array_split(order, n_splits)
        for k in range(n_splits):
            test_normal = normal_idx[normal_folds[k]]
            train = np.setdiff1d(normal_idx, test_normal)
            test = np.sort(np.r_[test_normal, anomalous_idx[anomalous_folds[k]]])
            yield train, test
