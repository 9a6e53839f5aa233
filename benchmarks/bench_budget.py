"""Quality against fit time on the CPU: each detector at three training budgets.

Budgets are fractions (default 1/4, 1/2, 1) of the ``quick`` preset's
``max_epochs`` (``benchmarks/_common.py: quick_params``); every other setting
is the preset's.  Two tasks, each with the trivial baseline
(|image - mean training image|, smoothed, image score = max; the same
function as the quality tests) in the same table:

- textures: scikit-image's brick with planted defects
  (``make_texture_defects``, 40 normal training crops, 40 test crops, half
  defective), image AUROC, pixel AUROC, PRO;
- Fashion-MNIST one-class (``--fmnist-classes``, default bags, the class on
  which the baseline is weakest): 200 normal training images of the class,
  400 random test images of all classes, image AUROC.

Example (about 20 minutes on one core)::

    python benchmarks/bench_budget.py --threads 1 --out benchmarks/results_budget.md
"""



import _common
from skanomaly.datasets import make_texture_defects

FMNIST = "/usr/share/datasets/fashion-mnist"


def _budgets(params, fractions):
    full = int(params["max_epochs"])
    return [(f, max(1, int(round(f * full)))) for f in fractions]


def main(argv=None):
    parser = _common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.25, 0.5, 1.0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--fmnist-classes", nargs="*", type=int, default=[8])
    args = parser.parse_args(argv)
    _common.setup(args)
    rows = []

    data = make_texture_defects("brick", n_train=40, n_test=40, image_size=args.image_size,
                                random_state=args.seed)
    rows.append({"task": "brick", "detector": "baseline (mean image)", "epochs": "-",
                 **_common.baseline_row(data.X_train, data.X_test, data.y_test, data.masks_test)})
    for name, cls, params in _common.configs(args, args.image_size):
        for _, epochs in _budgets(params, args.fractions):
            print(f"[brick] {name} {epochs} epochs ...", flush=True)
            row = _common.evaluate(cls, {**params, "max_epochs": epochs}, data.X_train,
                                   data.X_test, data.y_test, data.masks_test)
            rows.append({"task": "brick", "detector": name, "epochs": epochs, **row})

    if args.fmnist_classes:
        X_all, y_all, X_test, y_test, rng = _common.fashion_mnist_protocol(FMNIST, 400, args.seed)
        for c in args.fmnist_classes:
            X_train = X_all[y_all == c][:200]
            label = (y_test != c).astype(int)
            task = f"Fashion-MNIST {c}"
            rows.append({"task": task, "detector": "baseline (mean image)", "epochs": "-",
                         **_common.baseline_row(X_train, X_test, label)})
            for name, cls, params in _common.configs(args, 32, task="one-class"):
                for _, epochs in _budgets(params, args.fractions):
                    print(f"[{task}] {name} {epochs} epochs ...", flush=True)
                    row = _common.evaluate(cls, {**params, "max_epochs": epochs}, X_train,
                                           X_test, label)
                    rows.append({"task": task, "detector": name, "epochs": epochs, **row})

    _common.write_report(args.out, "Quality against fit time (CPU budgets)", {
        "budgets": ", ".join(f"{f:g} x the quick preset's max_epochs" for f in args.fractions),
        "brick": f"40 train / 40 test crops of {args.image_size} px, half defective",
        "Fashion-MNIST": "200 normal training images, 400 random test images, 32 px",
        "seed": args.seed, "metrics": _common.LOCALISATION_METRICS,
    }, [("Results", _common.markdown_table(rows, ["task", "detector", "epochs"]))])
    return rows


if __name__ == "__main__":
    main()
