"""Benchmark SCADNDetector on Fashion-MNIST, one-class protocol.

For each normal class, SCADN is trained on (a sample of) that class's training
images and tested on (a sample of) the official test split, where the nine
other classes are anomalies.  Reported per class: image AUROC of the
detector (eqs. 5-10), fit and scoring times, and, from the same fitted
generator, the inference variants of the paper's ablation (Table 4): each
scale alone, the scales merged by a mean, the scale of largest mean error
chosen without the training reference ``mu_i``.

The paper (MNIST/CIFAR-10, OCGAN protocol) trains at 32 px, batch 512, width
64, for 200 epochs on all images of the class and tests on the whole test
split: ``--n-train 6000 --n-test 10000 --width 64 --batch-size 512
--epochs 200 --lr 1e-4``, a GPU job.  The defaults are small CPU settings.

Example::

    python benchmarks/bench_scadn.py --classes 0 1 2 --threads 1 \\
        --out benchmarks/results_scadn_fashion_mnist.md
"""

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

from skanomaly import SCADNDetector  # noqa: E402
from skanomaly.datasets import FASHION_MNIST_CLASSES  # noqa: E402
from skanomaly.metrics import image_auroc  # noqa: E402
from skanomaly.scadn.masks import striped_masks  # noqa: E402
from skanomaly.scadn.torch_model import scale_error_maps, select_scale  # noqa: E402

VARIANTS = ("SCADN", "S1 only", "S2 only", "S3 only", "mean merge", "max, no mu")


def variant_scores(det, X):
    """Anomaly scores of the ablation variants from the fitted generator."""
    device = det.device_
    images = torch.as_tensor(X, dtype=torch.float32, device=device)[:, None] / 255
    G = det.net_.module_.to(device).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), det.batch_size):
            x = det._to_working_size(images[start : start + det.batch_size])
            masks = striped_masks(*x.shape[-2:], det.mask_scales_, device=device)
            out.append(scale_error_maps(G, x, masks, chunk_size=4 * det.batch_size).cpu())
    maps = torch.cat(out)  # (n, n_scales, S, S)
    scadn, _, chosen = select_scale(maps, torch.as_tensor(det.mu_, dtype=torch.float32))
    means = maps.mean(dim=(2, 3)).double().numpy()  # average(E_i)
    chosen = chosen.numpy()
    scores = {"SCADN": scadn.double().numpy()}
    for i in range(means.shape[1]):
        scores[f"S{i + 1} only"] = means[:, i]
    scores["mean merge"] = means.mean(axis=1)
    scores["max, no mu"] = means.max(axis=1)
    return scores, chosen


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--classes", nargs="+", type=int, default=list(range(10)))
    parser.add_argument("--n-train", type=int, default=500,
                        help="training images of the normal class (default: 500)")
    parser.add_argument("--n-test", type=int, default=500,
                        help="test images sampled from the test split (default: 500)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="markdown file to write")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    X_train_all, y_train_all, X_test, labels_test, rng = _common.fashion_mnist_protocol(
        args.root, args.n_test, args.seed
    )
    params = dict(image_size=args.image_size, width=args.width, max_epochs=args.epochs,
                  batch_size=args.batch_size, lr=args.lr, device=args.device,
                  random_state=args.seed)

    rows, ablation = [], []
    for c in args.classes:
        normal = np.flatnonzero(y_train_all == c)
        train_idx = np.sort(rng.choice(normal, min(args.n_train, normal.size), replace=False))
        y_test = (labels_test != c).astype(int)
        print(f"[class {c}] fitting ...", file=sys.stderr, flush=True)
        det = SCADNDetector(**params)
        start = time.perf_counter()
        det.fit(X_train_all[train_idx])
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        anomaly = -det.score_samples(X_test)
        score_s = time.perf_counter() - start
        name = f"{c} {FASHION_MNIST_CLASSES[c]}"
        rows.append({"class": name, "image AUROC": image_auroc(y_test, anomaly),
                     "fit s": fit_s, "score s": score_s,
                     "ms / test image": 1000 * score_s / len(X_test),
                     "final loss": det.net_.history[-1, "train_loss"]})
        scores, chosen = variant_scores(det, X_test)
        if not np.allclose(scores["SCADN"], anomaly, rtol=1e-4, atol=1e-7):
            print(f"[class {c}] warning: variant pipeline differs from score_samples",
                  file=sys.stderr)
        row = {"class": name}
        row.update({v: image_auroc(y_test, scores[v]) for v in VARIANTS})
        row["chosen S1/S2/S3"] = "/".join(
            str(int((chosen == i).sum())) for i in range(len(det.mask_scales_)))
        ablation.append(row)
        print(f"[class {c}] AUROC {rows[-1]['image AUROC']:.3f}  fit {fit_s:.0f}s  "
              f"score {score_s:.0f}s", file=sys.stderr, flush=True)

    measures = ("image AUROC", "fit s", "score s", "ms / test image", "final loss")
    sections = [("Results", _common.markdown_table(rows, ["class"], measures))]
    if len(rows) > 1:
        mean = {"class": "mean"}
        for m in measures:
            mean[m] = float(np.mean([r[m] for r in rows]))
        sections[0] = ("Results", _common.markdown_table(rows + [mean], ["class"], measures))
    ab = ablation
    if len(ab) > 1:
        ab = ab + [{"class": "mean", "chosen S1/S2/S3": "",
                    **{v: float(np.mean([r[v] for r in ablation])) for v in VARIANTS}}]
    sections.append(("Inference variants (paper Table 4), image AUROC",
                     _common.markdown_table(ab, ["class", "chosen S1/S2/S3"], VARIANTS)))
    signature = ", ".join(f"{k}={v!r}" for k, v in params.items())
    sections.append(("Parameters", f"`SCADNDetector({signature})`"))
    _common.write_report(args.out, "SCADN on Fashion-MNIST, one-class", {
        "classes": ", ".join(str(c) for c in args.classes),
        "images": f"{args.n_train} training images of the normal class (official train "
                  f"split); {len(X_test)} test images sampled from the official test split",
        "seed": args.seed,
        "metric": "image AUROC from -score_samples (anomaly = any other class)",
    }, sections)
    return rows, ablation


if __name__ == "__main__":
    main()
