"""Hostile use: interrupts, divergence, bad input, unsafe outputs, offline weights.

Each test states the exact outcome: the error type and a phrase of its
message, or the correct output.  Detectors are shared through module-scoped
fixtures and trained for one epoch on tiny images, so the module stays fast.
"""

import copy
import csv
import os
import pickle
import urllib.error

import joblib
import numpy as np
import pytest
import torch
from PIL import Image
from skorch.callbacks import Callback, EarlyStopping
from skorch.history import History
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

import skanomaly._training as training
from skanomaly import backbones
from skanomaly._shared_params import MAX_IMAGE_SIZE, _check_working_size
from skanomaly.thresholds import StreamingFPRThreshold
from skanomaly.cli import main
from skanomaly.datasets import read_images
from skanomaly.registry import detector_names, get_detector
from skanomaly.tiling import TiledDetector
from skanomaly.validation import check_images
from tests.detectors import make_detector, registered

SIZE = 32


def _images(n=8, seed=0, size=SIZE, channels=None):
    """Smooth random textures (uint8)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        f1, f2, ph = rng.uniform(0.2, 0.5, 2).tolist() + [rng.uniform(0, 6)]
        img = 0.5 + 0.25 * np.sin(f1 * xx + ph) * np.cos(f2 * yy)
        out.append(np.clip(img + 0.05 * rng.standard_normal((size, size)), 0, 1))
    X = np.rint(np.stack(out) * 255).astype(np.uint8)
    if channels == 3:
        X = np.repeat(X[..., None], 3, axis=-1)
    return X


def _fitted_attributes(det):
    return sorted(k for k in vars(det) if k.endswith("_") and not k.startswith("__"))


def _assert_unfitted(det):
    with pytest.raises(NotFittedError):
        check_is_fitted(det)
    assert _fitted_attributes(det) == []


@pytest.fixture(scope="module", params=registered())
def fitted(request):
    """(registry name, a detector fitted for one epoch on grey 32x32 images, X)."""
    X = _images(8)
    return request.param, make_detector(request.param, max_epochs=1).fit(X), X


# --------------------------------------------------------------- Ctrl-C


class _Interrupt(Callback):
    """Raises KeyboardInterrupt (a user's Ctrl-C) from one hook."""

    def __init__(self, hook="on_batch_end"):
        self.hook = hook

    def on_batch_end(self, net, training=None, **kwargs):
        if training and self.hook == "on_batch_end":
            raise KeyboardInterrupt

    def on_epoch_end(self, net, **kwargs):
        if self.hook == "on_epoch_end":
            raise KeyboardInterrupt


@pytest.mark.parametrize("hook", ["on_batch_end", "on_epoch_end"])
@pytest.mark.parametrize("name", registered())
def test_ctrl_c_during_fit_propagates_and_leaves_unfitted(name, hook):
    det = make_detector(name, max_epochs=2, callbacks=[_Interrupt(hook)])
    with pytest.raises(KeyboardInterrupt):
        det.fit(_images(8))
    _assert_unfitted(det)


def test_ctrl_c_during_refit_leaves_unfitted_not_mixed(fitted):
    _, det, X = fitted
    det = copy.deepcopy(det)
    assert _fitted_attributes(det)
    det.set_params(callbacks=[("stop", _Interrupt())])
    with pytest.raises(KeyboardInterrupt):
        det.fit(X)
    _assert_unfitted(det)


def test_early_stopping_still_ends_training_normally():
    det = make_detector(
        "dfr", max_epochs=4, validation_fraction=0.25,
        callbacks=[EarlyStopping(patience=1, threshold=1e9)],
    ).fit(_images(8))
    assert len(det.net_.history) < 4
    check_is_fitted(det)


# ----------------------------------------------------------- divergence


@pytest.mark.parametrize("name", ["inpainting", "scadn"])
def test_bounded_loss_divergence_is_detected(name):
    det = make_detector(name, lr=1e3, max_epochs=2)
    with pytest.raises(training.TrainingDivergedError, match="diverged in epoch .*Lower lr"):
        det.fit(_images(16))
    _assert_unfitted(det)


def _guard_net(params, loss=0.1, lr=0.01):
    """A stand-in for a skorch net, as FiniteLossGuard sees it."""
    history = History()
    history.new_epoch()
    history.new_batch()
    history.record_batch("train_loss", loss)

    class Net:
        pass

    net = Net()
    net.history, net.lr = history, lr
    net.get_all_learnable_params = lambda: [(f"p{i}", p) for i, p in enumerate(params)]
    return net


def _param(value, grad=None):
    p = torch.nn.Parameter(torch.full((3,), float(value)))
    if grad is not None:
        p.grad = torch.full((3,), float(grad))
    return p


@pytest.mark.parametrize("grad", [np.nan, np.inf, -np.inf])
def test_guard_refuses_non_finite_gradients(grad):
    guard = training.FiniteLossGuard().initialize()
    p = _param(0.5, grad)
    with pytest.raises(training.TrainingDivergedError, match="a gradient is"):
        guard.on_grad_computed(_guard_net([p]), [("w", p)], training=True)


@pytest.mark.parametrize(
    "weight, phrase",
    [(np.nan, "weight is nan"), (np.inf, "weight is inf"), (1e7, "weights are exploding")],
)
def test_guard_refuses_non_finite_or_exploding_weights(weight, phrase):
    guard = training.FiniteLossGuard().initialize()
    net = _guard_net([_param(0.1), _param(weight)])
    with pytest.raises(training.TrainingDivergedError, match=phrase):
        guard.on_batch_end(net, training=True, y_pred=torch.rand(2, 3))


@pytest.mark.parametrize("loss", [np.nan, np.inf, 1e9])
def test_guard_refuses_bad_loss(loss):
    guard = training.FiniteLossGuard().initialize()
    with pytest.raises(training.TrainingDivergedError, match="batch loss is"):
        guard.on_batch_end(_guard_net([_param(0.1)], loss=loss), training=True)


def _run_guard_epoch(guard, outputs, grad):
    p = _param(0.1, grad)
    net = _guard_net([p])
    guard.on_epoch_begin(net)
    for y in outputs:
        guard.on_batch_begin(net, training=True)
        guard.on_grad_computed(net, [("w", p)], training=True)
        guard.on_batch_end(net, training=True, y_pred=y)
    guard.on_epoch_end(net)
    return net


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_guard_refuses_output_saturated_for_a_whole_epoch(value):
    guard = training.FiniteLossGuard().initialize()
    stuck = [torch.full((2, 1, 4, 4), value) for _ in range(3)]
    with pytest.raises(training.TrainingDivergedError, match="stuck at 0/1"):
        _run_guard_epoch(guard, stuck, grad=0.0)


def test_guard_refuses_training_that_ends_saturated():
    guard = training.FiniteLossGuard().initialize()
    outputs = [torch.rand(2, 1, 4, 4), torch.ones(2, 1, 4, 4)]
    net = _run_guard_epoch(guard, outputs, grad=0.0)  # half the epoch: no error yet
    with pytest.raises(training.TrainingDivergedError, match="end of training"):
        guard.on_train_end(net)


@pytest.mark.parametrize(
    "outputs, grad",
    [
        ([torch.ones(2, 1, 4, 4)] * 3, 0.01),  # saturated but still learning
        ([torch.rand(2, 1, 4, 4)] * 3, 0.0),  # not saturated
        ([torch.ones(2, 1, 4, 4), torch.rand(2, 1, 4, 4)], 0.0),  # recovered
        ([(torch.ones(2, 3), torch.zeros(2))] * 3, 0.0),  # tuple output: not checked
    ],
)
def test_guard_accepts_healthy_training(outputs, grad):
    guard = training.FiniteLossGuard().initialize()
    net = _run_guard_epoch(guard, outputs, grad)
    guard.on_train_end(net)


# ------------------------------------------------- seeding, CUDA, pickling


def test_seeded_makes_cudnn_deterministic_and_restores_it():
    cudnn = torch.backends.cudnn
    saved = (cudnn.deterministic, cudnn.benchmark)
    try:
        cudnn.deterministic, cudnn.benchmark = False, True
        with training.seeded(0):
            assert (cudnn.deterministic, cudnn.benchmark) == (True, False)
        assert (cudnn.deterministic, cudnn.benchmark) == (False, True)
        with pytest.raises(RuntimeError, match="boom"):
            with training.seeded(0):
                raise RuntimeError("boom")
        assert (cudnn.deterministic, cudnn.benchmark) == (False, True)
    finally:
        cudnn.deterministic, cudnn.benchmark = saved


def test_float32_inference_turns_tf32_off_and_restores_it():
    # TF32 convolutions made a GPU-fitted IGD's maps differ from its CPU
    # maps by 24 % of their range on an H100; precision="float32" must mean
    # IEEE float32.  The flags are plain globals, so this runs on the CPU.
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32)
    try:
        cudnn.allow_tf32 = matmul.allow_tf32 = True
        det = make_detector("dfr")
        with det._autocast("cpu"):
            assert (cudnn.allow_tf32, matmul.allow_tf32) == (False, False)
        assert (cudnn.allow_tf32, matmul.allow_tf32) == (True, True)
        cudnn.allow_tf32 = matmul.allow_tf32 = False
        with det.set_params(precision="tf32")._autocast("cpu"):
            assert (cudnn.allow_tf32, matmul.allow_tf32) == (True, True)
        assert (cudnn.allow_tf32, matmul.allow_tf32) == (False, False)
        cudnn.allow_tf32 = matmul.allow_tf32 = True
        with pytest.raises(RuntimeError, match="boom"):
            with training.float32_mode():
                raise RuntimeError("boom")
        assert (cudnn.allow_tf32, matmul.allow_tf32) == (True, True)
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved


def test_seeded_on_the_cpu_leaves_deterministic_algorithms_alone():
    before = torch.are_deterministic_algorithms_enabled()
    with training.seeded(0):
        assert torch.are_deterministic_algorithms_enabled() == before
    assert torch.are_deterministic_algorithms_enabled() == before


def test_seeded_restores_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with training.seeded(7):
        torch.rand(5)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", registered())
def test_cuda_fit_with_random_state_is_reproducible(name):  # pragma: no cover - GPU
    X = _images(8)
    a = make_detector(name, device="cuda", max_epochs=1).fit(X).score_samples(X)
    b = make_detector(name, device="cuda", max_epochs=1).fit(X).score_samples(X)
    np.testing.assert_array_equal(a, b)


class _ReportsCUDA(torch.nn.Linear):
    """A CPU module whose state dict claims another device (a CUDA stand-in)."""

    def state_dict(self, *args, **kwargs):
        return {"weight": torch.empty(1, device="meta")}


def test_dump_never_changes_the_live_detector(fitted, tmp_path):
    _, det, X = fitted
    det = copy.deepcopy(det)
    det.gpu_module_ = _ReportsCUDA(2, 2)
    before = dict(vars(det))
    state = det.__getstate__()
    assert state is not vars(det)
    assert state["gpu_module_"] is not det.gpu_module_  # the copy went to the CPU
    joblib.dump(det, tmp_path / "det.joblib")
    after = vars(det)
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before)
    loaded = joblib.load(tmp_path / "det.joblib")
    del det.gpu_module_
    np.testing.assert_allclose(loaded.score_samples(X), det.score_samples(X), rtol=1e-6)


# -------------------------------------------------------------- bad input


@pytest.mark.parametrize("shape", [(SIZE, SIZE, 3), (SIZE, SIZE, 4)])
@pytest.mark.parametrize("method", ["fit", "score_samples"])
def test_one_colour_image_without_batch_axis_is_refused(fitted, method, shape):
    _, det, _ = fitted
    target = copy.deepcopy(det) if method == "fit" else det
    with pytest.raises(ValueError, match=r"looks like one RGBA? image .*X\[None\]"):
        getattr(target, method)(np.zeros(shape, np.uint8))


def test_one_channels_first_tensor_is_refused(fitted):
    _, det, _ = fitted
    with pytest.raises(ValueError, match=r"must be 4-D .*pass X\[None\]"):
        det.score_samples(torch.zeros(1, SIZE, SIZE))


def test_channels_first_array_on_rgb_detector_names_the_layout():
    X = _images(4, channels=3)
    det = make_detector("dfr", max_epochs=1).fit(X)
    with pytest.raises(ValueError, match=r"channels-first image .*np.moveaxis\(X, 0, -1\)"):
        det.score_samples(np.moveaxis(X[0], -1, 0))
    # The suggested fix works.
    assert det.score_samples(np.moveaxis(np.moveaxis(X[0], -1, 0), 0, -1)[None]).shape == (1,)


@pytest.mark.parametrize(
    "shape, ok",
    [((6, SIZE, 3), False), ((6, SIZE, 4), False), ((6, SIZE, 3, 1), True),
     ((4, SIZE, 3), True), ((6, 4, 3), True), ((3, SIZE, SIZE), True), ((6, SIZE, 5), True)],
)
def test_single_image_rule(shape, ok):
    X = np.zeros(shape, np.uint8)
    if ok:
        assert check_images(X).n_images == shape[0]
    else:
        with pytest.raises(ValueError, match="not a batch"):
            check_images(X)


@pytest.mark.parametrize("device", ["mps", "xpu", "meta", "cuda:7", "gpu", 3])
def test_unsupported_devices_are_refused_before_training(fitted, device):
    name, _, X = fitted
    det = make_detector(name, device=device)
    kind = TypeError if isinstance(device, int) else ValueError
    with pytest.raises(kind, match=r"device"):
        det.fit(X)
    _assert_unfitted(det)


@pytest.mark.parametrize("method", ["fit", "score_samples"])
def test_meta_tensors_are_refused(fitted, method):
    _, det, _ = fitted
    target = copy.deepcopy(det) if method == "fit" else det
    with pytest.raises(ValueError, match="'meta' device, which holds no values"):
        getattr(target, method)(torch.zeros(4, 1, SIZE, SIZE, device="meta"))


@pytest.mark.parametrize(
    "callbacks, kind, phrase",
    [
        ([1], TypeError, r"callbacks\[0\] is int"),
        (["EarlyStopping"], TypeError, r"callbacks\[0\] is str"),
        ([EarlyStopping(), object()], TypeError, r"callbacks\[1\] is object"),
        ([("es",)], TypeError, r"callbacks\[0\] is a tuple"),
        ([(1, EarlyStopping())], TypeError, r"pair \(name: str, callback\)"),
        ([("a", EarlyStopping()), ("a", EarlyStopping())], ValueError, "unique name"),
    ],
)
def test_bad_callbacks_are_refused_before_training(fitted, callbacks, kind, phrase):
    name, _, X = fitted
    det = make_detector(name, callbacks=callbacks)
    with pytest.raises(kind, match=phrase):
        det.fit(X)
    _assert_unfitted(det)


def _zero_score(net, X=None, y=None):
    return 0.0


@pytest.mark.parametrize("interrupt", [False, True])
def test_fit_leaves_the_users_callbacks_untouched(fitted, interrupt):
    # Callbacks are parameters: fit trains copies, so the user's objects gain
    # no fitted state (skorch's EpochScoring would keep the last batch's
    # reconstructions) and pickles of the detector reach none of it.
    from skorch.callbacks import EpochScoring

    name, _, X = fitted
    score = EpochScoring(_zero_score, on_train=True, name="s")
    callbacks = [score] + ([_Interrupt()] if interrupt else [])
    det = make_detector(name, callbacks=callbacks)
    before = len(pickle.dumps(det))
    if interrupt:
        with pytest.raises(KeyboardInterrupt):
            det.fit(X)
    else:
        det.fit(X)
        assert "s" in det.net_.history[-1]  # the copy did its work
    assert det.get_params()["callbacks"][0] is score
    assert not [k for k in vars(score) if k.endswith("_")]  # no fitted state
    if interrupt:
        assert len(pickle.dumps(det)) == before


def test_builtin_callback_names(fitted):
    name, det, X = fitted
    quiet = make_detector(name, verbose=1, callbacks=[("progress_bar", None),
                                                      ("time_estimate", None)]).fit(X)
    names = [n for n, _ in quiet.net_.callbacks_]  # those training ran
    assert "progress_bar" not in names and "time_estimate" not in names
    assert "finite_loss" in names
    for callbacks, phrase in [([("finite_loss", None)], "divergence guard"),
                              ([("early_stopping", EarlyStopping())], "early_stopping=True")]:
        refit = copy.deepcopy(det).set_params(callbacks=callbacks, early_stopping=True,
                                              validation_fraction=0.5)
        with pytest.raises(ValueError, match=phrase):
            refit.fit(X)
        assert hasattr(refit, "net_")  # refused before the old fit was discarded


@pytest.mark.parametrize(
    "contamination, kind",
    [(0.7, ValueError), (0.0, ValueError), (-0.1, ValueError), (0.5000001, ValueError),
     (np.nan, ValueError), ("abc", TypeError), (None, TypeError), (True, TypeError),
     ([0.1], TypeError)],
)
def test_calibrate_refuses_bad_contamination(fitted, contamination, kind):
    _, det, X = fitted
    offset = det.offset_
    with pytest.raises(kind, match="contamination"):
        det.calibrate(X, contamination=contamination)
    assert det.offset_ == offset


@pytest.mark.parametrize("contamination", [0.5, np.float32(0.25), "auto"])
def test_calibrate_accepts_valid_contamination(fitted, contamination):
    _, det, X = fitted
    det = copy.deepcopy(det)
    det.calibrate(X, contamination=contamination)
    share = float(np.mean(det.predict(X) == -1))
    limit = 0.0 if contamination == "auto" else float(contamination)
    assert share <= limit + 1e-9


@pytest.mark.parametrize(
    "threshold, kind", [("abc", TypeError), (None, None), ([0.5], TypeError),
                        (True, TypeError), (np.nan, ValueError), (np.float32(0.5), None)],
)
def test_segment_threshold_is_checked(fitted, threshold, kind):
    _, det, X = fitted
    if kind is None:
        masks = det.segment(X[:2], threshold=threshold)
        assert masks.dtype == bool and masks.shape == (2, SIZE, SIZE)
    else:
        with pytest.raises(kind, match="threshold"):
            det.segment(X[:2], threshold=threshold)


@pytest.mark.parametrize("scales", [True, False])
def test_dfr_boolean_scales_are_refused(scales):
    with pytest.raises(TypeError, match="scales"):
        make_detector("dfr", scales=scales).fit(_images(4))


def _numeric_parameters(cls):
    """Names of ``cls``'s parameters constrained by a numeric ``Interval``
    and not also allowed to be a boolean."""
    return sorted(
        name for name, constraints in cls._parameter_constraints.items()
        if "boolean" not in constraints
        and any(isinstance(c, Interval) for c in constraints)
    )


def _numeric_parameter_cases():
    cases = []
    for name in detector_names():
        for param in _numeric_parameters(get_detector(name)):
            cases.append(pytest.param(name, param, id=f"{name}-{param}"))
    for param in _numeric_parameters(TiledDetector):
        cases.append(pytest.param("tiled", param, id=f"tiled-{param}"))
    return cases


@pytest.mark.parametrize("name, param", _numeric_parameter_cases())
@pytest.mark.parametrize("value", [True, False])
def test_booleans_are_refused_for_numeric_parameters(name, param, value):
    # bool is an Integral: scikit-learn's Interval alone would read
    # max_epochs=True as 1 epoch and lr=True as a rate of 1.
    if name == "tiled":
        det = TiledDetector(make_detector("dfr"), tile_size=16)
    else:
        det = make_detector(name)
    det.set_params(**{param: value})
    with pytest.raises(ValueError, match=rf"'{param}' parameter .*(bool {value}|Got {value})"):
        det.fit(_images(4))
    _assert_unfitted(det)


def test_tiled_detector_refuses_a_detector_class():
    det = TiledDetector(get_detector("dfr"), tile_size=16)
    with pytest.raises(TypeError, match=r"detector must be a detector instance, got the "
                                        r"class DFRDetector; pass DFRDetector\(...\)"):
        det.fit(_images(4))
    _assert_unfitted(det)


def test_numeric_parameter_cases_cover_the_counts_and_rates():
    cases = {tuple(c.values) for c in _numeric_parameter_cases()}
    for name in detector_names():
        assert {(name, "max_epochs"), (name, "batch_size"), (name, "lr")} <= cases
    assert ("dfr", "vector_batch_size") in cases and ("tiled", "tile_size") in cases


@pytest.mark.parametrize("n, fraction", [(1, 0.5), (4, 0.9), (2, 0.6)])
def test_validation_fraction_leaving_no_training_image(fitted, n, fraction):
    name, _, X = fitted
    det = make_detector(name, validation_fraction=fraction)
    with pytest.raises(ValueError, match=r"validation_fraction=.* leaves none to train on"):
        det.fit(X[:n])
    _assert_unfitted(det)


def test_early_stopping_names_itself_when_it_leaves_no_training_image():
    det = make_detector("dfr", early_stopping=True)
    with pytest.raises(ValueError, match=r"early_stopping=True \(validation_fraction=None: "
                                         r"a share of 0.1\) holds out 1 of the 1 training "
                                         r"image\(s\).*turn early_stopping off"):
        det.fit(_images(1))
    _assert_unfitted(det)


def test_dfr_vector_batches_split_regional_vectors_not_images():
    # One 32 px image has 8 x 8 regional vectors: a tenth of them held out
    # leaves 57 to train on.
    det = make_detector("dfr", vector_batch_size=16, early_stopping=True,
                        max_epochs=2).fit(_images(1))
    assert "valid_loss" in det.net_.history[-1]
    with pytest.raises(ValueError, match=r"holds out 64 of the 64 regional vectors"):
        make_detector("dfr", vector_batch_size=16, validation_fraction=0.999).fit(_images(1))


@pytest.mark.parametrize("image_size", [MAX_IMAGE_SIZE + 8, 100_000])
def test_absurd_image_size_is_refused_before_training(fitted, image_size):
    name, _, X = fitted
    det = make_detector(name, image_size=image_size)
    with pytest.raises(ValueError, match=r"image_size=\d+ is too large: .* GiB"):
        det.fit(X)
    _assert_unfitted(det)


def test_largest_image_size_passes_the_memory_check():
    assert _check_working_size(MAX_IMAGE_SIZE) is None
    assert _check_working_size(256) is None


@pytest.mark.parametrize(
    "X, phrase",
    [
        (np.full((2, 8, 8), 1.0001), "a value 1.0001 above the upper bound 1.0"),
        (np.full((2, 8, 8), -0.0001), "a value -0.0001 below the lower bound 0.0"),
        (np.full((2, 8, 8), 1.0000001, np.float32), "a value 1.0000001 above"),
        (np.array([[[-0.5, 2.5]]] * 2), "a value -0.5 below .* and a value 2.5 above"),
        (np.full((2, 8, 8), 256, np.uint16), r"a value 256 above the upper bound 255 .*value_range=.*\(0, 65535\)"),
        (np.full((2, 8, 8), -1, np.int16), "a value -1 below the lower bound 0"),
        (torch.full((2, 1, 8, 8), 1.5, dtype=torch.bfloat16), "a value 1.5 above"),
    ],
)
def test_range_errors_state_the_offending_value_and_bound(X, phrase):
    with pytest.raises(ValueError, match=phrase):
        check_images(X)


def test_value_range_error_states_the_value():
    with pytest.raises(ValueError, match=r"a value 4096 above the upper bound 4095.0 of value_range"):
        check_images(np.full((1, 4, 4), 4096, np.uint16), value_range=(0, 4095))


@pytest.mark.parametrize(
    "offset, dtype", [(1000.0, np.float64), (10**9, np.int64), (-(2**40), np.int64)]
)
def test_value_range_offset_keeps_every_level(offset, dtype):
    # 256 levels spanning a range far from zero: each must stay distinct and
    # land where it would with the offset removed (float32 subtraction of the
    # offset kept a handful of levels).
    levels = np.arange(256, dtype=np.float64).reshape(1, 16, 16)
    if np.issubdtype(dtype, np.integer):
        raw, width = levels.astype(dtype) + dtype(offset), 255
        expected = levels / 255
    else:
        raw, width = offset + levels * 1e-6, 255e-6
        expected = levels / 255
    images = check_images(raw, value_range=(offset, offset + width))
    t = images.tensor()[0, 0].numpy()
    assert np.unique(t).size == 256
    np.testing.assert_allclose(t, expected[0], atol=1e-6)


def test_value_range_wider_than_the_floats_is_refused():
    with pytest.raises(ValueError, match="value_range=.* wider than the largest float"):
        check_images(np.zeros((1, 4, 4)), value_range=(-1e308, 1e308))


def test_long_double_images_score_like_float64(fitted):
    name, det, X = fitted
    if not hasattr(np, "float128"):  # pragma: no cover - platforms without it
        pytest.skip("no long double wider than float64 here")
    X64 = X[:2] / 255.0
    np.testing.assert_array_equal(det.score_samples(X64.astype(np.longdouble)),
                                  det.score_samples(X64))


def test_sparse_tensors_are_refused_by_name(fitted):
    name, det, X = fitted
    dense = torch.from_numpy(X[:2, None] / 255.0).float()
    with pytest.raises(TypeError, match="Sparse input is not supported: X is a sparse"):
        det.score_samples(dense.to_sparse())
    with pytest.raises(TypeError, match=r"X\[0\] is a sparse tensor"):
        det.score_samples([dense[0, 0].to_sparse(), dense[1, 0]])


def test_a_list_of_channels_first_tensors_says_to_stack_them(fitted):
    name, det, X = fitted
    items = [torch.from_numpy(x[None] / 255.0).float() for x in X[:2]]  # (1, H, W) each
    with pytest.raises(ValueError, match=r"X\[0\] is a 3-D torch tensor .*torch\.stack\(X\)"):
        det.score_samples(items)
    # (H, W) tensors are unambiguous and read as images.
    np.testing.assert_allclose(det.score_samples([t[0] for t in items]),
                               det.score_samples(torch.stack(items)), rtol=1e-6)


@pytest.mark.parametrize("value", [200, 4000, 65535])
def test_16_bit_images_scale_by_bit_depth_in_grey_and_rgb(tmp_path, value):
    a = np.full((8, 8), value, np.uint16)
    a[0, 0] = 0
    Image.fromarray(a).save(tmp_path / "a.png")
    grey = read_images([tmp_path / "a.png"], color="gray")
    rgb = read_images([tmp_path / "a.png"], color="rgb")
    expected = int(np.rint(value / 65535 * 255))
    assert grey[0, 1, 1] == expected and grey[0, 0, 0] == 0
    np.testing.assert_array_equal(rgb[0], np.repeat(grey[0][..., None], 3, axis=-1))


# --------------------------------------------------- streaming threshold


@pytest.mark.parametrize("n", [1, 2, 3, 10, 99, 1000, 4099])
@pytest.mark.parametrize("ties", [False, True])
def test_streaming_fpr_threshold_equals_numpy_higher_quantile(n, ties):
    rng = np.random.default_rng(n)
    values = rng.standard_normal(n).astype(np.float32)
    if ties:
        values = np.round(values, 1)
    for fpr in [0.0, 1e-4, 0.001, 0.01, 0.05, 0.1, 0.3, 0.5, 0.99]:
        stream = StreamingFPRThreshold(n, fpr)
        cuts = np.sort(rng.integers(0, n + 1, size=3))
        for part in np.split(values, cuts):
            stream.add(part)
        expected = values.max() if fpr == 0 else np.quantile(values, 1 - fpr, method="higher")
        assert stream.threshold() == float(expected), (n, fpr)


def test_threshold_rank_is_numpys_higher_quantile_for_every_small_case():
    from skanomaly.thresholds import threshold_rank

    fprs = [0.0, 1e-3, 0.01, 0.05, 0.1, 0.2, 0.25, 1 / 3, 0.5, 0.9]
    for n in range(1, 200):
        ranks = np.arange(n, dtype=np.float64)
        for fpr in fprs:
            expected = n - 1 if fpr == 0 else np.quantile(ranks, 1 - fpr, method="higher")
            assert threshold_rank(n, fpr) == int(expected), (n, fpr)


@pytest.mark.parametrize(
    "maps, fpr",
    [
        (np.random.default_rng(0).random((6, 16, 16)).astype(np.float32), 0.2),  # was 1 rank off
        (np.random.default_rng(1).random(21), 0.1),
        (np.random.default_rng(2).random(13), 1 / 3),
        (np.array([0.1, 0.2, 0.3, 0.4]), 0.5),  # float64 maps stay float64
    ],
)
def test_streaming_and_in_memory_thresholds_agree_exactly(maps, fpr):
    from skanomaly.thresholds import fpr_threshold

    stream = StreamingFPRThreshold(maps.size, fpr)
    for part in np.array_split(maps.ravel(), 3):
        stream.add(part)
    expected = np.quantile(maps, 1 - fpr, method="higher")
    assert fpr_threshold(maps, fpr) == stream.threshold() == float(expected)


@pytest.mark.parametrize(
    "fpr, kind", [(1.5, ValueError), (-0.5, ValueError), (1.0, ValueError),
                  (float("nan"), ValueError), ("0.1", TypeError), (True, ValueError)]
)
def test_threshold_fpr_is_checked(fpr, kind):
    from skanomaly.thresholds import fpr_threshold

    with pytest.raises(kind, match="fpr"):
        fpr_threshold(np.zeros(4), fpr)
    with pytest.raises(kind, match="fpr"):
        StreamingFPRThreshold(4, fpr)


def test_threshold_of_no_values_is_refused():
    from skanomaly.thresholds import fpr_threshold

    with pytest.raises(ValueError, match="at least one pixel value"):
        fpr_threshold(np.zeros(0), 0.1)


# ------------------------------------------------------ pretrained weights


def _offline(*args, **kwargs):
    raise urllib.error.URLError("[Errno -2] Name or service not known")


@pytest.fixture
def no_network(monkeypatch):
    import torchvision.models._api as api

    monkeypatch.setattr(api, "load_state_dict_from_url", _offline)


@pytest.mark.parametrize("name", ["vgg19", "resnet18"])
def test_offline_default_weights_say_what_to_do(no_network, name):
    with pytest.raises(OSError, match=r"Could not download .* weights=<path.*efficientnet_lite0"):
        backbones.load_backbone(name)


@pytest.mark.parametrize(
    "name, params", [("dfr", dict(weights="IMAGENET1K_V1")), ("igd", dict(teacher="resnet18"))]
)
def test_offline_detector_defaults_say_what_to_do(no_network, name, params):
    det = make_detector(name, **params)
    with pytest.raises(OSError, match=r"teacher=None .*weights=None"):
        det.fit(_images(4))
    _assert_unfitted(det)


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/skanomaly-pwned",))


def _weights_files(tmp_path):
    good = tmp_path / "good.pth"
    vgg = torch.nn.Conv2d(3, 4, 3)
    torch.save(vgg.state_dict(), good)
    files = {
        "garbage": (b"not a checkpoint at all" * 10, "not a readable PyTorch state dict"),
        "truncated": (good.read_bytes()[: good.stat().st_size // 2], "not a readable"),
        "malicious": (None, "not a readable PyTorch state dict"),
        "tensor": (None, "holds Tensor, not a state dict"),
        "wrong_architecture": (None, "do not fit the vgg19 architecture"),
    }
    paths = {}
    for key, (data, phrase) in files.items():
        path = tmp_path / f"{key}.pth"
        if key == "malicious":
            torch.save({"weight": _Payload()}, path)
        elif key == "tensor":
            torch.save(torch.zeros(3), path)
        elif key == "wrong_architecture":
            torch.save(vgg.state_dict(), path)
        else:
            path.write_bytes(data)
        paths[key] = (path, phrase)
    return paths


@pytest.mark.parametrize(
    "key", ["garbage", "truncated", "malicious", "tensor", "wrong_architecture"]
)
def test_bad_weight_files_are_refused_without_running_them(tmp_path, key):
    if os.path.exists("/tmp/skanomaly-pwned"):
        os.remove("/tmp/skanomaly-pwned")
    path, phrase = _weights_files(tmp_path)[key]
    with pytest.raises(ValueError, match=phrase):
        backbones.load_backbone("vgg19", weights=path)
    assert not os.path.exists("/tmp/skanomaly-pwned")


# ------------------------------------------------------------------- CLI

TINY_DFR = [
    "--param", "weights=None", "--param", "scales=4", "--param", "image_size=32",
    "--param", "max_epochs=1", "--param", "random_state=0", "--param", "batch_size=4",
]


def _write_pngs(folder, names, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(_images(1, seed=seed + i)[0]).save(folder / name)
    return folder


@pytest.fixture(scope="module")
def cli_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile_cli")
    _write_pngs(root / "good", [f"g{i}.png" for i in range(6)])
    model = root / "model.skan"
    assert main(["fit", str(root / "good"), "-o", str(model), "-q", *TINY_DFR]) == 0
    return root, model


def _one_error_line(capsys, phrase):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("skanomaly: error: "), err
    assert phrase in err[0], err[0]
    return err[0]


def _no_temp_files(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


@pytest.fixture
def training_forbidden(monkeypatch):
    """Make any training fail loudly: errors must come before it."""
    from skanomaly.base import BaseDetector

    def fail(self, X, y=None):
        raise AssertionError("training started")

    monkeypatch.setattr(BaseDetector, "fit", fail)


def test_cli_fit_interrupted_exits_130_and_writes_nothing(cli_root, tmp_path, monkeypatch,
                                                          capsys):
    root, model = cli_root
    out = tmp_path / "model.skan"
    out.write_bytes(b"previous model")

    def interrupt(self, net, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training.FiniteLossGuard, "on_batch_end", interrupt)
    assert main(["fit", str(root / "good"), "-o", str(out), "-q", *TINY_DFR]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert out.read_bytes() == b"previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.skan"]


def test_cli_score_refuses_to_overwrite_the_model(cli_root, capsys):
    root, model = cli_root
    before = model.read_bytes()
    assert main(["score", str(model), str(root / "good"), "-o", str(model), "-q"]) == 2
    _one_error_line(capsys, "is one of the inputs")
    assert model.read_bytes() == before


def test_cli_score_refuses_to_overwrite_an_image(cli_root, capsys):
    root, model = cli_root
    image = root / "good" / "g0.png"
    before = image.read_bytes()
    assert main(["score", str(model), str(root / "good"), "-o", str(image), "-q"]) == 2
    _one_error_line(capsys, "inputs are never overwritten")
    assert image.read_bytes() == before


def test_cli_fit_refuses_to_overwrite_an_image_before_training(cli_root, capsys,
                                                              training_forbidden):
    root, _ = cli_root
    image = root / "good" / "g1.png"
    before = image.read_bytes()
    assert main(["fit", str(root / "good"), "-o", str(image), "-q", *TINY_DFR]) == 2
    _one_error_line(capsys, "is one of the inputs")
    assert image.read_bytes() == before


@pytest.mark.parametrize("where", ["missing_folder", "under_a_file", "a_folder"])
def test_cli_fit_checks_the_output_before_training(cli_root, tmp_path, capsys, where,
                                                  training_forbidden):
    root, _ = cli_root
    out = {
        "missing_folder": tmp_path / "nope" / "model.skan",
        "under_a_file": root / "good" / "g0.png" / "model.skan",
        "a_folder": tmp_path,
    }[where]
    assert main(["fit", str(root / "good"), "-o", str(out), "-q", *TINY_DFR]) == 2
    _one_error_line(capsys, "-o")


def test_cli_heatmap_refuses_results_colliding_with_inputs(cli_root, tmp_path, capsys):
    _, model = cli_root
    folder = _write_pngs(tmp_path / "imgs", ["x.png", "x_heatmap.png"])
    before = (folder / "x_heatmap.png").read_bytes()
    assert main(["heatmap", str(model), str(folder), "-o", str(folder), "-q"]) == 2
    _one_error_line(capsys, "would overwrite the input")
    assert (folder / "x_heatmap.png").read_bytes() == before


def test_cli_heatmap_keeps_every_result_of_equal_stems(cli_root, tmp_path, capsys):
    _, model = cli_root
    a = _write_pngs(tmp_path / "a", ["x.png"], seed=1)
    b = _write_pngs(tmp_path / "b", ["x.png"], seed=2)
    Image.fromarray(_images(1, seed=3)[0]).save(b / "x.jpg")
    out = tmp_path / "maps"
    args = ["heatmap", str(model), str(a / "x.png"), str(b / "x.png"), str(b / "x.jpg"),
            "-o", str(out)]
    assert main(args) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["x_2_heatmap.png", "x_3_heatmap.png", "x_heatmap.png"]
    first = {n: (out / n).read_bytes() for n in names}
    assert len(set(first.values())) == 3  # three different images, three results
    err = capsys.readouterr().err
    assert "x_2_heatmap.png" in err and "x_3_heatmap.png" in err
    assert main(args + ["-q"]) == 0  # deterministic: same names, same files
    assert sorted(p.name for p in out.iterdir()) == names


def test_cli_score_writes_atomically(cli_root, tmp_path, monkeypatch, capsys):
    import skanomaly.cli as cli

    root, model = cli_root
    out = tmp_path / "scores.csv"
    out.write_text("old scores\n")
    calls = []

    def broken(text):
        calls.append(text)
        if len(calls) == 3:
            raise OSError("disk full")
        return str(text)

    monkeypatch.setattr(cli, "_csv_text", broken)
    assert main(["score", str(model), str(root / "good"), "-o", str(out), "-q"]) == 2
    _one_error_line(capsys, "disk full")
    assert out.read_text() == "old scores\n"
    assert _no_temp_files(tmp_path)


def test_cli_outputs_get_normal_permissions(cli_root, tmp_path):
    root, model = cli_root
    out = tmp_path / "scores.csv"
    assert main(["score", str(model), str(root / "good"), "-o", str(out), "-q"]) == 0
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask
    assert _no_temp_files(tmp_path)


@pytest.mark.parametrize("name", ["=cmd.png", "+1.png", "-2.png", "@sum.png", "plain.png"])
def test_cli_score_csv_is_safe_for_spreadsheets(cli_root, tmp_path, monkeypatch, name):
    _, model = cli_root
    _write_pngs(tmp_path, [name])
    monkeypatch.chdir(tmp_path)
    assert main(["score", str(model), "-o", "scores.csv", "-q", "--", name]) == 0
    with open(tmp_path / "scores.csv", newline="") as fh:
        row = list(csv.DictReader(fh))[0]
    assert row["path"] == (name if name == "plain.png" else "'" + name)
    float(row["score"])  # numbers stay numbers
    assert not row["score"].startswith("'")


def test_cli_training_divergence_is_one_line(tmp_path, capsys):
    folder = _write_pngs(tmp_path / "good", [f"g{i}.png" for i in range(16)])
    args = ["fit", str(folder), "-o", str(tmp_path / "m.skan"), "-q", "-d", "inpainting",
            "--param", "width=4", "--param", "image_size=32", "--param", "lr=1000.0",
            "--param", "max_epochs=2", "--param", "random_state=0"]
    assert main(args) == 2
    _one_error_line(capsys, "diverged in epoch")
    assert not (tmp_path / "m.skan").exists()


@pytest.mark.parametrize("side", [12, 32])  # 144 px: warning; 1024 px: error
def test_cli_decompression_bombs_are_one_line(tmp_path, monkeypatch, capsys, side,
                                              training_forbidden):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("L", (side, side)).save(folder / "bomb.png")
    assert main(["fit", str(folder), "-o", str(tmp_path / "m.skan"), "-q", *TINY_DFR]) == 2
    _one_error_line(capsys, "decompression bomb")


@pytest.mark.parametrize(
    "key", ["garbage", "truncated", "malicious", "tensor", "wrong_architecture"]
)
def test_cli_bad_weight_files_are_one_line(cli_root, tmp_path, capsys, key):
    root, _ = cli_root
    path, phrase = _weights_files(tmp_path)[key]
    args = ["fit", str(root / "good"), "-o", str(tmp_path / "m.skan"), "-q",
            "--param", f"weights={str(path)!r}", "--param", "scales=4",
            "--param", "image_size=32", "--param", "max_epochs=1"]
    assert main(args) == 2
    _one_error_line(capsys, phrase)


@pytest.mark.parametrize(
    "command, flag",
    [("score", "--batch"), ("heatmap", "--batch"), ("heatmap", "--dpi"),
     ("score", "--threads")],
)
@pytest.mark.parametrize("value", ["0", "-3"])
def test_cli_non_positive_options_are_one_line(cli_root, tmp_path, capsys, command, flag,
                                              value):
    root, model = cli_root
    args = [command, str(model), str(root / "good"), "-o", str(tmp_path / "out"), flag,
            value, "-q"]
    assert main(args) == 2
    _one_error_line(capsys, f"{flag} must be at least 1, got {value}")


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9])
def test_cli_truncated_model_file_is_one_line(cli_root, tmp_path, capsys, keep):
    root, model = cli_root
    data = model.read_bytes()
    bad = tmp_path / "truncated.skan"
    bad.write_bytes(data[: int(len(data) * keep)])
    assert main(["score", str(bad), str(root / "good"), "-q"]) == 2
    _one_error_line(capsys, str(bad))


def test_cli_bugs_keep_their_traceback(cli_root, monkeypatch):
    import skanomaly.cli as cli

    root, model = cli_root

    def bug(*args, **kwargs):
        raise KeyError("a bug, not a user error")

    monkeypatch.setattr(cli, "_collect_paths", bug)
    with pytest.raises(KeyError):
        main(["score", str(model), str(root / "good"), "-q"])
