"""The one registry of skanomaly's detectors.

Every place that lists detectors (the package namespace, the CLI's
``--detector``, the benchmarks, the test table of small parameters, the safe
model format) reads :data:`REGISTRY`.  Adding a detector is one line here.
Classes are imported on first use, so ``import skanomaly`` stays light; an
import error is never swallowed.
"""

from __future__ import annotations

from importlib import import_module

__all__ = ["REGISTRY", "detector_names", "get_detector", "registry_name"]

#: Registry name -> (module, class name).
REGISTRY = {
    "dfr": ("skanomaly.dfr", "DFRDetector"),
    "inpainting": ("skanomaly.inpainting", "InpaintingAE"),
    "scadn": ("skanomaly.scadn", "SCADNDetector"),
    "igd": ("skanomaly.igd", "IGDDetector"),
}


def detector_names():
    """Registry names of all detectors, in registration order.

    Returns
    -------
    names : list of str
    """
    return list(REGISTRY)


def get_detector(name):
    """The detector class registered as ``name``.

    Parameters
    ----------
    name : str
        A registry name such as ``"dfr"``.

    Returns
    -------
    cls : type
        The detector class.

    Raises
    ------
    ValueError
        ``name`` is not registered.
    """
    try:
        module, cls_name = REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown detector {name!r}; registered detectors are {detector_names()}."
        ) from None
    return getattr(import_module(module), cls_name)


def registry_name(detector):
    """The registry name of a detector instance or class.

    Parameters
    ----------
    detector : BaseDetector instance or class

    Returns
    -------
    name : str

    Raises
    ------
    ValueError
        The class is not a registered detector (a subclass is not its parent).
    """
    cls = detector if isinstance(detector, type) else type(detector)
    for name, (module, cls_name) in REGISTRY.items():
        if cls.__module__.startswith(module) and cls.__name__ == cls_name:
            return name
    raise ValueError(f"{cls.__qualname__} is not a registered skanomaly detector.")
