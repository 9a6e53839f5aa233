"""Loaders of image folders: MVTec AD's layout and a user's own folders."""

import os
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from ._io import (
    _image_mode,
    _is_hidden,
    _open_image,
    list_image_files,
    read_images,
    read_masks,
)

__all__ = ["load_image_folder", "load_mvtec_ad"]


def load_mvtec_ad(root, category, *, image_size=None, color="auto"):
    """Load one category of the MVTec AD data set.

    Parameters
    ----------
    root : str or path-like
        The data set's folder, holding one folder per category.
    category : str
        A category, e.g. ``"carpet"``, ``"bottle"``. Its folder must follow
        MVTec AD's layout: ``train/good/*.png``, ``test/<defect>/*.png`` (with
        ``test/good`` for normal test images) and
        ``ground_truth/<defect>/<stem>_mask.png`` (non-zero in any channel =
        defect, see Notes). Hidden files and folders (names starting with
        ``"."``, such as macOS's ``._000.png`` or ``.ipynb_checkpoints``) are
        skipped.
    image_size : int, (int, int) or None, default=None
        Resize images (bilinear, anti-aliased) and masks (nearest) to this
        size; ``None`` keeps the original size, which every mask must then
        share with its image.
    color : {"auto", "rgb", "gray"}, default="auto"
        ``"auto"`` keeps grey categories (grid, screw, zipper) grey,
        ``(n, H, W)``; others are RGB ``(n, H, W, 3)``.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        ``X_train`` uint8 normal training images; ``X_test`` uint8 test
        images; ``y_test`` (n_test,) int, 1 for a defective image;
        ``masks_test`` (n_test, H, W) bool ground truth (all ``False`` for good
        images); ``defect_types`` (n_test,) str, the test image's folder
        (``"good"`` for normal ones); ``paths_train``, ``paths_test`` lists
        of the files read; ``category``.

    Raises
    ------
    FileNotFoundError
        When the folder, a part of the layout, or a defective image's mask is
        missing.
    ValueError
        When a file cannot be read as an image, or with ``image_size=None``
        images differ in size or a mask's size is not its image's.

    Notes
    -----
    A mask pixel is a defect when any of its colour channels is non-zero (and
    it is not fully transparent): MVTec AD's 0/255 masks, 0/1 masks and
    coloured masks on black all read as drawn.  Save masks losslessly (PNG):
    a JPEG's compression noise is non-zero too.
    """
    root = Path(os.fspath(root)).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"MVTec AD folder {root} does not exist.")
    base = root / category
    if not base.is_dir():
        available = sorted(
            p.name for p in root.iterdir() if not _is_hidden(p) and (p / "train").is_dir()
        )
        raise FileNotFoundError(
            f"Category {category!r} not found in {root}"
            + (f"; available: {available}." if available else ".")
        )
    train_paths = list_image_files(base / "train" / "good")
    if not train_paths:
        raise FileNotFoundError(f"No training images in {base / 'train' / 'good'}.")
    test_dir = base / "test"
    if not test_dir.is_dir():
        raise FileNotFoundError(f"Test folder {test_dir} does not exist.")
    defect_dirs = sorted(p for p in test_dir.iterdir() if p.is_dir() and not _is_hidden(p))
    test_paths, types, mask_paths = [], [], []
    for d in defect_dirs:
        for p in list_image_files(d):
            test_paths.append(p)
            types.append(d.name)
            if d.name == "good":
                mask_paths.append(None)
            else:
                candidates = [
                    base / "ground_truth" / d.name / f"{p.stem}_mask{ext}"
                    for ext in (p.suffix, ".png")
                ]
                found = next((m for m in candidates if m.is_file()), None)
                if found is None:
                    raise FileNotFoundError(
                        f"Ground-truth mask {candidates[-1]} for {p} does not exist."
                    )
                mask_paths.append(found)
    if not test_paths:
        raise FileNotFoundError(f"No test images in {test_dir}.")
    mode_color = color
    if color == "auto":
        probe = [_open_image(p) for p in train_paths[:1] + test_paths[:1]]
        mode_color = "gray" if _image_mode(probe) == "L" else "rgb"
    X_train = read_images(train_paths, image_size=image_size, color=mode_color)
    X_test = read_images(test_paths, image_size=image_size, color=mode_color)
    shape = X_test.shape[1:3]
    masks = np.zeros((len(test_paths),) + shape, dtype=bool)
    bad = [i for i, m in enumerate(mask_paths) if m is not None]
    if bad:
        masks[bad] = read_masks(
            [mask_paths[i] for i in bad], shape, resize=image_size is not None
        )
    y_test = np.array([0 if t == "good" else 1 for t in types], dtype=int)
    return Bunch(
        X_train=X_train,
        X_test=X_test,
        y_test=y_test,
        masks_test=masks,
        defect_types=np.array(types),
        paths_train=[str(p) for p in train_paths],
        paths_test=[str(p) for p in test_paths],
        category=category,
    )


def load_image_folder(
    path_good,
    path_defective=None,
    *,
    path_masks=None,
    mask_suffix="_mask",
    image_size=None,
    color="auto",
):
    """Load a user's own folders of normal (and defective) images.

    Parameters
    ----------
    path_good : str or path-like
        Folder of normal images (files with an extension in
        :data:`IMAGE_EXTENSIONS`; sub-folders and hidden files, whose names
        start with ``"."``, are not read).
    path_defective : str or path-like, default=None
        Folder of defective images, if any.
    path_masks : str or path-like, default=None
        Folder of ground-truth masks for the defective images, named
        ``<stem><mask_suffix>.<ext>``: a pixel non-zero in any channel (and
        not fully transparent) is a defect, so 0/1, 0/255 and coloured masks
        on black all read as drawn; save them losslessly (PNG). A defective
        image without a mask file gets an all-``False`` mask. Only used with
        ``path_defective``.
    mask_suffix : str, default="_mask"
        Suffix of the mask files' stems.
    image_size : int, (int, int) or None, default=None
        Resize every image (and mask) to this size; ``None`` needs all
        images of one size, and each mask of its image's size.
    color : {"auto", "rgb", "gray"}, default="auto"
        ``"auto"``: grey ``(n, H, W)`` when every image is grey, else RGB.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        ``X`` uint8 normal images and ``paths``; with ``path_defective`` also
        ``X_defective``, ``paths_defective`` and, with ``path_masks``,
        ``masks_defective`` (bool). Both image sets share one colour mode
        and, with ``image_size``, one size.

    Raises
    ------
    FileNotFoundError
        When a folder does not exist or holds no images.
    ValueError
        When a file cannot be read as an image, or sizes differ (images, or
        a mask and its image) with ``image_size=None``.
    """
    good = list_image_files(path_good)
    if not good:
        raise FileNotFoundError(f"No image files in {path_good}.")
    defective = []
    if path_defective is not None:
        defective = list_image_files(path_defective)
        if not defective:
            raise FileNotFoundError(f"No image files in {path_defective}.")
    if color == "auto":
        probe = [_open_image(p) for p in good + defective]
        color = "gray" if _image_mode(probe) == "L" else "rgb"
    X = read_images(good, image_size=image_size, color=color)
    data = Bunch(X=X, paths=[str(p) for p in good])
    if path_defective is not None:
        X_bad = read_images(defective, image_size=image_size, color=color)
        if X_bad.shape[1:3] != X.shape[1:3]:
            raise ValueError(
                f"Defective images are {X_bad.shape[1]}x{X_bad.shape[2]} but normal "
                f"images are {X.shape[1]}x{X.shape[2]}; pass image_size to resize them."
            )
        data.X_defective = X_bad
        data.paths_defective = [str(p) for p in defective]
        if path_masks is not None:
            mask_dir = Path(os.fspath(path_masks))
            if not mask_dir.is_dir():
                raise FileNotFoundError(f"Mask folder {mask_dir} does not exist.")
            available = {p.stem: p for p in list_image_files(mask_dir)}
            masks = np.zeros(X_bad.shape[:3], dtype=bool)
            for i, p in enumerate(defective):
                m = available.get(p.stem + mask_suffix)
                if m is not None:
                    masks[i] = read_masks(
                        [m], X_bad.shape[1:3], resize=image_size is not None
                    )[0]
            data.masks_defective = masks
    return data
