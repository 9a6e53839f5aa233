"""Benchmark InpaintingAE's objectives on textures with planted defects.

Normal training crops and test crops come from separate parts of each
scikit-image texture (``skanomaly.datasets.make_texture_defects``); half of
the test crops receive synthetic scratches, stains, foreign patches or
smears with exact masks.  For every texture, each objective (eq. 1
``restore``, eq. 3 ``amplify``) is trained with the paper's norms as written
(``squared_norm=False``) and with squared norms (``squared_norm=True``).
A share of the normal training crops is held out to set the §4.2 threshold
(``validation_fraction``), which ``predict`` and ``segment`` use.

Reported: image AUROC (from ``-score_samples``), pixel AUROC (pooled over
all test pixels), PRO (AUPRO up to FPR 0.3, normalised), image F1 of
``predict`` and pixel F1 of ``segment`` at the §4.2 threshold, fit and
scoring seconds.  A figure per run shows defective test crops, their
heatmaps, the ground truth (green) and ``segment``'s masks (red).

The paper's setting (512 px MVTec images, ``width=32``) is a GPU job; the
defaults below are small CPU settings (about 1-3 minutes per run on one
core)::

    python benchmarks/bench_inpainting.py --textures brick grass --threads 1 \\
        --out benchmarks/results_inpainting.md --figures benchmarks/figures_inpainting
"""

import argparse
import os
import sys
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

from skanomaly import InpaintingAE  # noqa: E402
from skanomaly import metrics  # noqa: E402
from skanomaly.datasets import make_texture_defects  # noqa: E402

MEASURES = ("image AUROC", "pixel AUROC", "PRO", "image F1", "pixel F1", "fit s", "score s")


def run_one(params, data, figure_path=None):
    """Fit one configuration and measure it; NaN measures on failure."""
    row = {m: np.nan for m in MEASURES}
    row["error"] = ""
    try:
        det = InpaintingAE(**params)
        start = time.perf_counter()
        det.fit(data.X_train)
        row["fit s"] = time.perf_counter() - start
        start = time.perf_counter()
        anomaly = -det.score_samples(data.X_test)
        maps = det.transform(data.X_test)
        row["score s"] = time.perf_counter() - start
        masks = det.segment(data.X_test)
        pred = det.predict(data.X_test) == -1
        row["image AUROC"] = metrics.image_auroc(data.y_test, anomaly)
        row["pixel AUROC"] = metrics.pixel_auroc(data.masks_test, maps)
        row["PRO"] = metrics.pro_score(data.masks_test, maps)
        row["image F1"] = metrics.f1_at_threshold(data.y_test, pred, 0.5)
        row["pixel F1"] = metrics.f1_at_threshold(data.masks_test, masks, 0.5)
        if figure_path:
            from skanomaly.plotting import plot_anomaly_maps

            idx = np.flatnonzero(data.y_test)[:8]
            plot_anomaly_maps(
                data.X_test[idx], maps[idx], masks=data.masks_test[idx], predicted=masks[idx],
                scores=anomaly[idx], n_cols=4, path=figure_path,
            )
    except Exception as exc:  # report and go on with the other runs
        row["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--textures", nargs="+", default=["brick", "grass"],
                        choices=["brick", "grass", "gravel"])
    parser.add_argument("--objectives", nargs="+", default=["restore", "amplify"],
                        choices=["restore", "amplify"])
    parser.add_argument("--norms", nargs="+", default=["as-written", "squared"],
                        choices=["as-written", "squared"])
    parser.add_argument("--n-train", type=int, default=48)
    parser.add_argument("--n-test", type=int, default=40)
    parser.add_argument("--image-size", type=int, default=64, help="crop size in pixels")
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lam", type=float, default=0.5)
    parser.add_argument("--smoothing-sigma", type=float, default=2.0)
    parser.add_argument("--min-defect-area", type=int, default=8)
    parser.add_argument("--brightness", type=float, default=0.0)
    parser.add_argument("--validation-fraction", type=float, default=0.125)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="markdown file to write")
    parser.add_argument("--figures", default=None, help="folder for heatmap figures")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.figures:
        os.makedirs(args.figures, exist_ok=True)

    base = dict(
        image_size=args.image_size, width=args.width, max_epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, lam=args.lam,
        smoothing_sigma=args.smoothing_sigma, min_defect_area=args.min_defect_area,
        brightness=args.brightness,
        validation_fraction=args.validation_fraction, random_state=args.seed,
        device=args.device,
    )
    rows = []
    for texture in args.textures:
        data = make_texture_defects(texture, n_train=args.n_train, n_test=args.n_test,
                                    image_size=args.image_size, random_state=args.seed)
        for objective in args.objectives:
            for norm in args.norms:
                params = dict(base, objective=objective, squared_norm=norm == "squared")
                print(f"[{texture}] {objective}, {norm} ...", file=sys.stderr, flush=True)
                fig = (os.path.join(args.figures, f"{texture}_{objective}_{norm}.png")
                       if args.figures else None)
                row = run_one(params, data, fig)
                rows.append({"texture": texture, "objective": objective, "norms": norm, **row})
    keys = ["texture", "objective", "norms"]
    sections = [("Results", _common.markdown_table(rows, keys, MEASURES))]
    if len(args.textures) > 1:
        for row in rows:
            row["config"] = f"{row['objective']}, {row['norms']}"
        sections.append(("Mean over textures", _common.markdown_table(
            _common.mean_rows(rows, "config", MEASURES), ["config"], MEASURES)))
    shown = ", ".join(f"{k}={v!r}" for k, v in base.items())
    sections.append(("Parameters", f"`InpaintingAE({shown})` with each objective and "
                     "`squared_norm`; every other parameter at its default."))
    _common.write_report(args.out, "InpaintingAE: objectives on textures with planted defects", {
        "textures": ", ".join(args.textures),
        "crops": f"{args.n_train} normal training crops ({args.validation_fraction:.0%} held "
                 f"out for the threshold), {args.n_test} test crops (half defective), "
                 f"{args.image_size}x{args.image_size} px",
        "metrics": "image AUROC from -score_samples; pixel AUROC pooled over all test pixels; "
                   "PRO = AUPRO up to FPR 0.3, normalised (skanomaly.metrics); F1 of predict "
                   "(images) and segment (pixels) at the §4.2 threshold; times in seconds",
    }, sections)
    return rows


if __name__ == "__main__":
    main()
