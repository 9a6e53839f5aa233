"""Metrics against hand-worked examples."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from skanomaly import metrics


def test_pro_hand_worked_example():
    # Two 8-connected regions: A = {(0,0), (0,1)}, B = {(1,3)}; five normal pixels.
    masks = np.array([[[1, 1, 0, 0], [0, 0, 0, 1]]], dtype=bool)
    maps = np.array([[[0.9, 0.5, 0.4, 0.1], [0.2, 0.3, 0.6, 0.8]]])
    fpr, pro = metrics.pro_curve(masks, maps)
    # Thresholds 0.9, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1 in turn:
    np.testing.assert_allclose(fpr, [0, 0, 0, 0.2, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(pro, [0, 0.25, 0.75, 0.75, 1, 1, 1, 1, 1])
    # Area to FPR 0.3: 0.2 * 0.75 + 0.1 * 1.0 = 0.25, normalised by 0.3.
    assert metrics.pro_score(masks, maps) == pytest.approx(0.25 / 0.3)
    # Interpolated exactly at the cut: to FPR 0.1 the area is 0.1 * 0.75.
    assert metrics.pro_score(masks, maps, max_fpr=0.1) == pytest.approx(0.75)


def test_pro_ties_and_interpolation():
    masks = np.array([[[1, 0], [0, 0]]], dtype=bool)
    maps = np.array([[[0.5, 0.5], [0.5, 0.0]]])
    # Tied scores form one step: (0,0) -> (2/3, 1) -> (1, 1).
    fpr, pro = metrics.pro_curve(masks, maps)
    np.testing.assert_allclose(fpr, [0, 2 / 3, 1])
    np.testing.assert_allclose(pro, [0, 1, 1])
    # Linear interpolation at 0.3: pro(0.3) = 0.45; area 0.5 * 0.3 * 0.45.
    assert metrics.pro_score(masks, maps) == pytest.approx(0.5 * 0.3 * 0.45 / 0.3)


def test_pro_region_with_hole_never_exceeds_one():
    mask = np.zeros((1, 7, 7), bool)
    mask[0, 1:6, 1:6] = True
    mask[0, 3, 3] = False  # a hole: a normal pixel inside the region
    rng = np.random.default_rng(0)
    maps = rng.uniform(size=mask.shape) + 2 * mask
    fpr, pro = metrics.pro_curve(mask, maps)
    assert pro.max() <= 1 + 1e-12 and np.all(np.diff(pro) >= -1e-12)
    assert np.all(np.diff(fpr) >= 0)
    assert metrics.pro_score(mask, maps) == pytest.approx(1.0)


def test_perfect_and_random_maps():
    rng = np.random.default_rng(1)
    masks = np.zeros((4, 16, 16), bool)
    masks[0, 2:6, 2:6] = masks[1, 8:12, 3:5] = True
    perfect = masks.astype(float) + 0.01 * rng.uniform(size=masks.shape)
    assert metrics.pixel_auroc(masks, perfect) == 1.0
    assert metrics.pro_score(masks, perfect) == pytest.approx(1.0)
    noise = rng.uniform(size=masks.shape)
    assert metrics.pro_score(masks, noise) < 0.3  # random maps: ~0.15
    assert metrics.pixel_auroc(masks, noise) == pytest.approx(
        roc_auc_score(masks.ravel(), noise.ravel())
    )


def test_image_auroc_label_conventions():
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    y01 = np.array([0, 0, 1, 1])
    ysk = np.array([1, 1, -1, -1])  # scikit-learn's outlier convention
    assert metrics.image_auroc(y01, scores) == 0.75
    assert metrics.image_auroc(ysk, scores) == 0.75
    with pytest.raises(ValueError, match="-1"):
        metrics.anomaly_labels([-1, 0, 1])


def test_threshold_metrics():
    y = np.array([0, 0, 1, 1, 1])
    s = np.array([0.1, 0.7, 0.8, 0.9, 0.2])
    tpr, tnr = metrics.tpr_tnr_at_threshold(y, s, 0.5)
    assert tpr == pytest.approx(2 / 3) and tnr == pytest.approx(0.5)
    # precision 2/3, recall 2/3
    assert metrics.f1_at_threshold(y, s, 0.5) == pytest.approx(2 / 3)


def test_bad_metric_input():
    with pytest.raises(ValueError, match="shape"):
        metrics.pixel_auroc(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="anomalous"):
        metrics.pro_score(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="NaN"):
        metrics.pixel_auroc(np.eye(4)[None], np.full((1, 4, 4), np.nan))


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1, 1], [True, True, True], [-1, -1, -1]])
def test_auroc_with_one_class_is_a_clear_error(labels):
    scores = np.array([0.1, 0.5, 0.9])
    one_class = "needs both normal and anomalous {}|holds only 1s"
    with pytest.raises(ValueError, match=one_class.format("images")):
        metrics.image_auroc(labels, scores)
    masks = np.array(labels).reshape(1, 1, 3)
    with pytest.raises(ValueError, match=one_class.format("pixels")):
        metrics.pixel_auroc(masks, scores.reshape(1, 1, 3))


def test_auroc_size_mismatch_and_nan_are_errors():
    with pytest.raises(ValueError, match="differ in size"):
        metrics.image_auroc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        metrics.image_auroc([0, 1], [0.1, np.nan])


def test_all_ones_labels_are_ambiguous_and_refused():
    # All 1s read as all anomalous (0/1) or all normal (scikit-learn's +1):
    # refused rather than guessed (a folder of defects evaluated alone
    # was read as all normal).
    y = np.ones(4, dtype=int)
    s = np.array([0.1, 0.2, 0.7, 0.9])
    for call in (lambda: metrics.anomaly_labels(y),
                 lambda: metrics.tpr_tnr_at_threshold(y, s, 0.5),
                 lambda: metrics.f1_at_threshold(y, s, 0.5)):
        with pytest.raises(ValueError, match=r"holds only 1s.*pass booleans"):
            call()
    # Booleans keep their meaning: all True = all anomalous.
    tpr, tnr = metrics.tpr_tnr_at_threshold(np.ones(4, bool), s, 0.5)
    assert tpr == pytest.approx(0.5) and np.isnan(tnr)
    assert metrics.f1_at_threshold(np.ones(4, bool), s, 0.5) == pytest.approx(2 / 3)


def test_pro_score_stays_in_unit_interval():
    # Near-perfect maps whose exact area rounds above 1 (seed 0 has such cases).
    rng = np.random.default_rng(0)
    scores = []
    for _ in range(300):
        n, h = rng.integers(1, 4), rng.integers(3, 20)
        masks = rng.uniform(size=(n, h, h)) < rng.uniform(0.05, 0.9)
        if masks.all() or not masks.any():
            continue
        maps = masks + 0.001 * rng.uniform(size=masks.shape)
        scores += [metrics.pro_score(masks, maps, max_fpr=m) for m in (0.3, 1.0, 0.05, 1e-3)]
    assert 0.0 <= min(scores) and max(scores) <= 1.0
    assert max(scores) == 1.0


class _Fixed:
    """A stand-in fitted detector returning fixed scores and maps."""

    def __init__(self, maps):
        self.maps = np.asarray(maps, dtype=np.float64)

    def score_samples(self, X):
        return -self.maps.reshape(len(self.maps), -1).max(axis=1)

    def transform(self, X):
        return self.maps


@pytest.mark.parametrize("missing", [np.nan, np.inf])
def test_nan_labels_and_masks_are_refused_not_read_as_anomalous(missing):
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    y = np.array([0.0, 1.0, 0.0, missing])
    for call in (
        lambda: metrics.image_auroc(y, scores),
        lambda: metrics.f1_at_threshold(y, scores, 0.5),
        lambda: metrics.tpr_tnr_at_threshold(y, scores, 0.5),
    ):
        with pytest.raises(ValueError, match=r"y_true holds NaN or infinity \(1 of 4 values, "
                                             r"the first at index 3\)"):
            call()
    masks = np.zeros((2, 4, 4))
    masks[0, 1:3, 1:3] = 1.0
    masks[1, 2, 3] = missing
    maps = np.random.default_rng(0).uniform(size=masks.shape)
    for call in (lambda: metrics.pixel_auroc(masks, maps), lambda: metrics.pro_score(masks, maps)):
        with pytest.raises(ValueError, match=r"masks holds NaN or infinity .* index \(1, 2, 3\)"):
            call()
    det = _Fixed(maps)
    for scorer in metrics.SCORERS.values():
        with pytest.raises(ValueError, match="y holds NaN or infinity"):
            scorer(det, maps, masks)
    with pytest.raises(ValueError, match="y holds NaN or infinity"):
        metrics.image_auroc_scorer(_Fixed(np.ones((4, 1, 1))), None, y)


def test_nonzero_mask_values_stay_anomalous():
    # Documented: nonzero marks anomalies (mask images are often 0/255).
    masks = np.zeros((2, 4, 4), dtype=np.uint8)
    masks[0, 1:3, 1:3] = 255
    maps = np.random.default_rng(1).uniform(size=masks.shape)
    assert metrics.pixel_auroc(masks, maps) == metrics.pixel_auroc(masks > 0, maps)
    assert metrics.pro_score(masks, maps) == metrics.pro_score(masks > 0, maps)
    with pytest.raises(TypeError, match="y must hold numeric"):
        metrics.anomaly_labels(np.array(["0", "1"]))
