"""Benchmark: Fashion-MNIST, one-class protocol.

For each normal class, a detector is trained on (a sample of) that class's
training images and tested on (a sample of) the official test split, where
the nine other classes are anomalies; the image AUROC is reported (pixel
measures do not apply). The papers' protocol uses all 6,000 training images
of the class and the whole test split: pass ``--n-train 6000 --n-test 10000``.

Each detector runs at each CPU budget (``--budget``, presets in
``_common.BUDGETS``), next to the trivial baseline |x - mean training image|
(``tests/baseline.py``, image score = max of the smoothed map).  Runs can be
split over processes (``--json``) and joined (``--combine``), where every
combination that did not run reads "not run".

Example::

    OMP_NUM_THREADS=1 python benchmarks/run_fashion_mnist.py --detectors igd \
        --classes 0 1 --threads 1 --out benchmarks/results_fashion_mnist.md
"""

import shlex
import sys

import numpy as np

import _common
from skanomaly.datasets import FASHION_MNIST_CLASSES

BASELINE = "baseline (mean image)"
KEYS = ["class", "detector", "budget"]
MEASURES = ("image AUROC", "SE", "fit s", "score s")
SE_NOTE = (
    "SE: the image AUROC's standard error (Hanley & McNeil 1982, from the numbers of "
    "normal and anomalous test images of each class); for a mean over classes, "
    "sqrt(sum SE^2) / classes (the classes' test labels differ, so their errors are "
    "treated as independent).\n\n")


def class_counts(labels_test, classes):
    """``{class label: (n anomalous, n normal)}`` of the test images."""
    labels_test = np.asarray(labels_test)
    return {f"{c} {FASHION_MNIST_CLASSES[c]}": (int((labels_test != c).sum()),
                                                int((labels_test == c).sum()))
            for c in classes}


def _tables(rows, classes, detectors, budgets, counts=None):
    """The per-class table and the means over classes; ``counts`` (see
    :func:`class_counts`) gives the standard errors of rows without test counts."""
    grid = []
    for c in classes:
        label = f"{c} {FASHION_MNIST_CLASSES[c]}"
        grid.append((label, BASELINE, "-"))
        grid += [(label, d, b) for d in detectors for b in budgets]
    rows = [dict(r) for r in rows]
    for row in rows:
        n_bad, n_good = (counts or {}).get(row["class"], (np.nan, np.nan))
        row["SE"] = _common.auroc_se(row.get("image AUROC", np.nan),
                                     row.get("n defective", n_bad), row.get("n normal", n_good))
    table = _common.complete_rows(rows, KEYS, grid, MEASURES)
    means = []
    for combo in dict.fromkeys(g[1:] for g in grid):
        members = [r for r in table if (r["detector"], r["budget"]) == combo]
        ran = [r for r in members if isinstance(r.get("image AUROC"), float)]
        mean = {"detector": combo[0], "budget": combo[1], "classes": f"{len(ran)}/{len(members)}"}
        for m in MEASURES:
            vals = np.array([r[m] for r in ran], dtype=float)
            if not len(ran) or not np.isfinite(vals).any():
                mean[m] = _common.NOT_RUN if not len(ran) else np.nan
            elif m == "SE":
                mean[m] = float(np.sqrt(np.sum(vals ** 2)) / len(vals))
            else:
                mean[m] = float(np.nanmean(vals))
        means.append(mean)
    return (SE_NOTE + _common.markdown_table(table, KEYS, MEASURES),
            SE_NOTE + _common.markdown_table(means, ["detector", "budget", "classes"],
                                             MEASURES))


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
    _common.add_run_options(parser)
    args = parser.parse_args(argv)
    command = shlex.join(["python", "benchmarks/run_fashion_mnist.py"] + sys.argv[1:])
    settings = {
        "classes": ", ".join(str(c) for c in args.classes),
        "images": f"{args.n_train} training images of the normal class; {args.n_test} test "
                  f"images sampled from the test split; image_size={args.image_size}",
        "budgets": " | ".join(_common.budget_text(args.detectors, "one-class",
                                                  preset=args.preset)),
        "preset": args.preset, "seed": args.seed,
        "metric": "image AUROC from -score_samples (anomaly = any other class); mean "
                  "over the classes that ran",
    }
    if args.combine:
        rows, sources = _common.load_rows(args.combine)
        try:  # the test counts of rows saved before they were recorded
            counts = class_counts(_common.fashion_mnist_protocol(
                args.root, args.n_test, args.seed)[3], args.classes)
        except (OSError, ValueError):
            counts = None
        main_table, mean_table = _tables(rows, args.classes, args.detectors,
                                         _common.report_budgets(args, rows), counts)
        _common.write_report(args.out, "Fashion-MNIST one-class", {
            "combined": command, **{f"run {i + 1}": s for i, s in enumerate(sources)}},
            [("Mean over classes", mean_table), ("Results", main_table)])
        return rows
    _common.setup(args)
    X_train_all, y_train_all, X_test, labels_test, rng = _common.fashion_mnist_protocol(
        args.root, args.n_test, args.seed
    )
    rows, cfgs = [], []

    def report():
        if args.json:
            _common.save_rows(args.json, rows, {"command": command, **settings})
        main_table, mean_table = _tables(rows, args.classes, args.detectors,
                                         _common.report_budgets(args, rows))
        _common.write_report(args.out, "Fashion-MNIST one-class",
                             {"command": command, **settings},
                             [("Mean over classes", mean_table), ("Results", main_table),
                              ("Parameters", _common.params_text(cfgs))])

    for c in args.classes:
        normal = np.flatnonzero(y_train_all == c)
        train_idx = np.sort(rng.choice(normal, min(args.n_train, normal.size), replace=False))
        X_train = X_train_all[train_idx]
        y_test = (labels_test != c).astype(int)
        label = f"{c} {FASHION_MNIST_CLASSES[c]}"
        if not args.no_baseline:
            rows.append({"class": label, "detector": BASELINE, "budget": "-",
                         **_common.baseline_row(X_train, X_test, y_test)})
        for budget in _common.run_budgets(args):
            for name, cls, params in _common.configs(args, args.image_size, task="one-class",
                                                     budget=budget):
                if (name, params) not in [(n, p) for n, _, p in cfgs]:
                    cfgs.append((name, cls, params))
                print(f"[class {c}] {name} {_common.budget_label(args, budget)} ...",
                      flush=True)
                row = _common.evaluate(cls, params, X_train, X_test, y_test)
                rows.append({"class": label, "detector": name,
                             "budget": _common.budget_label(args, budget), **row})
                report()  # partial results survive an interruption
    report()
    return rows


if __name__ == "__main__":
    main()
