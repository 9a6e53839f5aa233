"""Benchmark: MVTec AD (needs the data set on disk).

Trains on each category's ``train/good`` images and tests on its test set;
reports image AUROC, pixel AUROC (pooled over all test pixels, good images
included), PRO (AUPRO@0.3, anomalib's definition), fit and scoring time.
Images are resized when read (``--resize``, default 256) and each
detector's ``image_size`` follows it in the quick preset.

Example (GPU, the papers' settings)::

    python benchmarks/run_mvtec.py --root /data/mvtec_ad --preset paper \\
        --categories carpet grid leather tile wood --out benchmarks/results_mvtec.md
"""

import os

import _common
from skanomaly.datasets import load_mvtec_ad

CATEGORIES = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather",
              "metal_nut", "pill", "screw", "tile", "toothbrush", "transistor", "wood",
              "zipper")


def main(argv=None):
    parser = _common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="MVTec AD folder")
    parser.add_argument("--categories", nargs="+", default=None,
                        help="categories (default: every one found under --root)")
    parser.add_argument("--resize", type=int, default=256,
                        help="side length images are resized to when read (default: 256)")
    parser.add_argument("--max-train", type=int, default=None,
                        help="use at most this many training images (quick runs)")
    args = parser.parse_args(argv)
    _common.setup(args)
    if not os.path.isdir(args.root):
        parser.error(f"--root {args.root} does not exist")
    categories = args.categories or [c for c in CATEGORIES
                                     if os.path.isdir(os.path.join(args.root, c))]
    if not categories:
        parser.error(f"no MVTec AD category found under {args.root}")
    cfgs = _common.configs(args, args.resize)
    rows = []
    for category in categories:
        data = load_mvtec_ad(args.root, category, image_size=args.resize)
        X_train = data.X_train[: args.max_train] if args.max_train else data.X_train
        for name, cls, params in cfgs:
            print(f"[{category}] {name} ...", flush=True)
            row = _common.evaluate(cls, params, X_train, data.X_test, data.y_test,
                                   data.masks_test)
            rows.append({"category": category, "detector": name, **row})
    sections = [("Results", _common.markdown_table(rows, ["category", "detector"]))]
    if len(categories) > 1:
        sections.append(("Mean over categories", _common.markdown_table(
            _common.mean_rows(rows, "detector"), ["detector"])))
    sections.append(("Parameters", _common.params_text(cfgs)))
    _common.write_report(args.out, "MVTec AD", {
        "root": args.root, "categories": ", ".join(categories),
        "resize": f"{args.resize}x{args.resize}",
        "training images": f"at most {args.max_train}" if args.max_train else "all",
        "preset": args.preset, "seed": args.seed,
        "metrics": _common.LOCALISATION_METRICS,
    }, sections)
    return rows


if __name__ == "__main__":
    main()
