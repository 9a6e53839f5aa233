"""skanomaly: scikit-learn-compatible deep unsupervised visual anomaly detectors.

Every detector trains on normal images only; ``score_samples`` is higher for
more normal images, ``transform`` returns pixel anomaly heatmaps (higher is
more anomalous).  See ``CONTRACT`` in the user guide.
"""

from importlib import import_module

__version__ = "0.1.0"

_DETECTORS = {
    "DFRDetector": ".dfr",
    "InpaintingAE": ".inpainting",
    "SCADNDetector": ".scadn",
    "IGDDetector": ".igd",
}

__all__ = [*_DETECTORS, "__version__"]


def __getattr__(name):
    # Detectors import torch models lazily so `import skanomaly` stays light.
    if name in _DETECTORS:
        value = getattr(import_module(_DETECTORS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'skanomaly' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
