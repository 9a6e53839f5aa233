"""The public contract of every detector (see README "Input and output"), checked for every registered detector."""

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from functools import partial

from skanomaly.registry import detector_names
from tests.detectors import INIT_PARAMS, make_detector, registered

H = W = 32


def _images(n=8, seed=0, channels=None):
    """Smooth random textures (uint8): enough structure for every method."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    out = []
    for _ in range(n):
        f1, f2, ph = rng.uniform(0.2, 0.5), rng.uniform(0.2, 0.5), rng.uniform(0, 6)
        img = 0.5 + 0.25 * np.sin(f1 * xx + ph) * np.cos(f2 * yy) + 0.05 * rng.standard_normal((H, W))
        out.append(np.clip(img, 0, 1))
    X = (np.stack(out) * 255).astype(np.uint8)
    if channels == 3:
        X = np.repeat(X[..., None], 3, axis=-1)
    return X


def test_every_registered_detector_has_test_parameters():
    assert sorted(INIT_PARAMS) == sorted(detector_names())


@pytest.fixture(scope="module", params=registered())
def fitted(request):
    factory = partial(make_detector, request.param)
    X = _images(10)
    return factory, factory().fit(X), X


def test_shapes_and_signs(fitted):
    _, det, X = fitted
    s = det.score_samples(X)
    assert s.shape == (len(X),) and s.dtype == np.float64
    np.testing.assert_allclose(det.decision_function(X), s - det.offset_)
    pred = det.predict(X)
    assert set(np.unique(pred)) <= {-1, 1} and pred.dtype.kind == "i"
    np.testing.assert_array_equal(pred, np.where(det.decision_function(X) < 0, -1, 1))
    maps = det.transform(X)
    assert maps.shape == (len(X), H, W) and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    # contamination="auto": no training image flagged.
    assert (pred == 1).all()
    # score_samples is the opposite of an anomaly score: an image that is
    # obviously abnormal (inverted and noisy) scores lower than normal ones.
    rng = np.random.default_rng(5)
    weird = (255 - X[:2]).astype(np.int16) + rng.integers(-80, 80, size=X[:2].shape)
    weird = np.clip(weird, 0, 255).astype(np.uint8)
    weird[:, 8:24, 8:24] = rng.integers(0, 255, size=(2, 16, 16))
    assert det.score_samples(weird).max() < np.median(s)
    assert det.transform(weird)[:, 8:24, 8:24].mean() > maps[:, 8:24, 8:24].mean()


def test_input_layouts_agree(fitted):
    _, det, X = fitted
    ref = det.score_samples(X)
    Xf = X.astype(np.float32) / 255
    np.testing.assert_allclose(det.score_samples(Xf), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(det.score_samples(X[..., None]), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(det.score_samples(list(X)), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        det.score_samples(torch.from_numpy(X[:, None])), ref, rtol=1e-5, atol=1e-6
    )


def test_flattened_input(fitted):
    factory, _, X = fitted
    Xflat = X.reshape(len(X), -1).astype(np.float64) / 255
    det = factory(image_shape=(H, W)).fit(Xflat)
    maps = det.transform(Xflat)
    assert maps.shape == (len(X), H * W) and maps.dtype == np.float32
    np.testing.assert_allclose(
        maps.reshape(len(X), H, W), det.transform(X), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="features"):
        det.score_samples(Xflat[:, :-4])


def test_joblib_round_trip(fitted, tmp_path):
    _, det, X = fitted
    path = tmp_path / "det.joblib"
    joblib.dump(det, path)
    loaded = joblib.load(path)
    np.testing.assert_array_equal(loaded.score_samples(X), det.score_samples(X))
    np.testing.assert_array_equal(loaded.transform(X), det.transform(X))
    assert loaded.offset_ == det.offset_


def test_same_random_state_same_scores(fitted):
    factory, det, X = fitted
    again = factory().fit(X)
    np.testing.assert_array_equal(again.score_samples(X), det.score_samples(X))


def test_contamination_float(fitted):
    factory, _, X = fitted
    det = factory(contamination=0.2).fit(X)
    pred = det.predict(X)
    assert (pred == -1).sum() == 2


def test_clone_and_params(fitted):
    factory, det, _ = fitted
    c = clone(det)
    assert c.get_params() == det.get_params()
    assert not hasattr(c, "offset_")
    c.set_params(max_epochs=3)
    assert c.max_epochs == 3


def test_pipeline_with_transformer(fitted):
    factory, _, X = fitted
    Xflat = X.reshape(len(X), -1) / 255.0
    pipe = make_pipeline(FunctionTransformer(np.sqrt), factory(image_shape=(H, W)))
    pipe.fit(Xflat)
    assert pipe.predict(Xflat).shape == (len(X),)
    assert pipe.transform(Xflat).shape == (len(X), H * W)
    assert pipe.score_samples(Xflat).shape == (len(X),)


def test_unfitted(fitted):
    factory, _, X = fitted
    det = factory()
    for method in ("score_samples", "decision_function", "predict", "transform"):
        with pytest.raises(NotFittedError):
            getattr(det, method)(X)


BAD_INPUTS = [
    (None, TypeError, "None"),
    ("images", TypeError, "string"),
    (np.zeros((0, H, W), np.uint8), ValueError, "empty"),
    (np.zeros((4, H), np.float32), ValueError, "image_shape"),
    (np.zeros((4, H, W, 3, 1), np.float32), ValueError, "dimensions"),
    (np.zeros((4, H, W, 2), np.float32), ValueError, "channels"),
    (np.zeros((4, H, W, 4), np.float32), ValueError, "channels"),
    (np.full((4, H, W), np.nan, np.float32), ValueError, "NaN"),
    (np.full((4, H, W), np.inf, np.float32), ValueError, "infinity"),
    (np.full((4, H, W), 2.0, np.float32), ValueError, r"\[0, 1\]"),
    (np.full((4, H, W), -0.5, np.float32), ValueError, r"\[0, 1\]"),
    (np.full((4, H, W), 300, np.int32), ValueError, "255"),
    (np.zeros((4, H, W), dtype=object), TypeError, "dtype"),
    (np.zeros((4, H, W), dtype=bool), TypeError, "boolean"),
    ([np.zeros((H, W)), np.zeros((H, W + 1))], ValueError, "ragged"),
    (torch.zeros(4, 2, H, W), ValueError, "channels"),
    (torch.zeros(4, H, W), ValueError, "4-D"),
]


@pytest.mark.parametrize("X_bad, error, match", BAD_INPUTS)
def test_bad_input_fit(X_bad, error, match):
    det = make_detector("dfr")
    with pytest.raises(error, match=match):
        det.fit(X_bad)


@pytest.mark.parametrize("X_bad, error, match", BAD_INPUTS)
def test_bad_input_score(fitted, X_bad, error, match):
    _, det, _ = fitted
    for method in ("score_samples", "transform"):
        with pytest.raises(error, match=match):
            getattr(det, method)(X_bad)


def test_size_and_channel_mismatch(fitted):
    _, det, X = fitted
    with pytest.raises(ValueError, match="fitted on 32x32"):
        det.score_samples(np.zeros((2, 16, 16), np.uint8))
    with pytest.raises(ValueError, match="channel"):
        det.score_samples(np.zeros((2, H, W, 3), np.uint8))


def test_bad_parameters(fitted):
    factory, _, X = fitted
    with pytest.raises(ValueError, match="contamination"):
        factory(contamination=0.9).fit(X)
    with pytest.raises(ValueError, match="max_epochs"):
        factory(max_epochs=0).fit(X)


def test_fit_predict_matches_fit_then_predict(fitted):
    factory, det, X = fitted
    np.testing.assert_array_equal(factory(contamination=0.2).fit_predict(X), factory(contamination=0.2).fit(X).predict(X))


def test_value_range_for_other_bit_depths(fitted):
    factory, det, X = fitted
    X12 = X.astype(np.uint16) * 16  # 12-bit data
    wide = factory(value_range=(0, 4080)).fit(X12)
    np.testing.assert_allclose(wide.score_samples(X12), det.score_samples(X), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="value_range"):
        wide.score_samples(X12 + 1000)
