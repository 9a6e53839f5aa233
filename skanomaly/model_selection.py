"""Cross-validation for detectors trained on normal images only."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import KFold
from sklearn.model_selection._split import BaseCrossValidator

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
    pixel set is anomalous.

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
        return self.n_splits

    def split(self, X, y=None, groups=None):
        if y is None:
            raise ValueError("NormalOnlyKFold needs y (labels or masks) to find normal images.")
        anomalous = _image_labels(y)
        normal_idx = np.flatnonzero(~anomalous)
        anomalous_idx = np.flatnonzero(anomalous)
        if len(normal_idx) < self.n_splits:
            raise ValueError(
                f"Only {len(normal_idx)} normal images for n_splits={self.n_splits}."
            )
        kfold = KFold(self.n_splits, shuffle=self.shuffle, random_state=self.random_state if self.shuffle else None)
        normal_folds = [test for _, test in kfold.split(normal_idx)]
        if len(anomalous_idx) >= self.n_splits:
            anomalous_folds = [test for _, test in kfold.split(anomalous_idx)]
        else:
            anomalous_folds = [np.arange(len(anomalous_idx))] * self.n_splits
        for k in range(self.n_splits):
            test_normal = normal_idx[normal_folds[k]]
            train = np.setdiff1d(normal_idx, test_normal)
            test = np.sort(np.r_[test_normal, anomalous_idx[anomalous_folds[k]]])
            yield train, test
