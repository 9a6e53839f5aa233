"""Command-line interface: ``skanomaly fit | score | heatmap | evaluate | export | demo``.

Examples
--------
Train a detector on a folder of normal images, score new images, draw
heatmaps::

    skanomaly fit good_images/ -o model.skan --detector dfr \\
        --param image_size=128 --param max_epochs=50
    skanomaly score model.skan new_images/ -o scores.csv
    skanomaly heatmap model.skan new_images/ -o heatmaps/
    skanomaly export model.skan -o model.onnx

Models are saved in skanomaly's safe format (``.skan``, no pickle); a
joblib/pickle model is read only with ``--allow-pickle``, since loading a
pickle runs arbitrary code.

Run a self-contained demonstration (DFR on a scikit-image texture with
planted defects)::

    skanomaly demo

Errors in the user's input (missing paths, unreadable images, bad
parameters, an output that would overwrite an input, a training run that
diverges, memory running out) print one line ``skanomaly: error: ...`` and
exit with status 2; Ctrl-C exits with status 130.  Every file is written
under a temporary name in its folder and renamed when complete, so an
interrupted or failed command leaves no partial file and never touches an
existing one (a file replaced keeps its permissions); output locations,
inputs named by ``--param`` included, are checked before any training or
scoring starts.  ``score``, ``heatmap`` and ``evaluate`` also read a saved
:class:`~skanomaly.TiledDetector`; ``export`` refuses one.
"""

import ast
import csv
import os
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from ._cli_parser import POSITIVE_OPTIONS, build_parser
from ._files import atomic_path as _atomic_path
from ._files import heatmap_names as _heatmap_names
from ._files import spreadsheet_text as _csv_text
from .registry import get_detector

__all__ = ["main"]


class CLIError(Exception):
    """An error in the user's input: reported in one line, exit status 2."""


# ------------------------------------------------------- safe output files


def _same_path(a, b):
    """Whether paths ``a`` and ``b`` name the same file (links resolved)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _check_writable(folder):
    """Create and remove a file in ``folder``: a CLIError unless that works."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CLIError(f"folder {folder} does not exist; create it or choose another -o")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".skanomaly-", suffix=".probe")
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CLIError(f"cannot write to folder {folder} ({reason}); choose another -o") from None


def _check_output(output, inputs, what):
    """Refuse an output file that is an input or cannot be written, before any work.

    Parameters
    ----------
    output : str or path-like
        The file the command will write.
    inputs : iterable of path-like
        Every file the command reads (model, images).
    what : str
        What the output is, for messages ("model file", "CSV file").
    """
    out = Path(output)
    if out.is_dir():
        raise CLIError(f"the {what} {out} is a folder; give -o a file name")
    for p in inputs:
        if _same_path(out, p):
            raise CLIError(
                f"the {what} {out} is one of the inputs ({p}); inputs are never "
                f"overwritten, choose another -o"
            )
    _check_writable(out.parent)


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


def _param_files(params):
    """The existing files that parameter values name: ``fit`` reads them.

    A value such as ``weights='backbone.pth'`` (DFR's and IGD's weights
    file) is an input of the training run, so the model file must not
    replace it.  Every string value naming an existing file counts, also
    inside lists, tuples and dicts.

    Parameters
    ----------
    params : dict
        The ``--param`` values.

    Returns
    -------
    files : list of pathlib.Path
    """
    files, pending = [], list(params.values())
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, (list, tuple, set, frozenset)):
            pending.extend(value)
        elif isinstance(value, (str, os.PathLike)):
            try:
                if Path(value).is_file():
                    files.append(Path(value))
            except (OSError, ValueError):  # not a usable file name (NUL byte, too long)
                pass
    return files


def _collect_paths(inputs):
    """Image files from files and folders (folders: their image files, sorted)."""
    from .datasets._io import list_image_files

    paths = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = list_image_files(p)
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


def _load_model(path, allow_pickle=False):
    """The detector in ``path``: a safe ``.skan`` file, or a pickle with ``allow_pickle``."""
    from .base import BaseDetector
    from .persistence import is_safe_model_file, load_detector, looks_like_pickle
    from .tiling import TiledDetector

    path = Path(path)
    if not path.is_file():
        raise CLIError(f"model file {path} does not exist")
    if is_safe_model_file(path):
        try:
            model = load_detector(path)
        except ValueError as exc:
            raise CLIError(f"cannot load model {path}: {exc}") from exc
    elif allow_pickle:
        import joblib

        try:
            model = joblib.load(path)
        except Exception as exc:  # any unpickling failure is a bad model file
            raise CLIError(f"cannot load model {path}: {exc}") from exc
    elif looks_like_pickle(path):
        raise CLIError(
            f"cannot load model {path}: it is a joblib/pickle file, and loading a pickle "
            f"runs arbitrary code; pass --allow-pickle if the file is trusted (or re-save "
            f"the model with det.save(), the safe format)"
        )
    else:
        raise CLIError(f"cannot load model {path}: not a skanomaly model file (.skan)")
    # A TiledDetector has a detector's scoring API (score_samples, transform,
    # offset_, threshold_, input_shape_), so every command but export reads it.
    if not isinstance(model, (BaseDetector, TiledDetector)):
        raise CLIError(f"{path} does not hold a skanomaly detector ({type(model).__name__})")
    return model


def _images_for(model, paths):
    """The images, read on demand, at the size and colour mode the model was fitted on."""
    from .datasets import ImageFolderSequence

    h, w, c = model.input_shape_
    return ImageFolderSequence(paths, mode="gray" if c == 1 else "rgb", size=(h, w))


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
    from .datasets import ImageFolderSequence

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
    # Before any training; a file a parameter names (weights) is an input too.
    _check_output(args.output, [*paths, *_param_files(params)], "model file")
    # Streamed: images are read batch by batch during fit, never all at once.
    X = ImageFolderSequence(paths, mode=args.color, size=args.resize)
    X._size_hint = "pass --resize HxW to resize every image"  # the CLI's name for size=
    if not args.quiet:
        print(f"Training {cls.__name__} on {len(X)} images of {X.shape[1]}x{X.shape[2]} "
              f"pixels ...", file=sys.stderr)
    start = time.perf_counter()
    detector.fit(X)
    elapsed = time.perf_counter() - start
    out = Path(args.output)
    if not out.parent.is_dir():
        raise CLIError(f"folder {out.parent} does not exist")
    detector.save(out)
    if out.suffix.lower() in (".joblib", ".pkl", ".pickle"):
        print(f"note: {out} is in skanomaly's safe format, not a pickle: load it with "
              f"skanomaly.load", file=sys.stderr)
    print(f"Saved {cls.__name__} fitted in {elapsed:.1f} s to {out}")
    return 0


def _cmd_score(args):
    model = _load_model(args.model, args.allow_pickle)
    paths = _collect_paths(args.images)
    to_file = args.output not in (None, "-")
    if to_file:
        _check_output(args.output, [args.model, *paths], "CSV file")
    X = _images_for(model, paths)
    normality = _batched(model, X, "score_samples", args.batch, not args.quiet)
    anomaly = -normality
    anomalous = normality - model.offset_ < 0

    def write(handle):
        writer = csv.writer(handle)
        writer.writerow(["path", "score", "label"])
        for p, s, bad in zip(paths, anomaly, anomalous):
            # Paths are text: escaped so that spreadsheets never run them as formulas.
            writer.writerow([_csv_text(p), f"{s:.6g}", "anomalous" if bad else "normal"])

    if to_file:
        with _atomic_path(args.output) as tmp, open(tmp, "w", newline="") as handle:
            write(handle)
    else:
        write(sys.stdout)
    if args.output not in (None, "-"):
        print(f"Scored {len(paths)} images ({int(anomalous.sum())} anomalous) -> {args.output}")
    return 0


def _cmd_heatmap(args):
    from .plotting import plot_anomaly_map, save_figure

    model = _load_model(args.model, args.allow_pickle)
    paths = _collect_paths(args.images)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise CLIError(f"{out} is a file; give -o a folder for the heatmaps")
    names = _heatmap_names(paths)
    inputs = [Path(args.model), *paths]
    for name in names:
        clash = next((p for p in inputs if _same_path(out / name, p)), None)
        if clash is not None:
            raise CLIError(
                f"the heatmap {out / name} would overwrite the input {clash}; inputs are "
                f"never overwritten, choose another -o folder"
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"cannot create folder {out} ({exc.strerror or exc}); choose "
                       f"another -o") from None
    _check_writable(out)
    X = _images_for(model, paths)
    threshold = getattr(model, "threshold_", None)
    lo = hi = None
    if args.shared_scale:  # one pass for the shared colour scale, maps not kept
        for s in range(0, len(X), args.batch):
            heat = model.transform(X[s : s + args.batch])
            lo = min(float(heat.min()), np.inf if lo is None else lo)
            hi = max(float(heat.max()), -np.inf if hi is None else hi)
    starts = range(0, len(X), args.batch)
    for s in _progress(starts, len(starts), "transform", not args.quiet and len(X) > args.batch):
        images = X[s : s + args.batch]  # streamed: one batch of images and maps at a time
        maps = model.transform(images)
        for p, name, image, heat in zip(paths[s:], names[s:], images, maps):
            ax = plot_anomaly_map(image, heat, threshold=threshold, vmin=lo, vmax=hi,
                                  title=p.name, figsize=(4, 4), dpi=args.dpi)
            # The file name is drawn as it is: a '$' in it must not start mathtext.
            ax.title.set(parse_math=False, usetex=False)
            with _atomic_path(out / name) as tmp:
                save_figure(ax.figure, tmp)
            if name != f"{p.stem}_heatmap.png" and not args.quiet:
                print(f"note: {p} -> {name} (another input has the name {p.stem})",
                      file=sys.stderr)
    print(f"Wrote {len(paths)} heatmaps to {out}")
    return 0


def _cmd_evaluate(args):
    """``skanomaly evaluate``: an HTML evaluation report on labelled test images."""
    from .datasets import load_mvtec_ad
    from .report import evaluation_report, masks_for_images, mvtec_category

    out = Path(args.output)
    if out.suffix.lower() not in (".html", ".htm"):
        raise CLIError(f"the report is an HTML page; give -o a name ending in .html, got {out}")
    if not out.parent.is_dir():
        raise CLIError(f"folder {out.parent} does not exist")
    model = _load_model(args.model, args.allow_pickle)
    h, w, c = model.input_shape_
    folder = Path(args.images)
    category = mvtec_category(folder) if folder.is_dir() else None
    if category is not None:
        if args.masks is not None:
            raise CLIError(f"{folder} is an MVTec AD category whose masks are read from "
                           f"ground_truth/; drop --masks")
        data = load_mvtec_ad(*category, image_size=(h, w), color="gray" if c == 1 else "rgb")
        X, masks, paths = data.X_test, data.masks_test, data.paths_test
        y = data.y_test.astype(bool)  # 0/1 by the layout: never read as +1/-1
        test_root = Path(category[0]) / category[1] / "test"
        inputs = [args.model, *paths]
        label = category[1]
    else:
        if args.masks is None:
            raise CLIError(f"{folder} is not an MVTec AD category (test/ and ground_truth/); "
                           f"pass --masks MASK_DIR (images without a mask file are normal)")
        paths = _collect_paths([folder])
        X = _images_for(model, paths)
        masks, mask_paths = masks_for_images(paths, args.masks, X.shape[1:3])
        y = None
        test_root = folder if folder.is_dir() else folder.parent
        inputs = [args.model, *paths, *(m for m in mask_paths if m is not None)]
        label = folder.resolve().name
    target = out.resolve()
    if any(Path(p).resolve() == target for p in inputs):
        raise CLIError(f"the report {out} would overwrite one of the inputs; choose another -o")
    names = [os.path.relpath(p, test_root) for p in paths]
    result = evaluation_report(model, X, y, masks=masks, names=names, path=out,
                               title=f"{type(model).__name__} on {label}",
                               n_gallery=args.n_gallery)
    shown = {k: "n/a" if result[k] is None else f"{result[k]:.3f}"
             for k in ("image_auroc", "pixel_auroc", "pro")}
    print(f"Evaluated {result.n_images} images ({result.n_anomalous} anomalous): image AUROC "
          f"{shown['image_auroc']}, pixel AUROC {shown['pixel_auroc']}, PRO {shown['pro']} "
          f"-> {out}")
    return 0


def _cmd_export(args):
    """``skanomaly export``: the model's scoring as an ONNX graph."""
    model = _load_model(args.model, args.allow_pickle)
    out = Path(args.output)
    if out.suffix.lower() != ".onnx":
        raise CLIError(f"give -o a name ending in .onnx, got {out}")
    _check_output(out, [args.model], "ONNX file")
    if not hasattr(model, "export_onnx"):
        raise CLIError(
            f"{args.model} holds a {type(model).__name__}, which cannot be exported to ONNX "
            f"(its tiling and stitching are not part of a graph); score it with 'skanomaly "
            f"score' or 'skanomaly heatmap', or export an untiled detector"
        )
    model.export_onnx(out)
    h, w, c = model.input_shape_
    print(f"Exported {type(model).__name__} to {out}: input 'images' float32 (n, {c}, {h}, "
          f"{w}) in [0, 1]; outputs 'scores' (= -score_samples) and 'maps' (= transform)")
    return 0


def _cmd_demo(args):
    from ._demo import run_demo

    return run_demo(args)


def _parser():
    """The parser (:mod:`skanomaly._cli_parser`), each sub-command wired to its function."""
    return build_parser({
        "fit": _cmd_fit, "score": _cmd_score, "heatmap": _cmd_heatmap,
        "evaluate": _cmd_evaluate, "export": _cmd_export, "demo": _cmd_demo,
    })


def _run(args):
    """Run a parsed command with its torch thread count, restored afterwards.

    Integer options are checked first; Pillow's decompression-bomb warning
    is an error while the command runs (an image that large is refused, not
    read).
    """
    for attr, flag in POSITIVE_OPTIONS:
        value = getattr(args, attr, None)
        if value is not None and value < 1:
            raise CLIError(f"{flag} must be at least 1, got {value}")
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        if args.threads is None:
            return args.func(args)
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(args.threads)
        try:
            return args.func(args)
        finally:
            torch.set_num_threads(previous)


#: What to lower when a command runs out of memory, by sub-command.
_MEMORY_KNOBS = {
    "fit": "lower the image size (--param image_size or --resize), the batch size "
           "(--param batch_size) or the network width (--param width, for detectors "
           "that have one), or train on fewer images",
    "score": "lower --batch, or use a model fitted with a smaller image_size or width",
    "heatmap": "lower --batch, or use a model fitted with a smaller image_size or width",
    "evaluate": "evaluate fewer test images at a time, or use a model fitted with a "
                "smaller image_size or width",
    "export": "use a model fitted with a smaller image_size or width",
    "demo": "lower --image-size, --n-train or --n-test",
}

#: Messages of torch's (CPU, CUDA, MPS) allocation failures, raised as RuntimeError.
_ALLOCATION_FAILED = re.compile(
    r"out of memory|can't allocate|cannot allocate|unable to allocate|not enough memory|"
    r"ALLOC_FAILED",
    re.IGNORECASE,
)


def _is_out_of_memory(exc):
    """Whether ``exc`` says that memory ran out (numpy's, torch's or Python's)."""
    if isinstance(exc, MemoryError):  # numpy's _ArrayMemoryError included
        return True
    torch = sys.modules.get("torch")
    if torch is not None:
        kinds = tuple(
            k for k in (getattr(torch, "OutOfMemoryError", None),
                        getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None))
            if isinstance(k, type)
        )
        if kinds and isinstance(exc, kinds):
            return True
    return isinstance(exc, RuntimeError) and bool(_ALLOCATION_FAILED.search(str(exc)))


def _memory_message(exc, command):
    """The one line for an out-of-memory error: how much was asked, what to lower."""
    asked = ""
    found = re.search(r"allocate\s+(\d[\d.]*)\s*(bytes|[KMGTPE]i?B)", str(exc), re.IGNORECASE)
    if found:
        amount, unit = found.groups()
        if unit.lower() == "bytes":
            size = float(amount)
            for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
                if size < 1024 or unit == "EiB":
                    break
                size /= 1024
            amount = f"{size:.0f}" if unit == "bytes" else f"{size:.3g}"
        asked = f" (an allocation of {amount} {unit} failed)"
    knobs = _MEMORY_KNOBS.get(command, "use smaller images, batches or networks")
    return f"out of memory{asked}; {knobs}"


def _user_error_message(exc, command=None):
    """The one-line message of a user error, or None for a bug (re-raised).

    Parameters
    ----------
    exc : Exception
        The error the command raised.
    command : str, default=None
        The sub-command, for the advice of an out-of-memory error.

    Returns
    -------
    message : str or None
    """
    image = sys.modules.get("PIL.Image")
    training = sys.modules.get("skanomaly._training")
    if image is not None and isinstance(
        exc, (image.DecompressionBombError, image.DecompressionBombWarning)
    ):
        return (
            f"refusing an image that large (possible decompression bomb): {exc} Shrink "
            f"the image first, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust it"
        )
    if training is not None and isinstance(exc, training.TrainingDivergedError):
        return str(exc)
    if _is_out_of_memory(exc):
        return _memory_message(exc, command)
    if isinstance(exc, (CLIError, OSError, ValueError, TypeError, ImportError, EOFError,
                        ArithmeticError)):
        return str(exc) or type(exc).__name__
    return None


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
        unreadable images or models, bad parameters, outputs that would
        overwrite inputs, diverged training), 130 when interrupted (Ctrl-C).
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
    except Exception as exc:
        # Input errors (including scikit-learn's InvalidParameterError, a
        # ValueError, and a diverged training run) are reported in one line;
        # anything else is a bug and keeps its traceback, as does every error
        # with SKANOMALY_DEBUG=1.
        message = _user_error_message(exc, getattr(args, "command", None))
        if message is None or os.environ.get("SKANOMALY_DEBUG"):
            raise
        print(f"skanomaly: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
