"""Pixel thresholds from normal maps at an acceptable false-positive rate.

:func:`fpr_threshold` on maps held in memory, :class:`StreamingFPRThreshold`
exactly the same value over maps seen batch by batch (``fit`` uses it, so no
detector keeps its training maps).
"""

from __future__ import annotations

import numpy as np

__all__ = ["fpr_threshold", "StreamingFPRThreshold"]


def fpr_threshold(maps, fpr):
    """Pixel threshold that flags a share ``fpr`` of normal pixels.

    Parameters
    ----------
    maps : ndarray
        Anomaly maps of normal images (any shape).
    fpr : float in [0, 1)
        Acceptable false-positive rate on normal pixels; 0 gives the largest
        normal value (no normal pixel above the threshold).

    Returns
    -------
    threshold : float
        Pixels strictly above it are anomalous.
    """
    values = np.asarray(maps, dtype=np.float64).ravel()
    if fpr <= 0:
        return float(values.max())
    return float(np.quantile(values, 1.0 - fpr, method="higher"))


def _higher_quantile_rank(n, q):
    """Ascending rank numpy's ``quantile(..., method="higher")`` picks among ``n`` values."""
    n = np.float64(n)
    q = np.float64(q)
    # numpy's virtual index for alpha = beta = 1, rounded up.
    rank = np.ceil(n * q + (1.0 + q * (1.0 - 1.0 - 1.0)) - 1.0)
    return int(min(max(rank, 0), n - 1))


class StreamingFPRThreshold:
    """:func:`fpr_threshold` over maps seen batch by batch, exactly, in bounded memory.

    The threshold is the value of ascending rank ``r`` among all ``N`` pixel
    values (numpy's ``"higher"`` quantile at ``1 - fpr``), i.e. the smallest
    of the ``N - r`` largest values.  Only those largest values are kept
    (float32, about ``fpr * N`` of them, plus one batch while it is merged),
    so memory does not grow with the full map size and the result equals
    :func:`fpr_threshold` on the concatenated maps.

    Parameters
    ----------
    n_values : int
        Total number of pixel values that will be added.
    fpr : float in [0, 1)
        As in :func:`fpr_threshold`.
    """

    def __init__(self, n_values, fpr):
        self.n_values = int(n_values)
        rank = self.n_values - 1 if fpr <= 0 else _higher_quantile_rank(self.n_values, 1.0 - fpr)
        self.k = self.n_values - rank
        self._top = np.empty(0, dtype=np.float32)
        self._seen = 0

    def add(self, maps):
        """Add a batch of map values (any shape)."""
        values = np.asarray(maps, dtype=np.float32).ravel()
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
