"""Self-supervised inpainting autoencoder (Bauer 2022)."""

from ._estimator import InpaintingAE
from .postprocess import largest_component_level, remove_small_components

__all__ = ["InpaintingAE", "largest_component_level", "remove_small_components"]
