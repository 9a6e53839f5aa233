"""The shared skorch glue: progress output, long-fit warning, early stopping.

Ctrl-C and skorch's own EarlyStopping raise are covered in tests/test_hostile.py.
"""

import re
import warnings

import numpy as np
import pytest
from skorch.callbacks import ProgressBar

import skanomaly._callbacks as _callbacks
import skanomaly._training as training
from skanomaly import LongFitWarning
from tests.detectors import make_detector, registered


def _images(n=8, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    base = 0.5 + 0.25 * np.sin(xx / 3.0) * np.cos(yy / 4.0)
    return np.clip(base + 0.05 * rng.standard_normal((n, 32, 32)), 0, 1).astype(np.float32)


@pytest.mark.parametrize("name", registered())
def test_verbose_shows_one_bar_over_the_whole_fit(name, capsys):
    det = make_detector(name, verbose=1, max_epochs=2).fit(_images())
    callbacks = dict(det.net_.callbacks_)
    assert isinstance(callbacks["progress_bar"], training.FitProgressBar)
    assert not any(isinstance(cb, ProgressBar) for cb in callbacks.values())
    out = capsys.readouterr()
    # no skorch epoch table at verbose=1, and one bar (one "fit" label per refresh line)
    assert "train_loss" not in out.out
    bars = {m for m in re.findall(r"(\w+): +\d+%", out.err)}
    assert bars == {type(det).__name__}
    # the bar is not pickled with the net
    assert callbacks["progress_bar"].__getstate__()["_bar"] is None


@pytest.mark.parametrize("vector_batch_size", [None, 16])
def test_bar_and_estimate_count_the_training_iterators_batches(vector_batch_size, capsys):
    # 4 images of 32 px: 4 images a batch of 4 -> 1 batch an epoch; with
    # vector_batch_size=16, 4 x 8 x 8 = 256 regional vectors -> 16 batches.
    det = make_detector("dfr", verbose=1, max_epochs=2, batch_size=4,
                        vector_batch_size=vector_batch_size).fit(_images(4))
    callbacks = dict(det.net_.callbacks_)
    per_epoch = 1 if vector_batch_size is None else 16
    assert callbacks["time_estimate"]._per_epoch == per_epoch
    totals = {int(t) for t in re.findall(r"\d+/(\d+) \[", capsys.readouterr().err)}
    assert totals == {2 * per_epoch}
    assert [len(row["batches"]) for row in det.net_.history] == [per_epoch] * 2


def test_verbose_2_adds_skorch_table(capsys):
    make_detector("dfr", verbose=2, max_epochs=2).fit(_images())
    assert "train_loss" in capsys.readouterr().out


def test_long_fit_warns_with_estimate_and_hints(monkeypatch):
    clock = iter(np.arange(0, 1e6, 500.0))  # every timed batch "takes" 500 s
    monkeypatch.setattr(_callbacks.time, "perf_counter", lambda: next(clock))
    with pytest.warns(LongFitWarning, match=r"projected to take about .* h .*image_size"):
        make_detector("dfr", max_epochs=2).fit(_images(16))


def test_short_fit_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", LongFitWarning)
        make_detector("dfr", max_epochs=2).fit(_images())


@pytest.mark.parametrize("name", registered())
def test_early_stopping_in_sklearn_terms(name):
    X = _images(10)
    # tol so large that no epoch counts as an improvement: stops after
    # n_iter_no_change + 1 epochs (the first sets the best score).
    det = make_detector(
        name, max_epochs=20, early_stopping=True, n_iter_no_change=2, tol=1e9,
        progressive_resizing=False,
    ) if name == "inpainting" else make_detector(
        name, max_epochs=20, early_stopping=True, n_iter_no_change=2, tol=1e9,
    )
    det.fit(X)
    assert det.n_epochs_ == 3 == len(det.net_.history)
    assert "valid_loss" in det.net_.history[-1]
    # without early stopping every epoch runs
    assert make_detector(name, max_epochs=4).fit(X).n_epochs_ == 4


def test_early_stopping_holds_out_a_tenth_by_default():
    det = make_detector("dfr", max_epochs=3, early_stopping=True, n_iter_no_change=5)
    assert det._validation_fraction() == 0.1
    det.set_params(validation_fraction=0.3)
    assert det._validation_fraction() == 0.3
    assert make_detector("dfr")._validation_fraction() is None


def test_inpainting_patience_starts_at_full_size():
    # 8 epochs of progressive resizing: full size from epoch 5 (index 4).
    det = make_detector(
        "inpainting", max_epochs=8, early_stopping=True, n_iter_no_change=1, tol=1e9,
    ).fit(_images(10))
    sizes = [row["full_size"] for row in det.net_.history]
    first_full = sizes.index(True)
    assert first_full == 4
    assert det.n_epochs_ == first_full + 2


def test_early_stopping_params_are_searchable():
    from sklearn.model_selection import GridSearchCV

    from skanomaly.metrics import image_auroc_scorer
    from skanomaly.model_selection import NormalOnlyKFold

    X = _images(12)
    y = np.zeros(12, dtype=int)
    X[8:, 10:18, 10:18] = 1.0
    y[8:] = 1
    search = GridSearchCV(
        make_detector("dfr", max_epochs=6, early_stopping=True, tol=1e9),
        {"n_iter_no_change": [1, 2]}, scoring=image_auroc_scorer, cv=NormalOnlyKFold(2),
    ).fit(X, y)
    assert list(search.cv_results_["param_n_iter_no_change"]) == [1, 2]
    assert search.best_estimator_.n_epochs_ in (2, 3)
