"""Listing and reading image files, shared by the folder loaders and the CLI."""

import os
from numbers import Integral
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "list_image_files", "read_images", "read_masks"]

#: File name extensions (lower case) read as images by the folder loaders.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_image_files(folder):
    """The image files of a folder, sorted by path.

    Parameters
    ----------
    folder : str or path-like
        A folder; sub-folders are not read.

    Returns
    -------
    paths : list of pathlib.Path
        Its files whose extension (any case) is in :data:`IMAGE_EXTENSIONS`.

    Raises
    ------
    FileNotFoundError
        When ``folder`` does not exist or is not a folder.
    """
    folder = Path(os.fspath(folder))
    if not folder.is_dir():
        raise FileNotFoundError(f"Image folder {folder} does not exist or is not a folder.")
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _normalise_size(image_size):
    if image_size is None:
        return None
    if isinstance(image_size, Integral) and not isinstance(image_size, bool):
        size = (int(image_size), int(image_size))
    else:
        try:
            size = tuple(int(v) for v in image_size)
        except TypeError:
            raise TypeError(
                f"image_size must be None, an int or a pair (H, W); got {image_size!r}."
            ) from None
        if len(size) != 2:
            raise ValueError(f"image_size must be an int or a pair (H, W); got {image_size!r}.")
    if min(size) < 1:
        raise ValueError(f"image_size must be positive; got {image_size!r}.")
    return size


def _open_image(path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"Cannot read image {path}: {exc}") from exc


def _image_mode(images):
    """'L' if every image is grey, else 'RGB'."""
    grey = all(im.mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F", "LA") for im in images)
    return "L" if grey else "RGB"


def _to_array(im, mode, size):
    from PIL import Image

    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # Integer images are scaled by their bit depth (16-bit: 0-65535), not by
        # their content, the same for grey and RGB output ("RGB" is made from
        # the scaled grey image: Pillow's own conversion would clip at 255).
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode != "F" or arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8))
    im = im.convert(mode)
    if size is not None and im.size != (size[1], size[0]):
        im = im.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def read_images(paths, *, image_size=None, color="auto"):
    """Read image files into one uint8 array.

    Parameters
    ----------
    paths : sequence of str or path-like
        Image files (any format Pillow reads).
    image_size : int, (int, int) or None, default=None
        Resize every image to ``(image_size, image_size)`` or ``(H, W)``
        (bilinear, anti-aliased); ``None`` keeps the files' size, which must
        then agree.
    color : {"auto", "rgb", "gray"}, default="auto"
        ``"auto"`` gives grey images ``(n, H, W)`` when every file is grey and
        RGB images ``(n, H, W, 3)`` otherwise.

    Returns
    -------
    images : ndarray of shape (n, H, W) or (n, H, W, 3), dtype=uint8

    Raises
    ------
    FileNotFoundError
        When a file does not exist.
    ValueError
        When a file cannot be read as an image, no paths are given, or sizes
        differ with ``image_size=None``.
    """
    if color not in ("auto", "rgb", "gray"):
        raise ValueError(f"color must be 'auto', 'rgb' or 'gray'; got {color!r}.")
    paths = [Path(os.fspath(p)) for p in paths]
    if not paths:
        raise ValueError("No image files to read.")
    size = _normalise_size(image_size)
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"Image file {p} does not exist.")
    opened = [_open_image(p) for p in paths]
    mode = {"rgb": "RGB", "gray": "L"}.get(color) or _image_mode(opened)
    arrays = [_to_array(im, mode, size) for im in opened]
    shapes = {}
    for p, a in zip(paths, arrays):
        shapes.setdefault(a.shape[:2], p)
    if len(shapes) > 1:
        listed = ", ".join(f"{p.name}: {s[0]}x{s[1]}" for s, p in shapes.items())
        raise ValueError(
            f"Images have different sizes ({listed}); pass image_size to resize them."
        )
    return np.stack(arrays)


def read_masks(paths, shape):
    """Read binary masks (grey level above 127), resized to ``shape`` (nearest).

    Parameters
    ----------
    paths : sequence of str or path-like
        Mask image files.
    shape : (int, int)
        ``(H, W)`` of the masks returned.

    Returns
    -------
    masks : ndarray of shape (len(paths), H, W), dtype=bool
    """
    from PIL import Image

    masks = []
    for p in paths:
        im = _open_image(p).convert("L")
        if im.size != (shape[1], shape[0]):
            im = im.resize((shape[1], shape[0]), Image.NEAREST)
        masks.append(np.asarray(im) > 127)
    return np.stack(masks) if masks else np.zeros((0,) + tuple(shape), dtype=bool)
