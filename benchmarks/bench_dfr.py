"""DFR benchmark: quality on textures with planted defects, speed and memory.

Quality: DFRDetector with the offline pretrained EfficientNet-Lite0 backbone
(or VGG19 when its ImageNet weights are available) on scikit-image textures
(brick, grass) with defects planted by ``skanomaly.datasets.make_defects``:
image AUROC, pixel AUROC (pooled) and PRO (AUPRO to FPR 0.3, normalised).

Speed/memory: scoring throughput (images/s) and extra peak resident memory
of ``transform`` against the bare backbone forward on the same images, each
measured in a fresh subprocess: the peak RSS (VmHWM, reset through
/proc/self/clear_refs after loading and a warm-up) minus the RSS before the run.

Usage::

    python benchmarks/bench_dfr.py --image-size 128 --epochs 30 --out dfr.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import joblib
import numpy as np
import torch

import _common


def _status_mb(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak():
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _measure(model_path, data_path, mode, batch_size):
    """Run in a subprocess: throughput and extra peak RSS of one mode."""
    det = joblib.load(model_path)
    X = np.load(data_path)
    if mode == "backbone":
        stages = det.feature_extractor_.backbone
        x_all = torch.from_numpy(X).float().div(255)
        if x_all.ndim == 3:
            x_all = x_all[:, None]
        else:
            x_all = x_all.permute(0, 3, 1, 2)

        def run():
            with torch.inference_mode():
                for i in range(0, len(x_all), batch_size):
                    stages(det._to_working_size(x_all[i : i + batch_size]))
    else:
        def run():
            det.transform(X)

    run_small = X[:batch_size]
    det.transform(run_small)  # warm-up (allocator, operators)
    base = _status_mb("VmRSS")
    _reset_peak()
    t = time.perf_counter()
    run()
    elapsed = time.perf_counter() - t
    return {"images_per_s": len(X) / elapsed, "extra_peak_mb": _status_mb("VmHWM") - base}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--textures", nargs="+", default=["brick", "grass"])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="IMAGENET1K_V1")
    parser.add_argument("--scales", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--crop", type=int, default=None,
                        help="side of the texture crops (default: image size, at most 200)")
    parser.add_argument("--n-train", type=int, default=40)
    parser.add_argument("--n-test", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="markdown file to write")
    parser.add_argument("--_measure", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.weights.lower() == "none":
        args.weights = None  # random initialisation: speed and memory only
    if args._measure:
        model, data, mode, bs = args._measure
        print(json.dumps(_measure(model, data, mode, int(bs))))
        return

    from skanomaly import DFRDetector
    from skanomaly.datasets import make_texture_defects
    from skanomaly.metrics import image_auroc, pixel_auroc, pro_score

    rows = []
    for texture in args.textures:
        data = make_texture_defects(
            texture, n_train=args.n_train, n_test=args.n_test,
            image_size=args.crop or min(args.image_size, 200), random_state=0,
        )
        det = DFRDetector(
            backbone=args.backbone, weights=args.weights, scales=args.scales,
            image_size=args.image_size, max_epochs=args.epochs,
            batch_size=args.batch_size, random_state=0,
        )
        t = time.perf_counter()
        det.fit(data.X_train)
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        maps = det.transform(data.X_test)
        scores = -det.score_samples(data.X_test)
        score_s = time.perf_counter() - t
        row = {
            "texture": texture,
            "image_auroc": image_auroc(data.y_test, scores),
            "pixel_auroc": pixel_auroc(data.masks_test, maps),
            "pro": pro_score(data.masks_test, maps),
            "fit_s": fit_s,
            "score_s": score_s,
            "latent_dim": det.latent_dim_,
            "c_o": det.n_regional_features_,
        }
        with tempfile.TemporaryDirectory() as tmp:
            model_path = os.path.join(tmp, "det.joblib")
            data_path = os.path.join(tmp, "X.npy")
            joblib.dump(det, model_path)
            np.save(data_path, data.X_test)
            for mode in ("backbone", "detector"):
                out = subprocess.run(
                    [sys.executable, __file__, "--threads", str(args.threads or 0),
                     "--_measure", model_path, data_path, mode, str(args.batch_size)],
                    check=True, capture_output=True, text=True,
                ).stdout
                m = json.loads(out.strip().splitlines()[-1])
                row[f"{mode}_img_s"] = m["images_per_s"]
                row[f"{mode}_peak_mb"] = m["extra_peak_mb"]
        rows.append(row)
        print(json.dumps(row), flush=True)

    header = (
        f"DFR ({args.backbone}, weights={args.weights}, scales={args.scales}, "
        f"{args.image_size}px working size, crops {args.crop or min(args.image_size, 200)}px, {args.n_train} train / {args.n_test} test crops, "
        f"{args.epochs} epochs, batch {args.batch_size}, torch threads "
        f"{torch.get_num_threads()})\n\n"
        "| texture | image AUROC | pixel AUROC | PRO@0.3 | fit s | score s | c_o | c_d "
        "| detector img/s | backbone img/s | detector extra peak MB | backbone extra peak MB |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['texture']} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} | {r['pro']:.3f} "
        f"| {r['fit_s']:.1f} | {r['score_s']:.1f} | {r['c_o']} | {r['latent_dim']} "
        f"| {r['detector_img_s']:.1f} | {r['backbone_img_s']:.1f} "
        f"| {r['detector_peak_mb']:.0f} | {r['backbone_peak_mb']:.0f} |"
        for r in rows
    ]
    table = header + "\n".join(lines) + "\n"
    print(table)
    if args.out:
        _common.write_text(args.out, table)


if __name__ == "__main__":
    main()
