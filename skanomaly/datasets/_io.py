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
        Its files whose extension (any case) is in :data:`IMAGE_EXTENSIONS`,
        except hidden files: names starting with ``"."`` (such as the
        ``._name.png`` files macOS writes on foreign disks) are skipped.

    Raises
    ------
    FileNotFoundError
        When ``folder`` does not exist or is not a folder.
    """
    folder = Path(os.fspath(folder))
    if not folder.is_dir():
        raise FileNotFoundError(f"Image folder {folder} does not exist or is not a folder.")
    return sorted(
        p
        for p in folder.iterdir()
        if not _is_hidden(p) and p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _is_hidden(path):
    """Whether a file or folder is hidden: its name starts with a dot."""
    return path.name.startswith(".")


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


def _unreadable(path, exc):
    """The ValueError for an image file Pillow cannot (or must not) read.

    Parameters
    ----------
    path : path-like
        The file.
    exc : Exception
        Pillow's error, or its decompression-bomb warning raised as an error.

    Returns
    -------
    error : ValueError
        Naming the file, and for an image over Pillow's size limit, the limit
        and what to do.
    """
    from PIL import Image

    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ValueError(
            f"Cannot read image {path}: refusing an image that large (possible "
            f"decompression bomb): {exc} Shrink the image first, or raise "
            f"PIL.Image.MAX_IMAGE_PIXELS (now {Image.MAX_IMAGE_PIXELS}) if you trust it."
        )
    return ValueError(f"Cannot read image {path}: {exc}")


#: Pillow modes of grey images.
GREY_MODES = ("1", "L", "I", "I;16", "I;16B", "I;16L", "F", "LA")


def _pillow_errors():
    """The errors of Pillow reading a file it cannot (or must not) read."""
    from PIL import Image, UnidentifiedImageError

    return (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning)


def _open_image(path, header_only=False):
    """Read an image file with Pillow (``header_only``: just its mode); a
    ValueError naming it when it cannot."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if header_only:
                return im.mode
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise
    except _pillow_errors() as exc:
        raise _unreadable(path, exc) from exc


def _image_mode(images):
    """'L' if every image is grey, else 'RGB'."""
    return "L" if all(im.mode in GREY_MODES for im in images) else "RGB"


def _to_array(im, mode, size, path=None):
    """A Pillow image as a uint8 array of ``mode`` ("L" or "RGB") and ``size``.

    Integer images deeper than 8 bits are scaled by their bit depth (16-bit:
    0-65535 to 0-255), not by their content, the same for grey and RGB
    output ("RGB" is made from the scaled grey image: Pillow's own conversion
    would clip at 255).  Floating-point images (32-bit float TIFFs) must hold
    values in [0, 1], read as 0-255; any other range is refused rather than
    guessed.  ``path`` names the file in that error.
    """
    from PIL import Image

    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        finite = np.isfinite(arr).all()
        if not finite or arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
            found = (
                "values that are not finite (NaN or infinity)"
                if not finite
                else f"values from {arr.min():g} to {arr.max():g}"
            )
            raise ValueError(
                f"Cannot read image {path if path is not None else '(unnamed)'}: it is a "
                f"floating-point image with {found}; floating-point images must hold "
                f"values in [0, 1]. Convert it to 8- or 16-bit integers, or scale it "
                f"to [0, 1], first."
            )
        im = Image.fromarray(np.rint(arr * 255.0).astype(np.uint8))
    elif im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(np.rint(arr / 65535.0 * 255.0), 0, 255).astype(np.uint8))
    im = im.convert(mode)
    if size is not None and im.size != (size[1], size[0]):
        im = im.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def read_images(paths, *, image_size=None, color="auto"):
    """Read image files into one uint8 array.

    Parameters
    ----------
    paths : sequence of str or path-like
        Image files (any format Pillow reads).  8-bit images are read as they
        are, 16-bit ones scaled by their bit depth (0-65535 to 0-255), and
        floating-point ones (32-bit float TIFFs) must hold values in [0, 1],
        read as 0-255.
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
        When a file cannot be read as an image, is larger than Pillow's
        ``PIL.Image.MAX_IMAGE_PIXELS`` (a possible decompression bomb), is a
        floating-point image with values outside [0, 1], no paths are given,
        or sizes differ with ``image_size=None``.
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
    arrays = [_to_array(im, mode, size, p) for im, p in zip(opened, paths)]
    shapes = {}
    for p, a in zip(paths, arrays):
        shapes.setdefault(a.shape[:2], p)
    if len(shapes) > 1:
        listed = ", ".join(f"{p.name}: {s[0]}x{s[1]}" for s, p in shapes.items())
        raise ValueError(
            f"Images have different sizes ({listed}); pass image_size to resize them."
        )
    return np.stack(arrays)


def read_masks(paths, shape, *, resize=True):
    """Read binary masks: a pixel that is not black is a defect.

    A pixel is a defect when any of its colour channels is non-zero: masks
    saved as 0/1 (NumPy, labelling tools) or 0/255 (MVTec AD), grey, RGB
    (e.g. red on black), palette or 16-bit, all read as drawn.  In a mask
    with transparency, fully transparent pixels are never defects.  There is
    no grey threshold: a mask saved as JPEG, whose compression leaves faint
    non-zero noise around its shapes, must be saved losslessly (PNG) instead.

    Parameters
    ----------
    paths : sequence of str or path-like
        Mask image files.
    shape : (int, int)
        ``(H, W)`` of the masks returned.
    resize : bool, default=True
        Resize a mask of another size to ``shape`` (nearest neighbour, after
        binarisation), for masks of images that are resized too.  With
        ``False`` such a mask is an error.

    Returns
    -------
    masks : ndarray of shape (len(paths), H, W), dtype=bool

    Raises
    ------
    FileNotFoundError
        When a file does not exist.
    ValueError
        When a file cannot be read as an image, has a colour mode where black
        is not all zeros (CMYK, YCbCr, ...), or, with ``resize=False``, is not
        of size ``shape``.
    """
    from PIL import Image

    height, width = (int(v) for v in shape)
    masks = []
    for p in paths:
        im = _open_image(p)
        if im.size != (width, height) and not resize:
            raise ValueError(
                f"Mask {p} is {im.size[0]}x{im.size[1]} pixels (width x height) but its "
                f"image is {width}x{height}; save the mask at its image's size, or pass "
                f"image_size to resize images and masks together."
            )
        mask = _mask_pixels(im, p)
        if mask.shape != (height, width):
            small = Image.fromarray(mask.astype(np.uint8) * 255).resize(
                (width, height), Image.NEAREST
            )
            mask = np.asarray(small) > 0
        masks.append(mask)
    return np.stack(masks) if masks else np.zeros((0, height, width), dtype=bool)


#: Pillow modes of mask images read as they are (palette images become RGBA).
_MASK_MODES = ("1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "LA", "La", "RGB",
               "RGBA", "RGBa")


def _mask_pixels(im, path):
    """The defect pixels of a mask image: non-zero in a colour channel, not transparent."""
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA")  # palette index 0 need not be black
    if im.mode not in _MASK_MODES:
        raise ValueError(
            f"Mask {path} has colour mode {im.mode}, where black is not all zeros; "
            f"save it as a grey or RGB image (black = normal)."
        )
    arr = np.asarray(im)
    if arr.ndim == 2:
        return arr != 0
    if im.mode in ("LA", "La", "RGBA", "RGBa"):
        return (arr[..., :-1] != 0).any(axis=-1) & (arr[..., -1] != 0)
    return (arr != 0).any(axis=-1)

