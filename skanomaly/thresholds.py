"""Pixel thresholds from normal maps at an acceptable false-positive rate.

:func:`fpr_threshold` on maps held in memory, :class:`StreamingFPRThreshold`
exactly the same value over maps seen batch by batch (``fit`` uses it, so no
detector keeps its training maps).
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["fpr_threshold", "threshold_rank", "StreamingFPRThreshold"]


def _check_fpr(fpr):
    """``fpr`` as a float in [0, 1), or a ValueError naming it."""
    if not isinstance(fpr, numbers.Real):
        raise TypeError(f"fpr must be a number in [0, 1); got {fpr!r}.")
    value = float(fpr)
    if isinstance(fpr, bool) or not 0.0 <= value < 1.0:
        raise ValueError(
            f"fpr={fpr!r} must lie in [0, 1): the share of normal pixels allowed above "
            f"the threshold (0 = none)."
        )
    return value


def threshold_rank(n, fpr):
    """Ascending rank (0-based) of the threshold among ``n`` pixel values.

    The ``"higher"`` quantile at ``q = 1 - fpr``: rank ``ceil((n - 1) * q)``
    in float64, as NumPy computes it (``np.quantile(..., method="higher")``);
    ``fpr = 0`` gives the largest value, rank ``n - 1``.  Both
    :func:`fpr_threshold` and :class:`StreamingFPRThreshold` take the value
    of this rank, so they agree exactly.

    Parameters
    ----------
    n : int
        Number of pixel values, at least 1.
    fpr : float in [0, 1)

    Returns
    -------
    rank : int
    """
    fpr = _check_fpr(fpr)
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"need at least one pixel value to set a threshold; got {n!r}.")
    n = int(n)
    if fpr == 0.0:
        return n - 1
    rank = np.ceil(np.float64(n - 1) * (np.float64(1.0) - np.float64(fpr)))
    return int(min(max(rank, 0), n - 1))


def fpr_threshold(maps, fpr):
    """Pixel threshold that flags a share ``fpr`` of normal pixels.

    Parameters
    ----------
    maps : ndarray
        Anomaly maps of normal images (any shape, at least one value).
    fpr : float in [0, 1)
        Acceptable false-positive rate on normal pixels; 0 gives the largest
        normal value (no normal pixel above the threshold).

    Returns
    -------
    threshold : float
        Pixels strictly above it are anomalous: the value of rank
        :func:`threshold_rank` among the maps' values (NumPy's ``"higher"``
        quantile at ``1 - fpr``), in the maps' own precision.
    """
    values = np.asarray(maps).ravel()
    rank = threshold_rank(values.size, fpr)
    return float(np.partition(values, rank)[rank])


class StreamingFPRThreshold:
    """:func:`fpr_threshold` over maps seen batch by batch, exactly, in bounded memory.

    The threshold is the value of ascending rank ``r`` among all ``N`` pixel
    values (:func:`threshold_rank`: NumPy's ``"higher"`` quantile at
    ``1 - fpr``), i.e. the smallest of the ``N - r`` largest values.  Only
    those largest values are kept (in the maps' precision, about ``fpr * N``
    of them, plus one batch while it is merged), so memory does not grow
    with the full map size and the result equals :func:`fpr_threshold` on
    the concatenated maps.

    Parameters
    ----------
    n_values : int
        Total number of pixel values that will be added.
    fpr : float in [0, 1)
        As in :func:`fpr_threshold`.
    """

    def __init__(self, n_values, fpr):
        rank = threshold_rank(n_values, fpr)
        self.n_values = int(n_values)
        self.k = self.n_values - rank
        self._top = np.empty(0, dtype=np.float32)  # float64 maps promote it
        self._seen = 0

    def add(self, maps):
        """Add a batch of map values (any shape)."""
        values = np.asarray(maps).ravel()
        self._seen += values.size
        merged = np.concatenate([self._top, values])
        if merged.size > self.k:
            merged = np.partition(merged, merged.size - self.k)[merged.size - self.k :]
        self._top = merged

    def threshold(self):
        """The threshold over every value added (all ``n_values`` must have been added)."""
        if self._seen != self.n_values:
            raise RuntimeError(f"expected {self.n_values} values, got {self._seen}")
        return float(self._top.min())
