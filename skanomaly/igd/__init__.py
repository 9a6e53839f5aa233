"""IGD: multi-scale interpolated Gaussian descriptors (Chen et al., 2022)."""

from ._estimator import IGDDetector

__all__ = ["IGDDetector"]
