"""SCADN: semantic context based anomaly detection (Yan et al., AAAI 2021)."""

from ._estimator import SCADNDetector

__all__ = ["SCADNDetector"]
