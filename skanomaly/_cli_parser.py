"""The argument parser of the ``skanomaly`` command line (see :mod:`skanomaly.cli`).

The options several sub-commands share (the saved model to read, the image
inputs, ``--batch``, ``--threads``, ``-q``) are declared once, by the
``_add_*`` helpers, so that their flags, defaults and help agree everywhere.
"""

import argparse

from .registry import detector_names

__all__ = ["POSITIVE_OPTIONS", "build_parser"]

#: Integer options that must be at least 1: (attribute, flag).
POSITIVE_OPTIONS = (
    ("batch", "--batch"), ("dpi", "--dpi"), ("n_gallery", "--n-gallery"),
    ("n_train", "--n-train"), ("n_test", "--n-test"), ("image_size", "--image-size"),
    ("epochs", "--epochs"), ("threads", "--threads"),
)

_ALLOW_PICKLE_HELP = (
    "also read a joblib/pickle model; loading a pickle runs arbitrary code, so use "
    "it only for files you trust (models saved by 'skanomaly fit' need no flag)"
)


def _parse_size(text):
    """``"64"`` -> (64, 64); ``"48x64"`` -> (48, 64)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}")
    return tuple(parts)


def _add_model(p):
    """The saved detector a command reads: ``model`` and ``--allow-pickle``."""
    p.add_argument("model", help="model file written by 'skanomaly fit'")
    p.add_argument("--allow-pickle", action="store_true", help=_ALLOW_PICKLE_HELP)


def _add_images(p, help="image files or folders"):
    p.add_argument("images", nargs="+", help=help)


def _add_batch(p):
    p.add_argument("--batch", type=int, default=16, help="images per batch (default: 16)")


def _add_threads(p, quiet, default=None, help="torch CPU threads (default: torch's choice)"):
    """``--threads`` and, unless ``quiet`` (the help of ``-q``) is None, ``-q/--quiet``."""
    p.add_argument("--threads", type=int, default=default, help=help)
    if quiet is not None:
        p.add_argument("-q", "--quiet", action="store_true", help=quiet)


def build_parser(commands):
    """The ``skanomaly`` parser; ``commands`` maps each sub-command to its function.

    The function of the chosen sub-command is the parsed arguments' ``func``.
    """
    parser = argparse.ArgumentParser(
        prog="skanomaly",
        description="Deep unsupervised visual anomaly detection from the command line.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("fit", help="train a detector on normal images and save it")
    _add_images(p, help="normal image files or folders")
    p.add_argument("-o", "--output", required=True,
                   help="model file to write, in skanomaly's safe format (e.g. model.skan)")
    p.add_argument("-d", "--detector", default="dfr", choices=detector_names(),
                   help="detector (default: dfr)")
    p.add_argument("-p", "--param", action="append", metavar="KEY=VALUE",
                   help="detector parameter, repeatable (e.g. --param max_epochs=20)")
    p.add_argument("--resize", type=_parse_size, metavar="N|HxW",
                   help="resize images to this size when reading them")
    p.add_argument("--color", choices=("auto", "rgb", "gray"), default="auto",
                   help="colour mode of the images (default: auto)")
    _add_threads(p, quiet="no progress output")
    p.set_defaults(func=commands["fit"])

    p = sub.add_parser("score", help="score images with a saved detector (CSV)")
    _add_model(p)
    _add_images(p)
    p.add_argument("-o", "--output", default=None,
                   help="CSV file (default: standard output); columns path, score "
                        "(anomaly score, higher = more anomalous), label")
    _add_batch(p)
    _add_threads(p, quiet="no progress bar")
    p.set_defaults(func=commands["score"])

    p = sub.add_parser("heatmap", help="write heatmap overlays (PNG) of images")
    _add_model(p)
    _add_images(p)
    p.add_argument("-o", "--output", required=True, help="folder for <stem>_heatmap.png files")
    p.add_argument("--shared-scale", action="store_true",
                   help="one colour scale for all heatmaps (default: per image)")
    p.add_argument("--dpi", type=int, default=100, help="resolution (default: 100)")
    _add_batch(p)
    _add_threads(p, quiet="no progress bar")
    p.set_defaults(func=commands["heatmap"])

    p = sub.add_parser("evaluate", help="HTML report of a saved detector on labelled images")
    _add_model(p)
    p.add_argument("images", metavar="test_images",
                   help="an MVTec AD category folder (or its test/ folder), or a folder of "
                        "test images with --masks")
    p.add_argument("--masks", metavar="MASK_DIR", default=None,
                   help="folder of ground-truth masks <stem>_mask.png (or <stem>.png); an "
                        "image without one is normal")
    p.add_argument("-o", "--output", required=True, help="HTML report to write")
    p.add_argument("--n-gallery", type=int, default=8,
                   help="images per gallery (default: 8)")
    _add_threads(p, quiet="no progress output")
    p.set_defaults(func=commands["evaluate"])

    p = sub.add_parser("export", help="export a saved detector's scoring to ONNX")
    _add_model(p)
    p.add_argument("-o", "--output", required=True, help="ONNX file to write (.onnx)")
    _add_threads(p, quiet=None)
    p.set_defaults(func=commands["export"])

    p = sub.add_parser("demo", help="train DFR on a texture with planted defects")
    p.add_argument("--texture", default="brick", choices=("brick", "grass", "gravel"),
                   help="scikit-image texture (default: brick)")
    p.add_argument("--n-train", type=int, default=40, help="training crops (default: 40)")
    p.add_argument("--n-test", type=int, default=40, help="test crops (default: 40)")
    p.add_argument("--image-size", type=int, default=64, help="crop size (default: 64)")
    p.add_argument("--epochs", type=int, default=30, help="training epochs (default: 30)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("-o", "--output", default="skanomaly_demo.png",
                   help="heatmap figure to write (default: skanomaly_demo.png; '' for none)")
    _add_threads(p, quiet="no progress output", default=1,
                 help="torch CPU threads (default: 1, the fastest for this small "
                      "workload, especially on a busy machine)")
    p.set_defaults(func=commands["demo"])
    return parser
