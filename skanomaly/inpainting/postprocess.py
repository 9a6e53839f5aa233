"""Post-processing of inpainting heatmaps by a minimal defect area (Bauer 2022, §4.2).

An image is anomalous when a connected region of at least a minimal area
exceeds the heatmap threshold; :func:`largest_component_level` turns that
rule into an image score and :func:`remove_small_components` into masks.
Both use 4-connectivity (``scipy.ndimage.label``'s default).
"""

import numpy as np
from scipy import ndimage

__all__ = ["largest_component_level", "remove_small_components"]


def _largest_component(binary):
    """Pixels of the largest connected component of ``binary`` (0 if empty)."""
    labels, n = ndimage.label(binary)
    if n == 0:
        return 0
    return int(np.bincount(labels.ravel())[1:].max())


def largest_component_level(heatmap, min_area):
    """Lowest heatmap level at which no region of ``min_area`` pixels stands out.

    Returns the smallest value ``t`` of ``heatmap`` such that every connected
    component (4-connectivity) of ``heatmap > t`` has fewer than
    ``min_area`` pixels.  The largest component only shrinks as ``t`` rises,
    so ``t`` is found by bisection over the sorted heatmap values.  With
    ``min_area=1`` it is the heatmap's maximum.

    Parameters
    ----------
    heatmap : ndarray of shape (H, W)
        One anomaly map.
    min_area : int
        Minimal area of a defect, in pixels.

    Returns
    -------
    level : float
        The image is anomalous at a threshold ``thr`` (a component of at
        least ``min_area`` pixels exceeds it) exactly when ``level > thr``.
    """
    heatmap = np.asarray(heatmap)
    if min_area <= 1:
        return float(heatmap.max())
    values = np.unique(heatmap)
    lo, hi = 0, len(values) - 1  # values[hi] always qualifies: nothing exceeds it
    while lo < hi:
        mid = (lo + hi) // 2
        if _largest_component(heatmap > values[mid]) < min_area:
            hi = mid
        else:
            lo = mid + 1
    return float(values[lo])


def remove_small_components(masks, min_area):
    """Drop connected components (4-connectivity) smaller than ``min_area``.

    Parameters
    ----------
    masks : ndarray of bool, shape (n, H, W)
        Binary masks, one per image.
    min_area : int
        Smallest area kept, in pixels.

    Returns
    -------
    masks : ndarray of bool, shape (n, H, W)
        The masks without their components of fewer than ``min_area`` pixels.
    """
    out = np.zeros_like(masks, dtype=bool)
    for i, mask in enumerate(masks):
        labels, n = ndimage.label(mask)
        if n:
            sizes = np.bincount(labels.ravel())
            keep = sizes >= min_area
            keep[0] = False
            out[i] = keep[labels]
    return out
