"""Benchmark: Fashion-MNIST, one-class protocol.

For each normal class, a detector is trained on (a sample of) that class's
training images and tested on (a sample of) the official test split, where
the nine other classes are anomalies; the image AUROC is reported (pixel
measures do not apply). The papers' protocol uses all 6,000 training images
of the class and the whole test split: pass ``--n-train 6000 --n-test 10000``.

Example::

    python benchmarks/run_fashion_mnist.py --detectors igd --classes 0 1 \\
        --out benchmarks/results_fashion_mnist.md
"""

import numpy as np

import _common
from skanomaly.datasets import FASHION_MNIST_CLASSES


def main(argv=None):
    parser = _common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--classes", nargs="+", type=int, default=list(range(10)))
    parser.add_argument("--n-train", type=int, default=300,
                        help="training images of the normal class (default: 300)")
    parser.add_argument("--n-test", type=int, default=500,
                        help="test images sampled from the test split (default: 500)")
    parser.add_argument("--image-size", type=int, default=32,
                        help="detectors' working size (images are 28x28)")
    args = parser.parse_args(argv)
    _common.setup(args)
    X_train_all, y_train_all, X_test, labels_test, rng = _common.fashion_mnist_protocol(
        args.root, args.n_test, args.seed
    )
    cfgs = _common.configs(args, args.image_size, task="one-class")
    rows = []
    for c in args.classes:
        normal = np.flatnonzero(y_train_all == c)
        train_idx = np.sort(rng.choice(normal, min(args.n_train, normal.size), replace=False))
        X_train = X_train_all[train_idx]
        y_test = (labels_test != c).astype(int)
        for name, cls, params in cfgs:
            print(f"[class {c}] {name} ...", flush=True)
            row = _common.evaluate(cls, params, X_train, X_test, y_test)
            rows.append({"class": f"{c} {FASHION_MNIST_CLASSES[c]}", "detector": name, **row})
    measures = ("image AUROC", "fit s", "score s")
    sections = [("Results", _common.markdown_table(rows, ["class", "detector"], measures))]
    if len(args.classes) > 1:
        sections.append(("Mean over classes", _common.markdown_table(
            _common.mean_rows(rows, "detector", measures), ["detector"], measures)))
    sections.append(("Parameters", _common.params_text(cfgs)))
    _common.write_report(args.out, "Fashion-MNIST one-class", {
        "classes": ", ".join(str(c) for c in args.classes),
        "images": f"{args.n_train} training images of the normal class; {len(X_test)} test "
                  f"images sampled from the test split",
        "preset": args.preset, "seed": args.seed,
        "metric": "image AUROC from -score_samples (anomaly = any other class)",
    }, sections)
    return rows


if __name__ == "__main__":
    main()
