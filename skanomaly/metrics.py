"""Measures of the field, on scikit-learn primitives.

Label convention: ``y_true`` marks anomalous (defective) images or pixels
with 1/True and normal ones with 0/False.  scikit-learn's outlier convention
(``+1`` normal, ``-1`` anomalous, as returned by ``predict``) is recognised
when ``-1`` occurs.  Numeric labels that are all ``1`` are refused, since the
two conventions read them oppositely: pass booleans to mark every sample
anomalous (or normal).  Labels and masks holding NaN or
infinity are refused (a ValueError naming them), never read as anomalous.
Anomaly scores are higher for more anomalous samples: pass
``-detector.score_samples(X)`` or ``detector.transform(X)``.

Definitions used for every figure skanomaly reports:

- **image AUROC**: :func:`sklearn.metrics.roc_auc_score` of the image labels
  against the anomaly scores.
- **pixel AUROC**: the same, pooled over every pixel of every test image
  (normal images included).
- **PRO** (AUPRO at FPR 0.3): each connected ground-truth region (8-connected,
  per image) has an overlap ratio at each threshold; PRO is their mean, the
  false-positive rate is over all normal pixels of all images.  The curve is
  computed exactly at every distinct score, cut at ``max_fpr`` with linear
  interpolation, integrated by the trapezoidal rule and divided by
  ``max_fpr`` (anomalib's and Bergmann et al.'s definition).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.integrate import trapezoid
from sklearn.metrics import f1_score, roc_auc_score

from ._docstrings import fill_doc

__all__ = [
    "anomaly_labels",
    "image_auroc",
    "pixel_auroc",
    "pro_curve",
    "pro_score",
    "f1_at_threshold",
    "tpr_tnr_at_threshold",
    "image_auroc_scorer",
    "pixel_auroc_scorer",
    "pro_scorer",
    "SCORERS",
]

_EIGHT = np.ones((3, 3), dtype=int)


def anomaly_labels(y, *, name="y"):
    """Boolean anomaly labels from 0/1, bool, or scikit-learn's +1/-1.

    Parameters
    ----------
    y : array-like
        Labels (any shape).  If ``-1`` occurs, ``-1`` marks anomalies
        (scikit-learn's outlier convention); otherwise nonzero marks
        anomalies.  Booleans are taken as they are (True = anomalous).
        Numeric labels that are all ``1`` are refused as ambiguous (all
        anomalous as 0/1, all normal as scikit-learn's +1/-1): pass booleans.
    name : str, default="y"
        Name of ``y`` in error messages.

    Returns
    -------
    labels : ndarray of bool

    Raises
    ------
    TypeError
        ``y`` is neither integer, floating nor boolean.
    ValueError
        ``y`` holds NaN or infinity (a missing label is not an anomaly),
        mixes ``-1`` with values other than ``+1``, or holds only 1s.
    """
    y = np.asarray(y)
    if y.dtype == bool:
        return y
    if y.dtype.kind not in "iuf":
        raise TypeError(
            f"{name} must hold numeric (0/1, +1/-1) or boolean labels, got dtype {y.dtype}."
        )
    if y.dtype.kind == "f":
        missing = ~np.isfinite(y)
        if missing.any():
            where = np.argwhere(missing)[0]
            where = int(where[0]) if where.size == 1 else tuple(int(i) for i in where)
            raise ValueError(
                f"{name} holds NaN or infinity ({int(missing.sum())} of {y.size} values, "
                f"the first at index {where}); labels must be 0/1 (1 = anomalous), "
                f"booleans or scikit-learn's +1/-1. Label those samples or drop them."
            )
    if y.size > 1 and np.all(y == 1):
        # 0/1 labels of defective images only, or scikit-learn's +1 (normal)
        # for every image: the two read oppositely, so neither is guessed.
        raise ValueError(
            f"{name} holds only 1s, which reads as 'all anomalous' with 0/1 labels "
            f"but 'all normal' with scikit-learn's +1/-1; pass booleans to say which "
            f"(np.ones({y.shape[0]}, bool) for all anomalous, np.zeros(...) for all "
            f"normal)."
        )
    if np.any(y == -1):
        bad = ~np.isin(y, (-1, 1))
        if bad.any():
            raise ValueError(
                f"{name} mixes -1 with values other than +1; use 0/1 (1 = anomalous) "
                f"or scikit-learn's +1/-1 (-1 = anomalous)."
            )
        return y == -1
    return y != 0


def _image_labels(y, name="y"):
    """Image labels from labels ``(n,)`` or masks ``(n, ...)``."""
    y = np.asarray(y)
    labels = anomaly_labels(y, name=name)
    if labels.ndim > 1:
        labels = labels.reshape(len(labels), -1).any(axis=1)
    return labels


def _check_pair(masks, maps):
    masks = anomaly_labels(masks, name="masks")
    maps = np.asarray(maps, dtype=np.float64)
    if masks.shape != maps.shape:
        raise ValueError(
            f"Ground-truth masks {masks.shape} and anomaly maps {maps.shape} differ "
            f"in shape."
        )
    if not np.all(np.isfinite(maps)):
        raise ValueError("Anomaly maps contain NaN or infinity.")
    return masks, maps


def _check_both_classes(labels, what):
    """Refuse labels of one class only (AUROC is undefined)."""
    n_bad = int(np.count_nonzero(labels))
    if n_bad == 0 or n_bad == labels.size:
        present = "anomalous" if n_bad else "normal"
        absent = "normal" if n_bad else "anomalous"
        raise ValueError(
            f"{what} AUROC needs both normal and anomalous {what.lower()}s, but all "
            f"{labels.size} are {present} (no {absent} one); add {absent} "
            f"{what.lower()}s. Numeric labels that are all +1 read as scikit-learn's "
            f"'normal'; pass booleans (True = anomalous) to mark them anomalous."
        )


#: The result and errors of :func:`image_auroc` and :func:`pixel_auroc`, documented once.
_AUROC_RESULT_DOC = """\
Returns
-------
auroc : float
    In [0, 1]; 0.5 is chance, 1 ranks every anomalous sample above every
    normal one.

Raises
------
ValueError
    The ground truth holds one class only, its shape differs from the
    scores', or the scores hold NaN or infinity."""


@fill_doc(auroc_result=_AUROC_RESULT_DOC)
def image_auroc(y_true, anomaly_scores):
    """Image-level AUROC.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        1 = anomalous image (or +1/-1, see module docs).
    anomaly_scores : array-like of shape (n,)
        Higher = more anomalous, e.g. ``-detector.score_samples(X)``.

    [auroc_result]
    """
    labels = anomaly_labels(y_true, name="y_true").ravel()
    scores = np.asarray(anomaly_scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(
            f"Labels ({labels.size}) and anomaly scores ({scores.size}) differ in size."
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError("Anomaly scores contain NaN or infinity.")
    _check_both_classes(labels, "Image")
    return float(roc_auc_score(labels, scores))


@fill_doc(auroc_result=_AUROC_RESULT_DOC)
def pixel_auroc(masks, maps):
    """Pixel-level AUROC pooled over all pixels of all images.

    Parameters
    ----------
    masks : array-like of shape (n, H, W)
        Ground truth, nonzero = anomalous pixel.
    maps : array-like of shape (n, H, W)
        Anomaly maps, e.g. ``detector.transform(X)``.

    [auroc_result]
    """
    masks, maps = _check_pair(masks, maps)
    _check_both_classes(masks.ravel(), "Pixel")
    return float(roc_auc_score(masks.ravel(), maps.ravel()))


def pro_curve(masks, maps):
    """Exact per-region-overlap curve at every distinct anomaly score.

    Parameters
    ----------
    masks : array-like of shape (n, H, W)
        Ground truth; connected regions (8-connectivity) are found per image.
    maps : array-like of shape (n, H, W)
        Anomaly maps.

    Returns
    -------
    fpr : ndarray
        False-positive rate over all normal pixels, increasing from 0 to 1.
    pro : ndarray
        Mean overlap of the ground-truth regions at the same thresholds.
    """
    masks, maps = _check_pair(masks, maps)
    if masks.ndim == 2:
        masks, maps = masks[None], maps[None]
    if masks.ndim != 3:
        raise ValueError(f"Masks must be (n, H, W) or (H, W), got {masks.shape}.")
    labels = np.zeros(masks.shape, dtype=np.int64)
    n_regions = 0
    for i, mask in enumerate(masks):
        lab, k = ndimage.label(mask, structure=_EIGHT)
        labels[i] = np.where(lab > 0, lab + n_regions, 0)
        n_regions += k
    n_normal = int((~masks).sum())
    if n_regions == 0:
        raise ValueError("PRO needs at least one anomalous ground-truth pixel.")
    if n_normal == 0:
        raise ValueError("PRO needs at least one normal ground-truth pixel.")
    labels = labels.ravel()
    region_sizes = np.bincount(labels, minlength=n_regions + 1).astype(np.float64)
    # Each pixel of region r adds 1 / (|r| * R) to PRO once the threshold
    # passes below its score; each normal pixel adds 1 / N_normal to the FPR.
    pro_weight = np.where(labels > 0, 1.0 / (region_sizes[labels] * n_regions), 0.0)
    fp_weight = (labels == 0) / n_normal
    order = np.argsort(-maps.ravel(), kind="stable")
    scores = maps.ravel()[order]
    pro = np.cumsum(pro_weight[order])
    fpr = np.cumsum(fp_weight[order])
    # One point per distinct score: the end of each group of tied scores.
    last = np.r_[np.flatnonzero(np.diff(scores) != 0), scores.size - 1]
    fpr = np.r_[0.0, fpr[last]]
    pro = np.r_[0.0, pro[last]]
    fpr[-1], pro[-1] = 1.0, 1.0  # exact end point despite rounding
    return fpr, pro


def pro_score(masks, maps, max_fpr=0.3):
    """Normalised area under the PRO curve up to ``max_fpr`` (AUPRO).

    Parameters
    ----------
    masks : array-like of shape (n, H, W)
    maps : array-like of shape (n, H, W)
    max_fpr : float in (0, 1], default=0.3

    Returns
    -------
    aupro : float
        In [0, 1]; a perfect map scores 1 (rounding is clipped).
    """
    if not 0 < max_fpr <= 1:
        raise ValueError(f"max_fpr must lie in (0, 1], got {max_fpr}.")
    fpr, pro = pro_curve(masks, maps)
    keep = fpr <= max_fpr
    x, y = fpr[keep], pro[keep]
    if x[-1] < max_fpr:
        j = int(np.searchsorted(fpr, max_fpr, side="right"))
        t = (max_fpr - fpr[j - 1]) / (fpr[j] - fpr[j - 1])
        x = np.r_[x, max_fpr]
        y = np.r_[y, pro[j - 1] + t * (pro[j] - pro[j - 1])]
    return float(np.clip(trapezoid(y, x) / max_fpr, 0.0, 1.0))


def _binary_at(y_true, scores, threshold):
    y = anomaly_labels(y_true, name="y_true").ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"Labels ({y.size}) and scores ({s.size}) differ in size.")
    return y, s > threshold


def f1_at_threshold(y_true, scores, threshold):
    """F1 of "anomalous" when scores above ``threshold`` are flagged.

    Works on image labels/scores or on pixel masks/maps (flattened).

    Returns
    -------
    f1 : float
    """
    y, pred = _binary_at(y_true, scores, threshold)
    return float(f1_score(y, pred, zero_division=0.0))


def tpr_tnr_at_threshold(y_true, scores, threshold):
    """True-positive and true-negative rates at ``threshold``.

    Returns
    -------
    tpr, tnr : float
        ``nan`` where the class is absent.
    """
    y, pred = _binary_at(y_true, scores, threshold)
    tpr = float(pred[y].mean()) if y.any() else float("nan")
    tnr = float((~pred[~y]).mean()) if (~y).any() else float("nan")
    return tpr, tnr


def image_auroc_scorer(estimator, X, y):
    """Scorer for :class:`~sklearn.model_selection.GridSearchCV`: image AUROC.

    ``y`` is image labels (1 = anomalous) or ground-truth masks ``(n, H, W)``
    (an image is anomalous when its mask has a pixel set).
    """
    return image_auroc(_image_labels(y, name="y"), -estimator.score_samples(X))


def pixel_auroc_scorer(estimator, X, y):
    """Scorer: pixel AUROC; ``y`` holds ground-truth masks ``(n, H, W)``."""
    masks = anomaly_labels(y, name="y")
    maps = estimator.transform(X)
    return pixel_auroc(masks.reshape(len(masks), -1), maps.reshape(len(masks), -1))


def pro_scorer(estimator, X, y):
    """Scorer: AUPRO at FPR 0.3; ``y`` holds ground-truth masks ``(n, H, W)``."""
    masks = np.asarray(y)
    if masks.ndim != 3:
        raise ValueError(
            f"pro_scorer needs ground-truth masks of shape (n, H, W), got {masks.shape}."
        )
    masks = anomaly_labels(masks, name="y")
    maps = estimator.transform(X).reshape(masks.shape)
    return pro_score(masks, maps)


#: Scorers by name, for ``GridSearchCV(scoring=SCORERS)``.
SCORERS = {
    "image_auroc": image_auroc_scorer,
    "pixel_auroc": pixel_auroc_scorer,
    "pro": pro_scorer,
}
