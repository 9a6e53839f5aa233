"""NormalOnlyKFold: normal-only training folds, each image tested once."""

import warnings

import numpy as np
import pytest

from skanomaly.model_selection import NormalOnlyKFold


def _folds(cv, y, X=None):
    return list(cv.split(y if X is None else X, y))


def _check_partition(folds, y):
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested.tolist()) == list(range(len(y)))  # each image tested once
    for train, test in folds:
        assert not np.any(y[train]) and not np.intersect1d(train, test).size


@pytest.mark.parametrize("shuffle", [True, False])
def test_fewer_anomalies_than_folds_warns_and_tests_each_once(shuffle):
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    cv = NormalOnlyKFold(3, shuffle=shuffle, random_state=0 if shuffle else None)
    with pytest.warns(UserWarning, match=r"only 2 anomalous image\(s\), fewer than "
                                         r"n_splits=3: .* 1 test fold\(s\) hold no anomalous"):
        folds = _folds(cv, y)
    _check_partition(folds, y)
    assert sorted(int(y[test].sum()) for _, test in folds) == [0, 1, 1]
    assert [len(train) for train, _ in folds] == [4, 4, 4]


def test_enough_anomalies_split_without_warning():
    y = np.array([0] * 7 + [1] * 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        folds = _folds(NormalOnlyKFold(3, random_state=0), y)
    _check_partition(folds, y)
    assert sorted(int(y[test].sum()) for _, test in folds) == [1, 1, 2]


@pytest.mark.parametrize("y", [np.zeros(6, int), np.ones(6, int), np.zeros((6, 4, 4), bool)],
                         ids=["zeros", "all +1", "empty masks"])
def test_labels_without_anomalies_are_refused_up_front(y):
    with pytest.raises(ValueError, match="y marks none of its 6 images anomalous|only 1s"):
        next(NormalOnlyKFold(3, random_state=0).split(y, y))


def test_nan_labels_are_refused():
    y = np.array([0, 0, 0, np.nan, 0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"y holds NaN or infinity \(1 of 8 values"):
        next(NormalOnlyKFold(2).split(y, y))
    masks = np.zeros((4, 3, 3))
    masks[2, 1, 1] = np.nan
    with pytest.raises(ValueError, match="y holds NaN or infinity"):
        next(NormalOnlyKFold(2).split(masks, masks))


def test_bad_n_splits_and_lengths_name_the_input():
    y = np.array([0, 0, 0, 0, 1, 1])
    with pytest.raises(TypeError, match=r"n_splits must be an integer .* got '3'"):
        next(NormalOnlyKFold("3").split(y, y))
    with pytest.raises(ValueError, match="n_splits must be at least 2"):
        next(NormalOnlyKFold(1).split(y, y))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        next(NormalOnlyKFold(2).split(np.zeros((5, 8, 8)), y))
    with pytest.raises(ValueError, match=r"only 1 normal image\(s\) for n_splits=2"):
        next(NormalOnlyKFold(2).split(y[3:], y[3:]))
