"""Benchmark: scikit-image textures with planted defects.

Normal training crops and test crops come from separate parts of each
texture (``skanomaly.datasets.make_texture_defects``); half of the test crops
receive synthetic scratches, stains, foreign patches or smears with exact
masks. Reports image AUROC, pixel AUROC (pooled over all test pixels), PRO
(AUPRO@0.3, anomalib's definition), fit and scoring time per detector.

Example (a few minutes on a CPU)::

    python benchmarks/run_textures.py --detectors dfr inpainting --threads 1 \\
        --out benchmarks/results_textures.md
"""

import _common
from skanomaly.datasets import make_texture_defects


def main(argv=None):
    parser = _common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--textures", nargs="+", default=["brick", "grass", "gravel"],
                        choices=["brick", "grass", "gravel"])
    parser.add_argument("--n-train", type=int, default=40)
    parser.add_argument("--n-test", type=int, default=40)
    parser.add_argument("--image-size", type=int, default=64, help="crop size in pixels")
    args = parser.parse_args(argv)
    _common.setup(args)
    cfgs = _common.configs(args, args.image_size)
    rows = []
    for texture in args.textures:
        data = make_texture_defects(texture, n_train=args.n_train, n_test=args.n_test,
                                    image_size=args.image_size, random_state=args.seed)
        for name, cls, params in cfgs:
            print(f"[{texture}] {name} ...", flush=True)
            row = _common.evaluate(cls, params, data.X_train, data.X_test, data.y_test,
                                   data.masks_test)
            rows.append({"texture": texture, "detector": name, **row})
    sections = [("Results", _common.markdown_table(rows, ["texture", "detector"]))]
    if len(args.textures) > 1:
        sections.append(("Mean over textures",
                         _common.markdown_table(_common.mean_rows(rows, "detector"),
                                                ["detector"])))
    sections.append(("Parameters", _common.params_text(cfgs)))
    _common.write_report(args.out, "Textures with planted defects", {
        "textures": ", ".join(args.textures),
        "crops": f"{args.n_train} train, {args.n_test} test (half defective), "
                 f"{args.image_size}x{args.image_size} px",
        "preset": args.preset, "seed": args.seed,
        "metrics": _common.LOCALISATION_METRICS,
    }, sections)
    return rows


if __name__ == "__main__":
    main()
