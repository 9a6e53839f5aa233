"""``precision``: mixed-precision inference agrees with float32."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from tests.detectors import make_detector, registered


def _images(n, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    out = []
    for i in range(n):
        img = 0.5 + 0.25 * np.sin(xx / 3.0 + rng.uniform(0, 6)) * np.cos(yy / 4.0)
        img = img + 0.05 * rng.standard_normal((32, 32))
        if i % 2:
            r, c = rng.integers(4, 20, 2)
            img[r : r + 8, c : c + 8] = rng.uniform(0, 1)
        out.append(img)
    return np.clip(np.stack(out), 0, 1).astype(np.float32)


@pytest.mark.parametrize("name", registered())
def test_bfloat16_inference_agrees_with_float32(name):
    det = make_detector(name, max_epochs=2).fit(_images(10, 0))
    X = _images(12, 1)
    s32, m32 = det.score_and_transform(X)
    det.set_params(precision="bfloat16")
    s16, m16 = det.score_and_transform(X)
    assert m16.dtype == np.float32 and s16.dtype == np.float64
    assert not np.array_equal(m16, m32)  # autocast really ran
    assert np.corrcoef(m16.ravel(), m32.ravel())[0, 1] > 0.95
    assert spearmanr(s16, s32).statistic > 0.8


def test_float16_on_cpu_is_refused():
    det = make_detector("dfr", max_epochs=1).fit(_images(6, 0))
    det.set_params(precision="float16")
    with pytest.raises(ValueError, match="precision='float16' needs CUDA"):
        det.score_samples(_images(2, 1))


def test_precision_is_validated():
    with pytest.raises(ValueError, match="precision"):
        make_detector("dfr", precision="float64").fit(_images(4, 0))


@pytest.mark.parametrize("name", registered())
@pytest.mark.parametrize("rule", ["top_k_mean", "smoothed_max"])
def test_bfloat16_image_scores_are_reduced_in_float32(name, rule):
    # The maps come back in float32, and the image score is their reduction
    # in float32, not a bfloat16 value (three digits, ties between images).
    import torch

    from skanomaly.image_scores import reduce_maps

    det = make_detector(name, max_epochs=1, precision="bfloat16", image_score=rule,
                        image_score_k=0.05).fit(_images(8, 0))
    X = _images(8, 1)
    scores, maps = det.score_and_transform(X)
    assert maps.dtype == np.float32
    expected = -reduce_maps(torch.from_numpy(maps), rule, 0.05, det.image_score_sigma).numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
