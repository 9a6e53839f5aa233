"""skanomaly: scikit-learn-compatible deep unsupervised visual anomaly detectors.

Every detector trains on normal images only; ``score_samples`` is higher for
more normal images, ``transform`` returns pixel anomaly heatmaps (higher is
more anomalous).  See ``CONTRACT`` in the user guide.
"""

from importlib import import_module

from .registry import REGISTRY

__version__ = "0.1.0"

# Class name -> module, read from the one registry of detectors.
_LAZY = {cls_name: module for module, cls_name in REGISTRY.values()}
_LAZY["TrainingDivergedError"] = "skanomaly._training"
_LAZY["LongFitWarning"] = "skanomaly._training"
_LAZY["load"] = "skanomaly.persistence"
_LAZY["TiledDetector"] = "skanomaly.tiling"

__all__ = [*_LAZY, "__version__"]


def __getattr__(name):
    # Detectors import torch models lazily so `import skanomaly` stays light.
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'skanomaly' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
