"""``lr_schedule``: the warm-up/cosine schedule at the value level, through real fits."""

import math

import numpy as np
import pytest
from skorch.callbacks import Callback, LRScheduler

from skanomaly._schedules import WarmupCosineLR
from skanomaly.registry import detector_names

from .detectors import make_detector, trained_callback


def _images(n=8, size=32, seed=0):
    return np.random.default_rng(seed).random((n, size, size)).astype(np.float32)


def _factor(t, total, warmup=0.05):
    warm = max(1, round(warmup * total))
    if t < warm:
        return (t + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (t - warm) / (total - warm)))


def test_warmup_cosine_factors_by_hand():
    cb = WarmupCosineLR(warmup=0.1).initialize()
    cb.total_steps_ = 40
    got = [cb.factor(t) for t in range(40)]
    # 4 warm-up batches at 1/4 .. 4/4, then the cosine from 1 down towards 0.
    assert got[:4] == [0.25, 0.5, 0.75, 1.0]
    assert got[4] == 1.0
    assert got[4 + 18] == pytest.approx(0.5)
    assert got[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 35 / 36)))
    assert all(a >= b for a, b in zip(got[3:], got[4:]))


class _RecordLR(Callback):
    """The learning rate of every optimizer at each training batch."""

    def initialize(self):
        self.lrs_ = []
        return self

    def on_batch_begin(self, net, batch=None, training=None, **kwargs):
        if training:
            self.lrs_.append({name: group["lr"] for name, value in vars(net).items()
                              if name.startswith("optimizer") and name.endswith("_")
                              for group in value.param_groups[:1]})


@pytest.mark.parametrize("name", detector_names())
def test_every_optimizer_follows_the_warmup_cosine_schedule(name):
    det = make_detector(name, lr_schedule="warmup_cosine", max_epochs=4, batch_size=2,
                        callbacks=[("record", _RecordLR())]).fit(_images())
    lrs = trained_callback(det, "record").lrs_
    total = len(lrs)
    assert total == 4 * 4  # 8 images, batches of 2, 4 epochs
    for t, row in enumerate(lrs):
        for opt, lr in row.items():
            assert lr == pytest.approx(det.lr * _factor(t, total), rel=1e-9), (opt, t)
    assert len(lrs[0]) == {"scadn": 2, "igd": 2}.get(name, 1)
    names = [key for key, _ in det.net_.callbacks_]
    assert names.count("lr_schedule") == 1  # IGD's polynomial decay is replaced


def test_paper_schedule_is_the_default_and_constant():
    det = make_detector("dfr", max_epochs=3, batch_size=4,
                        callbacks=[("record", _RecordLR())]).fit(_images())
    assert det.lr_schedule == "paper"
    assert {row["optimizer_"] for row in trained_callback(det, "record").lrs_} == {det.lr}


def test_schedule_set_twice_is_refused():
    det = make_detector("dfr", lr_schedule="warmup_cosine",
                        callbacks=[("lr_schedule", LRScheduler(policy="StepLR", step_size=1))])
    with pytest.raises(ValueError, match="lr_schedule='warmup_cosine'.*callback named"):
        det.fit(_images())
    assert not hasattr(det, "net_")
