"""Issue 15: SCADN's fit runs the generator over its training images once, not twice."""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skanomaly import SCADNDetector
from skanomaly.scadn import _estimator as scadn_estimator
from skanomaly.scadn.masks import striped_masks
from skanomaly.scadn.torch_model import SCADNGenerator, scale_error_maps, select_scale
from skanomaly.thresholds import fpr_threshold

N_IMAGES, SIDE, SIZE, BATCH = 6, 40, 32, 4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _images():
    rng = np.random.default_rng(0)
    return rng.uniform(size=(N_IMAGES, SIDE, SIDE)).astype(np.float32)


def _detector(**kw):
    return SCADNDetector(
        width=4, image_size=SIZE, max_epochs=1, batch_size=BATCH, device="cpu",
        random_state=0, **kw,
    )


def _two_pass_reference(det, X):
    """``mu_``, ``offset_`` and ``threshold_`` the old way: two scoring passes.

    Pass 1 gives ``mu_`` (eq. 9); pass 2 scores the training images again
    with it, as ``score_samples`` does, for ``offset_`` and ``threshold_``.
    """
    generator = det.net_.module_.eval()
    x = torch.from_numpy(X)[:, None]
    masks = striped_masks(SIZE, SIZE, det.mask_scales_)

    def scale_maps(batch):
        xw = F.interpolate(
            batch, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True
        )
        return scale_error_maps(generator, xw, masks, chunk_size=4 * BATCH)

    batches = [x[i : i + BATCH] for i in range(0, len(x), BATCH)]
    with torch.inference_mode():
        total = None
        for batch in batches:
            means = scale_maps(batch).mean(dim=(2, 3)).sum(dim=0).double()
            total = means if total is None else total + means
        mu = (total / len(x)).numpy()
        scores, maps = [], []
        for batch in batches:
            s, final, _ = select_scale(scale_maps(batch), torch.as_tensor(mu, dtype=torch.float32))
            scores.append(s.numpy())
            maps.append(F.interpolate(final[:, None], size=(SIDE, SIDE), mode="bilinear",
                                      align_corners=False)[:, 0].numpy())
    scores = np.concatenate(scores).astype(np.float64)
    return mu, float(np.min(-scores)), fpr_threshold(np.concatenate(maps), det.segmentation_fpr)


def test_one_pass_fit_equals_two_pass_path():
    X = _images()
    det = _detector().fit(X)
    mu, offset, threshold = _two_pass_reference(det, X)
    np.testing.assert_array_equal(det.mu_, mu)
    assert det.offset_ == offset
    assert det.threshold_ == threshold
    # The fitted values agree with scoring the training images afterwards.
    assert det.offset_ == float(np.min(det.score_samples(X)))
    assert not hasattr(det, "_reference_scoring_")


def test_fit_scores_each_training_image_with_12_generator_passes(monkeypatch):
    counts = {"train": 0, "eval": 0}
    forward = SCADNGenerator.forward

    def counting_forward(self, x):
        counts["train" if self.training else "eval"] += x.shape[0]
        return forward(self, x)

    monkeypatch.setattr(SCADNGenerator, "forward", counting_forward)
    det = _detector().fit(_images())
    n_masks = 4 * len(det.mask_scales_)
    assert n_masks == 12
    assert counts["train"] > 0
    assert counts["eval"] == n_masks * N_IMAGES


def test_disk_cache_same_values_and_removed(monkeypatch):
    X = _images()
    in_memory = _detector().fit(X)
    made = []
    mkdtemp = scadn_estimator.tempfile.mkdtemp

    def recording_mkdtemp(**kw):
        made.append(mkdtemp(**kw))
        return made[-1]

    monkeypatch.setattr(scadn_estimator, "_MEMORY_CACHE_LIMIT", 0)
    monkeypatch.setattr(scadn_estimator.tempfile, "mkdtemp", recording_mkdtemp)
    on_disk = _detector().fit(X)
    assert len(made) == 1 and not os.path.exists(made[0])
    np.testing.assert_array_equal(on_disk.mu_, in_memory.mu_)
    assert (on_disk.offset_, on_disk.threshold_) == (in_memory.offset_, in_memory.threshold_)
