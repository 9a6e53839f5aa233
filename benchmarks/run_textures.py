"""Benchmark: scikit-image textures with planted defects.

Normal training crops (40) and test crops (200) come from separate parts of each
texture (``skanomaly.datasets.make_texture_defects``); half of the test crops
receive a defect of a random kind (scratch, stain, foreign patch or smear,
every kind the generator plants, at its default sizes: 10-30 % of the crop
side) with an exact mask.  Every detector is fitted at each CPU budget
(``--budget``, presets in ``_common.BUDGETS``) next to the trivial baseline
|x - mean training image| (``tests/baseline.py``).  Reports image AUROC, its
margin over the baseline on the same texture, pixel AUROC (pooled over all
test pixels), PRO (AUPRO@0.3, anomalib's definition), fit and scoring time.
Each fitted detector is also scored with every ``image_score`` rule
(``skanomaly.image_scores``: "auto" = the method's own, "max",
"top_k_mean", "smoothed_max" at the default ``image_score_k``/``_sigma``),
reduced from the maps it returned (one fit and one scoring pass, several
rows; pixel measures are the same in each).

Crops larger than 205 px come from the texture resized to fit (the generator
takes test crops from the texture's lower 40 %; see
``_common.texture_source``).

Runs can be split over processes, each writing its rows as JSON
(``--json``), and joined into one table (``--combine``), where every
combination that did not run reads "not run"::

    OMP_NUM_THREADS=1 python benchmarks/run_textures.py --detectors dfr \
        --threads 1 --json dfr.json
    OMP_NUM_THREADS=1 python benchmarks/run_textures.py --detectors scadn \
        --budget small --no-baseline --threads 1 --json scadn.json
    python benchmarks/run_textures.py --combine dfr.json scadn.json \
        --out benchmarks/results_textures.md
"""

import shlex
import sys

import numpy as np

import _common

#: Image scores computed from each fitted detector's maps when the detectors
#: have ``image_score`` ("auto" = the method's own rule from its paper).
IMAGE_SCORES = ("auto", "max", "top_k_mean", "smoothed_max")
BASELINE = "baseline (mean image)"
KEYS = ["texture", "detector", "budget", "image score"]
KIND_NOTE = (
    "The detector's own image score.  pixel AUROC <kind>: the defect pixels of the "
    "crops with that kind of defect against every defect-free test pixel; image "
    "AUROC <kind>: those crops against the normal crops; defect pixels <kind>: that "
    "kind's share of all defect pixels.  Runs made before kinds were recorded have "
    "no row here.\n\n")
MEASURES = ("image AUROC", "SE", "vs baseline", "pixel AUROC", "PRO", "fit s", "score s")
SE_NOTE = (
    "SE: the image AUROC's standard error (Hanley & McNeil 1982, from the numbers of "
    "normal and defective test crops); a margin over the baseline has up to sqrt(2) "
    "times it (less when the two detectors' scores agree).\n\n")


def _image_score_variants(cls, params):
    """(rules to compute from the maps, label of the detector's own score)."""
    try:
        current = cls(**params).get_params().get("image_score")
    except Exception:  # pragma: no cover - a detector that cannot be built
        current = None
    if current is None:  # detectors without the parameter: the map's max
        return None, "max"
    return [s for s in IMAGE_SCORES[1:] if s != current], current


def _sections(rows, textures, detectors, budgets, n_test):
    """The report's tables: every combination ("not run" where none ran), the
    means over textures and, for rows that have them, the measures by kind.
    Rows without test counts (older runs) had ``n_test`` crops, half
    defective."""
    for row in rows:
        n_bad = row.get("n defective", n_test // 2)
        n_good = row.get("n normal", n_test - n_test // 2)
        row["SE"] = _common.auroc_se(row.get("image AUROC", np.nan), n_bad, n_good)
    for row in rows:  # margin over the baseline of the same texture
        base = [r for r in rows if r["texture"] == row["texture"] and r["detector"] == BASELINE]
        value = row.get("image AUROC")
        if base and isinstance(value, float) and row["detector"] != BASELINE:
            row["vs baseline"] = value - base[0]["image AUROC"]
    scores = {d: sorted({r["image score"] for r in rows if r["detector"] == d},
                        key=lambda s: IMAGE_SCORES.index(s) if s in IMAGE_SCORES else 9)
              or ["max"] for d in detectors}
    grid = []
    for texture in textures:
        grid.append((texture, BASELINE, "-", "max"))
        for d in detectors:
            for b in budgets:
                grid += [(texture, d, b, s) for s in scores[d]]
    table = _common.complete_rows(rows, KEYS, grid, MEASURES)
    means = []
    for combo in dict.fromkeys(g[1:] for g in grid):
        members = [r for r in table if tuple(r[k] for k in KEYS[1:]) == combo]
        mean = dict(zip(KEYS[1:], combo))
        ran = [r for r in members if isinstance(r.get("image AUROC"), float)]
        for m in MEASURES:
            vals = np.array([r.get(m, np.nan) for r in ran], dtype=float)
            if len(ran) < len(members):
                mean[m] = _common.NOT_RUN if not ran else f"{len(ran)}/{len(members)} ran"
            else:
                mean[m] = float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan
        means.append(mean)
    # The detector's own image score (the other rules' rows copy its map measures).
    by_kind = [r for r in rows if any(k.startswith("pixel AUROC ") for k in r)
               and (r["image score"] == "auto" or r["detector"] == BASELINE)]
    sections = [("Results", SE_NOTE + _common.markdown_table(table, KEYS, MEASURES)),
                ("Mean over textures", _common.markdown_table(means, KEYS[1:], MEASURES))]
    if by_kind:
        sections.append(("By kind of defect", KIND_NOTE + _common.markdown_table(
            by_kind, KEYS[:3], _common.kind_columns(by_kind))))
    return sections


def main(argv=None):
    parser = _common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--textures", nargs="+", default=["brick", "grass", "gravel"],
                        choices=["brick", "grass", "gravel"])
    parser.add_argument("--n-train", type=int, default=40)
    parser.add_argument("--n-test", type=int, default=200,
                        help="test crops, half defective (default: 200; with 40 an image "
                             "AUROC's standard error is about 0.09, and DFR's margins "
                             "over the baseline moved by up to 0.20 from a 40-crop draw "
                             "to a 200-crop one)")
    parser.add_argument("--image-size", type=int, default=256,
                        help="crop size in pixels = the detectors' image_size (default: 256)")
    _common.add_run_options(parser)
    args = parser.parse_args(argv)
    command = shlex.join(["python", "benchmarks/run_textures.py"] + sys.argv[1:])
    settings = {
        "textures": ", ".join(args.textures),
        "crops": f"{args.n_train} train, {args.n_test} test (half defective, one defect "
                 f"each, every kind, 10-30 % of the side), {args.image_size} px, "
                 f"image_size={args.image_size}",
        "budgets": " | ".join(_common.budget_text(args.detectors, preset=args.preset)),
        "preset": args.preset, "seed": args.seed,
        "metrics": _common.LOCALISATION_METRICS + "; 'vs baseline' = image AUROC minus "
                   "the baseline's on the same texture",
    }
    if args.combine:
        rows, sources = _common.load_rows(args.combine)
        _common.write_report(args.out, "Textures with planted defects", {
            "combined": command, **{f"run {i + 1}": s for i, s in enumerate(sources)}},
            _sections(rows, args.textures, args.detectors,
                      _common.report_budgets(args, rows), args.n_test))
        return rows
    _common.setup(args)
    rows = []

    def report():
        if args.json:
            _common.save_rows(args.json, rows, {"command": command, **settings})
        _common.write_report(args.out, "Textures with planted defects",
                             {"command": command, **settings},
                             _sections([dict(r) for r in rows], args.textures,
                                       args.detectors, _common.report_budgets(args, rows),
                                       args.n_test)
                             + [("Parameters", _common.params_text(cfgs))])

    cfgs = []
    for texture in args.textures:
        data = _common.texture_data(texture, args.image_size, args.n_train, args.n_test,
                                    args.seed)
        if not args.no_baseline:
            rows.append({"texture": texture, "detector": BASELINE, "budget": "-",
                         "image score": "max",
                         **_common.baseline_row(data.X_train, data.X_test, data.y_test,
                                                data.masks_test, data.kinds_test)})
        for budget in _common.run_budgets(args):
            for name, cls, params in _common.configs(args, args.image_size, budget=budget):
                if (name, params) not in [(n, p) for n, _, p in cfgs]:
                    cfgs.append((name, cls, params))
                rules, current = _image_score_variants(cls, params)
                print(f"[{texture}] {name} {_common.budget_label(args, budget)} ...",
                      flush=True)
                result = _common.evaluate(cls, params, data.X_train, data.X_test,
                                          data.y_test, data.masks_test,
                                          image_scores=rules or [],
                                          kinds_test=data.kinds_test)
                for rule, row in result:
                    rows.append({"texture": texture, "detector": name,
                                 "budget": _common.budget_label(args, budget),
                                 "image score": rule or current, **row})
                report()  # partial results survive an interruption
    report()
    return rows


if __name__ == "__main__":
    main()
