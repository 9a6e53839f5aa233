"""Evaluation report: one self-contained HTML page about a fitted detector.

:func:`evaluation_report` scores labelled test images once and writes a page
with image AUROC, pixel AUROC and PRO (from :mod:`skanomaly.metrics`), ROC
and PRO curves and a score histogram (matplotlib, through
:mod:`skanomaly.plotting`), the detector's decision thresholds with the
confusion counts they give, and galleries of heatmap overlays: the most
anomalous images, the missed ones (anomalous, predicted normal) and the
falsely flagged ones (normal, predicted anomalous).

The page needs nothing but itself: figures are embedded as base64 PNG data
URIs, styles and the one small script are inline, and a Content Security
Policy forbids the browser to fetch anything else.  The command
``skanomaly evaluate`` builds it from a saved detector and a folder of test
images; :func:`masks_for_images` and :func:`mvtec_category` find the ground
truth it needs.
"""

from __future__ import annotations

import base64
import html
import io
import os
from numbers import Integral
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix
from sklearn.utils import Bunch
from sklearn.utils.validation import check_is_fitted

from ._files import atomic_path
from . import metrics

__all__ = ["evaluation_report", "masks_for_images", "mvtec_category"]

#: Suffixes of the mask file stems accepted for an image ``<stem>.<ext>``.
MASK_SUFFIXES = ("_mask", "")


# ---------------------------------------------------------------- ground truth


def mvtec_category(folder):
    """Recognise an MVTec AD category folder (or its ``test`` folder).

    Parameters
    ----------
    folder : str or path-like
        A folder given as test images.

    Returns
    -------
    found : tuple (root, category) or None
        ``root`` and ``category`` for
        :func:`skanomaly.datasets.load_mvtec_ad` when ``folder`` is a
        category (it holds ``test/`` and ``ground_truth/``) or that
        category's ``test/`` folder; ``None`` for any other folder.
    """
    folder = Path(os.fspath(folder)).expanduser().resolve()
    if folder.name == "test" and (folder.parent / "ground_truth").is_dir():
        folder = folder.parent
    if (folder / "test").is_dir() and (folder / "ground_truth").is_dir():
        return folder.parent, folder.name
    return None


def masks_for_images(image_paths, mask_dir, shape):
    """Ground-truth masks for images from a folder of mask files.

    The mask of ``<stem>.<ext>`` is ``<stem>_mask.<ext2>`` or
    ``<stem>.<ext2>`` in ``mask_dir`` (any image extension; more than one
    such file is an error).  Pixels non-zero in any channel are defects
    (as in :func:`skanomaly.datasets.load_image_folder`); an image without a mask file
    gets an empty mask, i.e. it is normal.

    Parameters
    ----------
    image_paths : sequence of str or path-like
        The test images.
    mask_dir : str or path-like
        Folder of mask files.
    shape : tuple of int (H, W)
        Size to read the masks at (nearest-neighbour resizing), that of the
        images as the detector reads them.

    Returns
    -------
    masks : ndarray of shape (n, H, W), dtype=bool
    mask_paths : list of str or None
        The file read for each image, ``None`` where there is none.

    Raises
    ------
    FileNotFoundError
        When ``mask_dir`` is not a folder.
    ValueError
        When the folder holds mask files but none matches an image name (a
        naming mistake would otherwise make every image normal), an image has
        more than one mask file, the mask folder is the image folder, or a
        file cannot be read as an image.
    """
    from .datasets._io import list_image_files, read_masks

    mask_dir = Path(os.fspath(mask_dir)).expanduser()
    if not mask_dir.is_dir():
        raise FileNotFoundError(f"Mask folder {mask_dir} does not exist or is not a folder.")
    if any(Path(os.fspath(p)).resolve().parent == mask_dir.resolve() for p in image_paths):
        raise ValueError(
            f"The mask folder {mask_dir} holds the test images themselves; keep the masks "
            f"in a folder of their own."
        )
    available = {}
    for p in list_image_files(mask_dir):
        available.setdefault(p.stem, []).append(p)
    masks = np.zeros((len(image_paths),) + tuple(shape), dtype=bool)
    mask_paths = []
    for i, image in enumerate(image_paths):
        stem = Path(os.fspath(image)).stem
        candidates = [p for s in MASK_SUFFIXES for p in available.get(stem + s, [])]
        if len(candidates) > 1:
            raise ValueError(
                f"{len(candidates)} files in {mask_dir} could be the mask of {image} "
                f"({', '.join(p.name for p in candidates)}); keep one."
            )
        found = candidates[0] if candidates else None
        mask_paths.append(None if found is None else str(found))
        if found is not None:
            masks[i] = read_masks([found], shape)[0]
    if available and all(m is None for m in mask_paths):
        example = Path(os.fspath(image_paths[0])).stem if len(image_paths) else "image"
        raise ValueError(
            f"None of the {len(available)} mask files in {mask_dir} matches a test image; "
            f"name the mask of {example}.png {example}_mask.png (or {example}.png)."
        )
    return masks, mask_paths


# ---------------------------------------------------------------- checks


def _check_images(X):
    if hasattr(X, "detach"):  # torch tensor (n, C, H, W) -> channels last
        X = np.moveaxis(X.detach().cpu().numpy(), 1, -1)
    X = np.asarray(X)
    if X.ndim == 4 and X.shape[-1] == 1:
        X = X[..., 0]
    if X.ndim not in (3, 4) or (X.ndim == 4 and X.shape[-1] != 3):
        raise ValueError(
            f"evaluation_report needs images of shape (n, H, W) or (n, H, W, 3); got "
            f"shape {X.shape}. Reshape flattened images to their (H, W) first."
        )
    if len(X) == 0:
        raise ValueError("evaluation_report got no images.")
    return X


def _check_truth(y, masks, n, shape):
    if y is None and masks is None:
        raise ValueError(
            "evaluation_report needs ground truth: pass y (1 = anomalous image) "
            "and/or masks (n, H, W) with the defective pixels set."
        )
    if masks is not None:
        masks = metrics.anomaly_labels(masks, name="masks")
        if masks.shape != (n,) + tuple(shape):
            raise ValueError(
                f"masks must have the images' shape {(n,) + tuple(shape)}; got {masks.shape}."
            )
    if y is None:
        return masks.reshape(n, -1).any(axis=1), masks
    y = metrics.anomaly_labels(y)
    if y.shape != (n,):
        raise ValueError(f"y must hold one label per image ({n}); got shape {y.shape}.")
    if masks is not None:
        wrong = np.flatnonzero(~y & masks.reshape(n, -1).any(axis=1))
        if wrong.size:
            raise ValueError(
                f"{wrong.size} image(s) labelled normal in y have defect pixels in masks "
                f"(first: index {wrong[0]}); fix y or masks."
            )
    return y, masks


# ---------------------------------------------------------------- figures


def _figure(figsize):
    from .plotting import _mpl  # the actionable ImportError without matplotlib

    _, Figure = _mpl()
    return Figure(figsize=figsize, dpi=100)


def _png_uri(fig, dpi=100):
    """A figure as a ``data:image/png;base64,...`` URI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _roc_figure(y, anomaly, predicted, masks, maps, pixel_threshold):
    from .plotting import plot_roc_curve

    fig = _figure((4.2, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    if y.any() and not y.all():
        plot_roc_curve(y, anomaly, label="images", ax=ax)
        fpr = predicted[~y].mean()
        tpr = predicted[y].mean()
        ax.plot([fpr], [tpr], "o", color="C0", label="image threshold")
    if masks is not None and masks.any() and not masks.all():
        plot_roc_curve(masks.ravel(), maps.ravel(), label="pixels", ax=ax)
        if pixel_threshold is not None:
            flagged = maps > pixel_threshold
            ax.plot([flagged[~masks].mean()], [flagged[masks].mean()], "s", color="C1",
                    label="pixel threshold")
    ax.set_title("ROC")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig


def _pro_figure(masks, maps):
    from .plotting import plot_pro_curve

    fig = _figure((4.2, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    plot_pro_curve(masks, maps, ax=ax)
    ax.set_title("Per-region overlap (PRO)")
    fig.tight_layout()
    return fig


def _histogram_figure(y, anomaly, threshold):
    fig = _figure((4.2, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    bins = np.histogram_bin_edges(np.r_[anomaly, threshold], bins=min(30, max(8, len(y) // 3)))
    for label, keep, colour in (("normal", ~y, "C2"), ("anomalous", y, "C3")):
        if keep.any():
            ax.hist(anomaly[keep], bins=bins, alpha=0.6, color=colour,
                    label=f"{label} ({int(keep.sum())})")
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label="threshold")
    ax.set_xlabel("Image anomaly score (-score_samples)")
    ax.set_ylabel("Images")
    ax.set_title("Scores")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _overlay_uri(image, heat, mask, threshold, vmin, vmax):
    from .plotting import plot_anomaly_maps

    fig = plot_anomaly_maps(
        image[None], heat[None], masks=None if mask is None else mask[None],
        threshold=threshold, n_cols=1, vmin=vmin, vmax=vmax, panel_size=1.6,
    )
    return _png_uri(fig)


# ---------------------------------------------------------------- HTML pieces

_CSS = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #e4e7eb; --bg: #f5f7fa;
        --good: #2f8f5b; --bad: #c0392b; --accent: #2d6cdf; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: var(--bg); }
header { background: #1f2933; color: #fff; padding: 22px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; font-weight: 600; }
header p { margin: 0; color: #cbd2d9; font-size: 13px; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 24px 40px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
          padding: 16px 20px; margin: 0 0 18px; }
h2 { font-size: 17px; margin: 0 0 12px; }
.cards { display: flex; gap: 14px; flex-wrap: wrap; }
.card { flex: 1 1 160px; border: 1px solid var(--line); border-radius: 8px;
        padding: 12px 16px; background: #fbfcfd; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase;
               letter-spacing: .04em; }
.card .value { font-size: 30px; font-weight: 650; font-variant-numeric: tabular-nums; }
.card .note { color: var(--muted); font-size: 12px; }
.na { color: var(--muted); font-size: 20px !important; }
.row { display: flex; gap: 18px; flex-wrap: wrap; align-items: flex-start; }
.row > div { flex: 1 1 330px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: 14px; }
th, td { border: 1px solid var(--line); padding: 5px 10px; text-align: right; }
th { background: #f0f2f5; font-weight: 600; }
td.ok { color: var(--good); font-weight: 600; }
td.err { color: var(--bad); font-weight: 600; }
.figs { display: flex; gap: 12px; flex-wrap: wrap; }
.figs img { width: calc(33.33% - 8px); min-width: 280px; border: 1px solid var(--line);
            border-radius: 6px; }
.gallery { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; width: calc(25% - 9px); min-width: 220px; border: 1px solid var(--line);
         border-radius: 6px; padding: 6px; background: #fff; }
figure img { width: 100%; display: block; image-rendering: auto; }
figcaption { font-size: 12px; margin-top: 4px; overflow-wrap: anywhere; }
.tag { display: inline-block; border-radius: 10px; padding: 0 7px; font-size: 11px;
       color: #fff; margin-right: 3px; }
.tag.anomalous { background: var(--bad); } .tag.normal { background: var(--good); }
.hint { color: var(--muted); font-size: 13px; margin: 4px 0 10px; }
.empty { color: var(--muted); font-style: italic; }
details summary { cursor: pointer; font-weight: 600; }
code { background: #f0f2f5; padding: 0 4px; border-radius: 3px; }
"""

# Counts the images the browser could decode, for checks of the page.
_SCRIPT = """
window.addEventListener("load", function () {
  var images = document.images, loaded = 0;
  for (var i = 0; i < images.length; i++) {
    if (images[i].complete && images[i].naturalWidth > 0) { loaded++; }
  }
  document.body.setAttribute("data-images-total", String(images.length));
  document.body.setAttribute("data-images-loaded", String(loaded));
});
"""

_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'")


def _esc(value):
    return html.escape(str(value), quote=True)


def _metric_card(key, label, value, note, why_missing):
    if value is None:
        shown = f'<div class="value na" id="{key}" data-value="">n/a</div>'
        note = why_missing
    else:
        shown = (f'<div class="value" id="{key}" data-value="{value!r}">'
                 f"{value:.3f}</div>")
    return (f'<div class="card"><div class="label">{_esc(label)}</div>{shown}'
            f'<div class="note">{_esc(note)}</div></div>')


def _confusion_table(prefix, counts, unit):
    tn, fp, fn, tp = (counts[k] for k in ("tn", "fp", "fn", "tp"))
    return (
        f'<table id="{prefix}-confusion"><tr><th>{_esc(unit)}</th>'
        "<th>predicted normal</th><th>predicted anomalous</th></tr>"
        f'<tr><th>normal</th><td class="ok" id="{prefix}-tn">{tn}</td>'
        f'<td class="err" id="{prefix}-fp">{fp}</td></tr>'
        f'<tr><th>anomalous</th><td class="err" id="{prefix}-fn">{fn}</td>'
        f'<td class="ok" id="{prefix}-tp">{tp}</td></tr></table>'
    )


def _tag(anomalous):
    word = "anomalous" if anomalous else "normal"
    return f'<span class="tag {word}">{word}</span>'


def _gallery(key, title, hint, indices, total, uris, names, anomaly, y, predicted, empty):
    parts = [f'<section id="gallery-{key}" data-count="{total}" data-shown="{len(indices)}">',
             f"<h2>{_esc(title)} <small>({len(indices)} of {total} shown)</small></h2>",
             f'<p class="hint">{_esc(hint)}</p>']
    if not indices:
        parts.append(f'<p class="empty">{_esc(empty)}</p>')
    else:
        parts.append('<div class="gallery">')
        for i in indices:
            parts.append(
                f'<figure data-index="{i}"><img alt="{_esc(names[i])}" src="{uris[i]}">'
                f"<figcaption><b>{_esc(names[i])}</b> &middot; score {anomaly[i]:.4g}<br>"
                f"true {_tag(y[i])} predicted {_tag(predicted[i])}</figcaption></figure>"
            )
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _write_atomic(path, text):
    path = Path(os.fspath(path))
    folder = path.resolve().parent
    if not folder.is_dir():
        raise FileNotFoundError(f"Folder {folder} does not exist; cannot write {path}.")
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give the report a file name ending in .html.")
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------- the report


def evaluation_report(detector, X, y=None, *, masks=None, names=None, path,
                      title=None, n_gallery=8):
    """Evaluate a fitted detector on labelled images and write an HTML report.

    The images are scored in one pass (``score_and_transform``); the page
    shows image AUROC, pixel AUROC and PRO (:mod:`skanomaly.metrics`), ROC
    and PRO curves, a histogram of the scores, the decision thresholds with
    their confusion counts, per-image scores, and galleries of heatmap
    overlays: the most anomalous images, the missed anomalous images and the
    falsely flagged normal ones.

    Parameters
    ----------
    detector : skanomaly detector
        A fitted detector (``offset_`` set).
    X : array-like of shape (n, H, W) or (n, H, W, C)
        Test images of the size the detector was fitted on, ``C`` in {1, 3};
        a torch tensor ``(n, C, H, W)`` is accepted too.
    y : array-like of shape (n,), default=None
        Image labels, 1 (or ``True``, or scikit-learn's ``-1``) for
        anomalous images.  ``None`` derives them from ``masks``: an image is
        anomalous when its mask has a pixel set.
    masks : array-like of shape (n, H, W), default=None
        Ground-truth defect masks (nonzero = defect); needed for pixel
        AUROC, PRO and the pixel confusion counts.
    names : sequence of str, default=None
        One name per image for the galleries and the score table (e.g. file
        names); default ``"image 0"``, ``"image 1"``, ...
    path : str or path-like
        The HTML file to write (its folder must exist); written atomically.
    title : str, default=None
        Page title; default names the detector class.
    n_gallery : int, default=8
        Images shown at most in each gallery.

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        ``image_auroc``, ``pixel_auroc``, ``pro`` (``None`` where the ground
        truth cannot define them: one class only, or no masks); ``offset``
        (the detector's ``offset_``) and ``pixel_threshold`` (its
        ``threshold_`` or ``None``); ``confusion`` and ``pixel_confusion``
        (dicts ``tn``, ``fp``, ``fn``, ``tp``; the latter ``None`` without
        masks or ``threshold_``); ``n_images``, ``n_anomalous`` and ``path``.

    Raises
    ------
    ValueError
        When the detector is not fitted, no ground truth is given, labels,
        masks or names do not match the images, or ``n_gallery`` is not a
        positive integer.
    """
    check_is_fitted(detector, "offset_")
    X = _check_images(X)
    n = len(X)
    y, masks = _check_truth(y, masks, n, X.shape[1:3])
    if names is None:
        names = [f"image {i}" for i in range(n)]
    names = [str(name) for name in names]
    if len(names) != n:
        raise ValueError(f"Got {n} images but {len(names)} names.")
    if not isinstance(n_gallery, Integral) or isinstance(n_gallery, bool) or n_gallery < 1:
        raise ValueError(f"n_gallery must be a positive integer; got {n_gallery!r}.")

    scores, maps = detector.score_and_transform(X)  # one pass for both answers
    maps = np.asarray(maps, dtype=np.float32).reshape(X.shape[:3])
    anomaly = -np.asarray(scores, dtype=np.float64)
    offset = float(detector.offset_)
    # predict's rule (decision_function < 0), without another pass.
    predicted = (np.asarray(scores, dtype=np.float64) - offset) < 0
    pixel_threshold = getattr(detector, "threshold_", None)
    pixel_threshold = None if pixel_threshold is None else float(pixel_threshold)

    both_images = bool(y.any() and not y.all())
    both_pixels = masks is not None and bool(masks.any() and not masks.all())
    result = Bunch(
        image_auroc=metrics.image_auroc(y, anomaly) if both_images else None,
        pixel_auroc=metrics.pixel_auroc(masks, maps) if both_pixels else None,
        pro=metrics.pro_score(masks, maps) if both_pixels else None,
        offset=offset,
        pixel_threshold=pixel_threshold,
        n_images=n,
        n_anomalous=int(y.sum()),
        path=str(path),
    )
    tn, fp, fn, tp = confusion_matrix(y, predicted, labels=[False, True]).ravel()
    result.confusion = dict(tn=int(tn), fp=int(fp), fn=int(fn), tp=int(tp))
    result.pixel_confusion = None
    if masks is not None and pixel_threshold is not None:
        cm = confusion_matrix(masks.ravel(), (maps > pixel_threshold).ravel(),
                              labels=[False, True]).ravel()
        result.pixel_confusion = dict(zip(("tn", "fp", "fn", "tp"), map(int, cm)))

    # Galleries: the most anomalous images; anomalous images predicted normal,
    # the least anomalous-looking first; normal images flagged, worst first.
    by_score = np.argsort(-anomaly, kind="stable")
    top = by_score[:n_gallery].tolist()
    missed_all = [i for i in by_score[::-1] if y[i] and not predicted[i]]
    false_all = [i for i in by_score if not y[i] and predicted[i]]
    missed, false = missed_all[:n_gallery], false_all[:n_gallery]
    vmin, vmax = float(maps.min()), float(maps.max())
    uris = {}
    for i in dict.fromkeys(top + missed + false):
        uris[i] = _overlay_uri(X[i], maps[i], None if masks is None else masks[i],
                               pixel_threshold, vmin, vmax)

    figures = []
    if both_images or both_pixels:
        figures.append(("Image and pixel ROC curves", _roc_figure(
            y, anomaly, predicted, masks, maps, pixel_threshold)))
    if both_pixels:
        figures.append(("PRO curve", _pro_figure(masks, maps)))
    figures.append(("Histogram of image anomaly scores", _histogram_figure(
        y, anomaly, -offset)))

    title = title or f"Evaluation of {type(detector).__name__}"
    one_class = "needs both normal and anomalous images"
    no_masks = "needs masks with defect and normal pixels"
    cards = "".join([
        _metric_card("image-auroc", "Image AUROC", result.image_auroc,
                     "detection: -score_samples vs labels", one_class),
        _metric_card("pixel-auroc", "Pixel AUROC", result.pixel_auroc,
                     "localisation: all pixels pooled", no_masks),
        _metric_card("pro", "PRO (AUPRO@0.3)", result.pro,
                     "per-region overlap up to FPR 0.3", no_masks),
    ])
    image_rule = (
        f'An image is predicted anomalous when <code>score_samples &lt; offset_</code> = '
        f'<b id="image-threshold" data-value="{offset!r}">{offset:.6g}</b>, '
        f"i.e. when its anomaly score exceeds {-offset:.6g}."
    )
    thresholds = [f'<div><h2>Image decision</h2><p class="hint">{image_rule}</p>'
                  + _confusion_table("image", result.confusion, "images") + "</div>"]
    if pixel_threshold is not None:
        pixel_rule = (
            f"A pixel is flagged when its heatmap value exceeds <code>threshold_</code> = "
            f'<b id="pixel-threshold" data-value="{pixel_threshold!r}">'
            f"{pixel_threshold:.6g}</b>."
        )
        table = (_confusion_table("pixel", result.pixel_confusion, "pixels")
                 if result.pixel_confusion else '<p class="empty">No masks: no pixel counts.</p>')
        thresholds.append(f'<div><h2>Pixel decision</h2><p class="hint">{pixel_rule}</p>'
                          f"{table}</div>")
    params = ", ".join(f"{k}={v!r}" for k, v in sorted(detector.get_params(deep=False).items()))
    overlay_hint = (
        "Left: the image; right: its heatmap (one colour scale for the whole page, "
        f"{vmin:.3g} to {vmax:.3g})"
        + (", green: ground-truth defect" if masks is not None else "")
        + (", dashed red: pixels above threshold_" if pixel_threshold is not None else "")
        + ". Score = anomaly score (-score_samples)."
    )
    rows = "\n".join(
        f'<tr><td style="text-align:left">{_esc(names[i])}</td><td>{anomaly[i]:.6g}</td>'
        f"<td>{_tag(y[i])}</td><td>{_tag(predicted[i])}</td></tr>"
        for i in by_score
    )
    from . import __version__

    body = [
        f"<header><h1>{_esc(title)}</h1><p>{n} test images, {result.n_anomalous} anomalous"
        f" &middot; {X.shape[1]}&times;{X.shape[2]} px &middot; skanomaly {__version__}</p>"
        "</header><main>",
        f'<section id="metrics"><h2>Metrics</h2><div class="cards">{cards}</div></section>',
        f'<section id="thresholds"><div class="row">{"".join(thresholds)}</div></section>',
        '<section id="curves"><h2>Curves</h2><div class="figs">'
        + "".join(f'<img alt="{_esc(t)}" title="{_esc(t)}" src="{_png_uri(f)}">'
                  for t, f in figures)
        + "</div></section>",
        _gallery("top", "Most anomalous images", overlay_hint, top, n, uris, names,
                 anomaly, y, predicted, "No images."),
        _gallery("missed", "Missed: anomalous images predicted normal",
                 "Lowest anomaly score first: the clearest misses.",
                 missed, len(missed_all), uris, names, anomaly, y, predicted,
                 "None: every anomalous image was flagged."),
        _gallery("false", "Falsely flagged: normal images predicted anomalous",
                 "Highest anomaly score first.", false, len(false_all), uris, names,
                 anomaly, y, predicted,
                 "None: no normal image was flagged."),
        f'<section id="scores"><details><summary>All {n} images by anomaly score'
        "</summary><table><tr><th>image</th><th>score</th><th>true</th><th>predicted</th>"
        f"</tr>\n{rows}\n</table></details></section>",
        f'<section id="detector"><h2>Detector</h2><p><b>{_esc(type(detector).__name__)}'
        f"</b></p><p class=\"hint\">{_esc(params)}</p></section>",
        "</main>",
    ]
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n"
        f"<script>{_SCRIPT}</script>\n</head>\n<body>\n" + "\n".join(body)
        + "\n</body></html>\n"
    )
    _write_atomic(path, page)
    return result
