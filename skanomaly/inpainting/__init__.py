"""Self-supervised inpainting autoencoder (Bauer 2022)."""

from ._estimator import InpaintingAE

__all__ = ["InpaintingAE"]
