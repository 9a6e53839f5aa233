"""Which EfficientNet-Lite0 layers make DFR's best maps: a layer-set study.

DFR's ``scales`` come from the DFR paper's Table I for VGG19; the numbered
layers of ``backbone="efficientnet_lite0"`` (the stem, then its 16
inverted-residual blocks, ``skanomaly.backbones``) have no such table.  This
script fits ``DFRDetector(backbone="efficientnet_lite0",
weights="IMAGENET1K_V1")`` with several layer sets at one fixed CPU budget
(same epochs, batch, images for every set) on planted-defect textures
(``make_texture_defects``: brick, grass, gravel, every defect kind at the
generator's default sizes) at two crop sizes, and reports pixel AUROC, PRO,
image AUROC, the feature depth ``c_o``, ``c_d`` and fit seconds, per texture
and on average.

Lite0's layers by output stride (channels): 1 stem (s2, 32); 2 (s2, 16);
3-4 (s4, 24); 5-6 (s8, 40); 7-9 (s16, 80); 10-12 (s16, 112); 13-16 (s32,
192); 17 (s32, 320).

Example (the figures in ``results_dfr_layers.md``; about an hour on one
busy core)::

    OMP_NUM_THREADS=1 python benchmarks/bench_dfr_layers.py --threads 1 \\
        --out benchmarks/results_dfr_layers.md
"""

import argparse
import shlex
import sys

import _common
from skanomaly import DFRDetector

#: Named layer sets (label -> ``scales``).
LAYER_SETS = {
    "1-12 (default L=12)": 12,
    "1-6 (early, s2-s8)": 6,
    "3-12 (no stride-2 stage)": list(range(3, 13)),
    "2,4,6,12 (stage ends s2-s16)": [2, 4, 6, 12],
    "4,6,12 (stage ends s4-s16)": [4, 6, 12],
    "4,6,9,12 (s4-s16)": [4, 6, 9, 12],
    "6,9,12 (mid, s8-s16)": [6, 9, 12],
    "4,6,12,16 (s4-s32)": [4, 6, 12, 16],
    "2,4,6,12,16 (stage ends s2-s32)": [2, 4, 6, 12, 16],
}


class _Keep(DFRDetector):
    """DFRDetector recording ``c_o`` and ``c_d`` of its last fit."""

    fitted = {}

    def _fit(self, images):
        super()._fit(images)
        type(self).fitted = {"c_o": self.n_regional_features_, "c_d": self.latent_dim_}


_Keep.__name__ = "DFRDetector"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 256],
                        help="crop sizes in px = DFR image_size (default: 128 256)")
    parser.add_argument("--textures", nargs="+", default=["brick", "grass", "gravel"],
                        choices=["brick", "grass", "gravel"])
    parser.add_argument("--sets", nargs="+", default=list(LAYER_SETS),
                        choices=list(LAYER_SETS), metavar="LABEL",
                        help="layer sets to run (labels of LAYER_SETS; default: all)")
    parser.add_argument("--n-train", type=int, default=40)
    parser.add_argument("--n-test", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="markdown file to write")
    parser.add_argument("--knn", action="store_true",
                        help="instead of fitting DFR, score each test region by its distance "
                             "to the nearest of 8,000 random training regional vectors "
                             "(no training: what the features alone can separate)")
    args = parser.parse_args(argv)
    _common.setup(args)
    if args.knn:
        return knn_study(args)
    rows = []

    def report():
        keys = ["size", "layers", "texture"]
        measures = ("pixel AUROC", "PRO", "image AUROC", "c_o", "c_d", "fit s")
        means = []
        for size in args.sizes:
            for label in args.sets:
                members = [r for r in rows if r["size"] == size and r["layers"] == label]
                if len(members) == len(args.textures):
                    mean = _common.mean_rows(members, "layers", measures)[0]
                    means.append({"size": size, **mean})
        return _common.write_report(args.out, "DFR with EfficientNet-Lite0: layer sets", {
            "detector": f"DFRDetector(backbone='efficientnet_lite0', "
                        f"weights='IMAGENET1K_V1', image_size=<crop size>, "
                        f"max_epochs={args.epochs}, batch_size={args.batch_size}, "
                        f"random_state={args.seed}), scales as listed",
            "data": f"make_texture_defects, {args.n_train} train / {args.n_test} test crops "
                    f"(half defective, every defect kind, default sizes), textures "
                    f"{', '.join(args.textures)}; crops above 205 px come from the texture "
                    f"resized to fit (benchmarks/_common.py: texture_source)",
            "command": "OMP_NUM_THREADS=1 python " + shlex.join(
                ["benchmarks/bench_dfr_layers.py"] + sys.argv[1:]),
            "metrics": _common.LOCALISATION_METRICS,
        }, [("Mean over textures", _common.markdown_table(
                means, ["size", "layers"], measures)),
            ("Per texture", _common.markdown_table(rows, keys, measures))])

    for size in args.sizes:
        for texture in args.textures:
            data = _common.texture_data(texture, size, args.n_train, args.n_test, args.seed)
            for label in args.sets:
                params = {"backbone": "efficientnet_lite0", "weights": "IMAGENET1K_V1",
                          "scales": LAYER_SETS[label], "image_size": size,
                          "max_epochs": args.epochs, "batch_size": args.batch_size,
                          "random_state": args.seed}
                print(f"[{size} px {texture}] {label} ...", flush=True)
                _Keep.fitted = {}
                row = _common.evaluate(_Keep, params, data.X_train, data.X_test,
                                       data.y_test, data.masks_test)
                rows.append({"size": size, "layers": label, "texture": texture,
                             **_Keep.fitted, **row})
                report()  # partial results survive an interruption
    return rows


def knn_study(args, bank_size=8000):
    """Training-free reference: nearest-neighbour distance of regional vectors.

    The same regional features DFR reconstructs (``RegionalFeatures``), but
    each test region is scored by its Euclidean distance to the nearest of
    ``bank_size`` regional vectors drawn at random from the training crops;
    the grid map is upsampled bilinearly.  A layer set whose features do not
    separate the defects here gives the CAE nothing to learn either.  The
    report gives the measures by kind of defect too
    (``_common.kind_measures``): which kinds the features can see at all.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    from skanomaly import metrics
    from skanomaly.dfr.torch_model import RegionalFeatures

    def tensor(X):
        x = torch.from_numpy(np.asarray(X, dtype=np.float32) / 255.0)
        return x[:, None].expand(-1, 3, -1, -1) if x.ndim == 3 else x.permute(0, 3, 1, 2)

    def features(rf, X):
        with torch.inference_mode():
            return torch.cat([rf(tensor(X[i:i + 8])) for i in range(0, len(X), 8)])

    rows = []
    for size in args.sizes:
        for texture in args.textures:
            data = _common.texture_data(texture, size, args.n_train, args.n_test, args.seed)
            for label in args.sets:
                scales = LAYER_SETS[label]
                layers = list(range(1, scales + 1)) if isinstance(scales, int) else scales
                rf = RegionalFeatures("efficientnet_lite0", "IMAGENET1K_V1", layers, size)
                train, test = features(rf, data.X_train), features(rf, data.X_test)
                c = train.shape[1]
                bank = train.permute(0, 2, 3, 1).reshape(-1, c)
                pick = torch.randperm(len(bank), generator=torch.Generator().manual_seed(0))
                bank = bank[pick[:bank_size]]
                query = test.permute(0, 2, 3, 1).reshape(-1, c)
                dist = torch.cat([torch.cdist(q, bank).min(dim=1).values
                                  for q in query.split(4096)])
                grid = dist.reshape(test.shape[0], 1, test.shape[2], test.shape[3])
                maps = F.interpolate(grid, size=(size, size), mode="bilinear")[:, 0].numpy()
                scores = maps.max(axis=(1, 2))
                rows.append({
                    "size": size, "layers": label, "texture": texture, "c_o": c,
                    "pixel AUROC": metrics.pixel_auroc(data.masks_test, maps),
                    "PRO": metrics.pro_score(data.masks_test, maps),
                    "image AUROC": metrics.image_auroc(data.y_test, scores),
                    **_common.kind_measures(data.y_test, data.masks_test, data.kinds_test,
                                            scores, maps)})
                print(rows[-1], flush=True)
    by_kind = _common.kind_columns(rows, ("pixel AUROC", "defect pixels"))
    keys = ["size", "layers", "texture"]
    _common.write_report(args.out, "DFR's features without training: nearest neighbours", {
        "reference": f"each test region scored by its distance to the nearest of {bank_size} "
                     "random training regional vectors of "
                     "RegionalFeatures('efficientnet_lite0', 'IMAGENET1K_V1', layers, "
                     "<crop size>); map upsampled bilinearly; image score = its maximum",
        "data": f"make_texture_defects, {args.n_train} train / {args.n_test} test crops "
                f"(half defective, every defect kind, default sizes), seed {args.seed}",
        "by kind": "pixel AUROC <kind>: the defect pixels of the crops with that kind "
                   "against every defect-free test pixel; defect pixels <kind>: that "
                   "kind's share of all defect pixels",
        "command": "OMP_NUM_THREADS=1 python " + shlex.join(
            ["benchmarks/bench_dfr_layers.py"] + sys.argv[1:]),
    }, [("Pooled", _common.markdown_table(rows, keys, ("pixel AUROC", "PRO", "image AUROC",
                                                         "c_o"))),
        ("By kind of defect", _common.markdown_table(rows, keys, by_kind))])
    return rows


if __name__ == "__main__":
    main()
