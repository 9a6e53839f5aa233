"""Data sets and synthetic defects for visual anomaly detection.

This package gathers what the examples, tests and benchmarks need to obtain
images:

- :func:`make_defects` plants realistic synthetic defects (scratches, stains,
  foreign patches, smears) into normal images and returns exact
  ground-truth masks;
- :func:`make_texture_defects` builds a small train/test set from a texture
  shipped with scikit-image, with defects planted in part of the test set;
- :func:`one_class_split` implements the one-class protocol used on
  classification data sets (one class is normal, the others are anomalies);
- :func:`load_fashion_mnist` reads Fashion-MNIST's IDX files;
- :func:`load_mvtec_ad` reads one category of MVTec AD;
- :func:`load_image_folder` reads a user's own folders of images, and
  :func:`read_images` a list of image files.

The modules: ``synthetic`` (with the defect painters in ``_painters``),
``fashion_mnist`` (with the one-class split), ``folders`` (MVTec AD and
image folders) and ``_io`` (listing and reading image files).  Every public
name is importable from ``skanomaly.datasets`` itself.

Only NumPy, SciPy and Pillow are needed at run time; scikit-image is imported
lazily by :func:`make_texture_defects` alone.
"""

from ._io import IMAGE_EXTENSIONS, read_images
from .fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist, one_class_split
from .folders import load_image_folder, load_mvtec_ad
from .lazy import ImageFolderSequence
from .synthetic import DEFECT_KINDS, make_defects, make_texture_defects

# The former private names, still imported by skanomaly.report.

__all__ = [
    "DEFECT_KINDS",
    "FASHION_MNIST_CLASSES",
    "IMAGE_EXTENSIONS",
    "ImageFolderSequence",
    "load_fashion_mnist",
    "load_image_folder",
    "load_mvtec_ad",
    "make_defects",
    "make_texture_defects",
    "one_class_split",
    "read_images",
]
