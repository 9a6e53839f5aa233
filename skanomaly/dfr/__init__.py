"""DFR: deep feature reconstruction (``dfr.md``)."""

from ._estimator import DFRDetector

__all__ = ["DFRDetector"]
