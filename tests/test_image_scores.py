"""The ``image_score`` parameter: map reductions at the value level, on every
detector, through thresholds and through ONNX export."""

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

import skanomaly
from skanomaly.image_scores import reduce_maps
from skanomaly.registry import detector_names

from .detectors import make_detector

SIZE = 32


def _maps(seed=0, shape=(3, 20, 24)):
    return np.random.default_rng(seed).gamma(2.0, 1.0, shape).astype(np.float32)


def _images(n, seed, defect=False):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    out = []
    for i in range(n):
        im = 0.5 + 0.2 * np.sin(xx / 2.0 + rng.uniform(0, 6)) + rng.normal(0, 0.03, (SIZE, SIZE))
        if defect and i % 2:
            r, c = rng.integers(2, SIZE - 10, 2)
            im[r : r + 8, c : c + 8] = rng.uniform(0, 1)
        out.append(np.clip(im, 0, 1))
    return np.stack(out).astype(np.float32)


@pytest.mark.parametrize("k", [1e-6, 0.01, 0.1, 0.5, 1.0])
def test_top_k_mean_is_the_mean_of_the_largest_share(k):
    maps = _maps()
    n = max(1, int(np.ceil(k * 20 * 24)))
    expected = np.sort(maps.reshape(3, -1), axis=1)[:, ::-1][:, :n].mean(axis=1)
    got = reduce_maps(torch.from_numpy(maps), "top_k_mean", k=k).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_top_k_count_is_not_pushed_up_by_float_rounding():
    # 0.07 * 100 is 7.000000000000001 in floats: 7 pixels, not 8.
    maps = torch.arange(100.0).reshape(1, 10, 10)
    assert reduce_maps(maps, "top_k_mean", k=0.07).item() == 96.0  # mean of 93..99
    assert reduce_maps(torch.arange(70.0).reshape(1, 7, 10), "top_k_mean", k=0.1).item() == 66.0


@pytest.mark.parametrize("sigma", [0.0, 1.0, 2.5])
def test_smoothed_max_is_the_max_of_scipys_gaussian_filter(sigma):
    maps = _maps(1)
    expected = ndimage.gaussian_filter(maps, sigma=(0, sigma, sigma), mode="reflect").max(axis=(1, 2))
    got = reduce_maps(torch.from_numpy(maps), "smoothed_max", sigma=sigma).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_max_and_unknown_rule():
    maps = _maps(2)
    np.testing.assert_array_equal(reduce_maps(torch.from_numpy(maps), "max").numpy(),
                                  maps.max(axis=(1, 2)))
    with pytest.raises(ValueError, match="image_score='median'"):
        reduce_maps(torch.from_numpy(maps), "median")


def test_area_beats_one_pixel():
    # One bright pixel against a 5x5 defect of lower height: the max ranks
    # the pixel first, the two area rules the defect.
    maps = np.zeros((2, 40, 40), np.float32)
    maps[0, 10, 10] = 1.0
    maps[1, 20:25, 20:25] = 0.6
    t = torch.from_numpy(maps)
    assert reduce_maps(t, "max")[0] > reduce_maps(t, "max")[1]
    assert reduce_maps(t, "top_k_mean", k=0.01)[1] > reduce_maps(t, "top_k_mean", k=0.01)[0]
    assert reduce_maps(t, "smoothed_max", sigma=2)[1] > reduce_maps(t, "smoothed_max", sigma=2)[0]


@pytest.fixture(scope="module")
def fitted():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = make_detector(name).fit(_images(8, 0))
        return cache[name]

    return get


@pytest.mark.parametrize("name", detector_names())
@pytest.mark.parametrize("rule", ["max", "top_k_mean", "smoothed_max"])
def test_every_detector_scores_its_maps_with_the_chosen_rule(name, rule, fitted):
    det = clone(fitted(name))
    det.set_params(image_score=rule, image_score_k=0.05, image_score_sigma=1.5)
    # A parameter of scoring only: the fitted networks are reused, the
    # thresholds refitted, so fit once and swap the rule on a copy.
    base = fitted(name)
    for attr, value in vars(base).items():
        if attr.endswith("_") and not attr.startswith("__"):
            setattr(det, attr, value)
    X = _images(6, 1, defect=True)
    normality, maps = det.score_and_transform(X)
    expected = reduce_maps(torch.from_numpy(maps), rule, k=0.05, sigma=1.5).numpy()
    np.testing.assert_allclose(-normality, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(det.transform(X), base.transform(X))


@pytest.mark.parametrize("name", detector_names())
def test_fit_sets_offset_from_the_chosen_rule(name):
    X = _images(8, 0)
    det = make_detector(name, image_score="top_k_mean", image_score_k=0.1).fit(X)
    # contamination="auto": the offset is the lowest training score, under the rule.
    np.testing.assert_allclose(det.offset_, det.score_samples(X).min(), rtol=1e-6)
    assert det.predict(X).min() == 1


@pytest.mark.parametrize("name", detector_names())
def test_offset_is_refused_for_a_rule_changed_after_fit(name, tmp_path):
    # offset_ is on the scale of the rule it was set with: after set_params,
    # decision_function and predict refuse until calibrate sets it anew.
    X = _images(8, 0)
    det = make_detector(name).fit(X)
    assert det.image_score_rule_ == ("auto", 0.01, 4.0)
    det.set_params(image_score="top_k_mean", image_score_k=0.1)
    scores = det.score_samples(X)  # the new rule at once
    for method in (det.predict, det.decision_function):
        with pytest.raises(ValueError, match=r"offset_ was set with .*calibrate\(X_normal\)"):
            method(X)
    det.calibrate(X)
    assert det.offset_ == pytest.approx(scores.min()) and det.predict(X).min() == 1
    assert det.image_score_rule_ == ("top_k_mean", 0.1, 4.0)
    det.save(tmp_path / "m.skan")
    loaded = skanomaly.load(tmp_path / "m.skan")
    assert loaded.image_score_rule_ == det.image_score_rule_
    np.testing.assert_array_equal(loaded.predict(X), det.predict(X))


def test_invalid_image_score_parameters_are_named():
    X = _images(4, 0)
    for params, name in [({"image_score": "median"}, "image_score"),
                         ({"image_score_k": 0.0}, "image_score_k"),
                         ({"image_score_k": 1.5}, "image_score_k"),
                         ({"image_score_sigma": -1.0}, "image_score_sigma")]:
        with pytest.raises(ValueError, match=name):
            make_detector("dfr", **params).fit(X)


def test_image_score_is_searchable():
    X = _images(8, 0)
    search = GridSearchCV(
        make_detector("dfr"), {"image_score": ["max", "top_k_mean"]}, cv=2,
        scoring=lambda est, X, y=None: float(np.mean(est.score_samples(X))),
    ).fit(X)
    assert set(search.cv_results_["param_image_score"]) == {"max", "top_k_mean"}


@pytest.mark.parametrize("rule", ["top_k_mean", "smoothed_max"])
@pytest.mark.parametrize("name", ["dfr", "inpainting"])
def test_onnx_export_scores_with_the_chosen_rule(name, rule, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from skanomaly.export import onnx_image_scores

    det = make_detector(name, image_score=rule, image_score_k=0.05,
                        image_score_sigma=1.5).fit(_images(8, 0))
    path = tmp_path / "m.onnx"
    det.export_onnx(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    X = _images(6, 1, defect=True)
    raw, maps = session.run(None, {"images": X[:, None]})
    scores = onnx_image_scores(raw, maps, session.get_modelmeta().custom_metadata_map)
    normality = det.score_samples(X)
    assert np.max(np.abs(scores + normality)) <= 1e-4 * max(np.ptp(normality), 1e-12)
