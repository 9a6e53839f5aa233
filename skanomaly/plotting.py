"""Figures for anomaly detection: heatmap overlays, ROC and PRO curves.

Matplotlib is an optional dependency (``pip install skanomaly[plot]``); it is
imported when a function here is called. Figures are built with
:class:`matplotlib.figure.Figure` directly, never through ``pyplot``, so they
work in scripts, servers and notebooks alike without touching global state;
in a notebook, display a returned figure by leaving it as a cell's last
expression.

Sign conventions follow the rest of skanomaly: heatmaps (from
``detector.transform``) and anomaly scores are *higher for more anomalous*.
Detectors' ``score_samples`` is higher for more *normal*, so pass
``-detector.score_samples(X)`` to :func:`plot_roc_curve`.
"""

import os
from numbers import Real

import numpy as np

from ._docstrings import fill_doc
from ._optional import import_optional

__all__ = [
    "plot_anomaly_map",
    "plot_anomaly_maps",
    "plot_pro_curve",
    "plot_roc_curve",
    "save_figure",
]


def _mpl():
    """Import matplotlib lazily, with an actionable error when it is absent."""
    missing = (
        "skanomaly.plotting needs matplotlib: pip install skanomaly[plot] "
        "(or pip install matplotlib)."
    )
    matplotlib = import_optional("matplotlib", missing)
    return matplotlib, import_optional("matplotlib.figure", missing).Figure


def _new_axes(ax, figsize, dpi):
    """Return (figure, axes): ``ax``'s own, or a new single-axes figure."""
    if ax is not None:
        return ax.figure, ax
    _, Figure = _mpl()
    fig = Figure(figsize=figsize, dpi=dpi)
    return fig, fig.add_subplot(1, 1, 1)


def save_figure(fig, path, *, dpi=None):
    """Save a figure to ``path`` (format from the extension, e.g. PNG).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    path : str or path-like
        Output file; its folder must exist.
    dpi : float, default=None
        Resolution; ``None`` keeps the figure's own.

    Returns
    -------
    path : str
        The path written.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Folder {folder} does not exist; cannot save {path}.")
    fig.savefig(path, dpi=dpi if dpi is not None else fig.dpi)
    return path


def _as_display_image(image):
    """(H, W) grey or (H, W, 3) RGB float image in [0, 1] for imshow."""
    arr = np.asarray(image)
    if hasattr(image, "detach"):
        arr = image.detach().cpu().numpy()
        if arr.ndim == 3 and arr.shape[0] in (1, 3):
            arr = np.moveaxis(arr, 0, -1)  # tensors are channels first
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] != 3 and arr.shape[0] in (1, 3):
        arr = np.moveaxis(arr, 0, -1)
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
        raise ValueError(
            f"An image must be (H, W), (H, W, 1) or (H, W, 3); got shape {np.shape(image)}."
        )
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("The image contains NaN or infinite values.")
    return np.clip(arr, 0.0, 1.0)


def _as_map(values, shape, name):
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1 and arr.size == shape[0] * shape[1]:
        arr = arr.reshape(shape)
    if arr.shape != tuple(shape):
        raise ValueError(
            f"{name} must have the image's size {tuple(shape)}; got shape {arr.shape}."
        )
    return arr


def plot_anomaly_map(
    image,
    heatmap,
    *,
    mask=None,
    predicted=None,
    threshold=None,
    alpha=0.5,
    cmap="jet",
    vmin=None,
    vmax=None,
    title=None,
    ax=None,
    figsize=(4.0, 4.0),
    dpi=100,
):
    """Overlay an anomaly heatmap, ground truth and prediction on an image.

    Parameters
    ----------
    image : array-like of shape (H, W), (H, W, 1) or (H, W, 3)
        The image; ``uint8`` means 0-255, floats 0-1.
    heatmap : array-like of shape (H, W) or (H * W,)
        Pixel anomaly scores (higher = more anomalous), e.g. one row of
        ``detector.transform(X)``.
    mask : array-like of shape (H, W), default=None
        Ground-truth defect mask, drawn as a green contour.
    predicted : array-like of shape (H, W), default=None
        Predicted defect mask (e.g. from ``detector.segment``), drawn as a
        dashed red contour.
    threshold : float, default=None
        When ``predicted`` is None, draw the contour of ``heatmap > threshold``
        instead (e.g. ``detector.threshold_``).
    alpha : float, default=0.5
        Opacity of the heatmap over the image.
    cmap : str, default="jet"
        Colour map of the heatmap.
    vmin, vmax : float, default=None
        Heatmap colour limits; ``None`` uses the heatmap's own minimum and
        maximum.
    title : str, default=None
        Axes title.  Matplotlib draws text between two ``$`` as mathtext; for
        a title that must appear as it is (a file name), call
        ``ax.title.set(parse_math=False)`` on the returned axes.
    ax : matplotlib.axes.Axes, default=None
        Axes to draw on; ``None`` makes a new figure of ``figsize`` and
        ``dpi``.
    figsize : tuple of float, default=(4.0, 4.0)
        Size in inches of a new figure.
    dpi : float, default=100
        Resolution of a new figure.

    Returns
    -------
    ax : matplotlib.axes.Axes
        The axes drawn on (``ax.figure`` is the figure).
    """
    img = _as_display_image(image)
    shape = img.shape[:2]
    heat = _as_map(heatmap, shape, "heatmap")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}.")
    _, ax = _new_axes(ax, figsize, dpi)
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0.0, vmax=1.0,
              interpolation="nearest")
    finite = heat[np.isfinite(heat)]
    lo = vmin if vmin is not None else (finite.min() if finite.size else 0.0)
    hi = vmax if vmax is not None else (finite.max() if finite.size else 1.0)
    if hi <= lo:
        hi = lo + 1e-12
    ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=lo, vmax=hi, interpolation="bilinear")
    if mask is not None:
        gt = _as_map(mask, shape, "mask") > 0.5
        if gt.any() and not gt.all():
            ax.contour(gt.astype(float), levels=[0.5], colors="lime", linewidths=1.2)
    if predicted is None and threshold is not None:
        if not isinstance(threshold, Real):
            raise TypeError(f"threshold must be a number; got {threshold!r}.")
        predicted = heat > threshold
    if predicted is not None:
        pred = _as_map(predicted, shape, "predicted") > 0.5
        if pred.any() and not pred.all():
            ax.contour(pred.astype(float), levels=[0.5], colors="red",
                       linewidths=1.2, linestyles="dashed")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=8)
    return ax


def plot_anomaly_maps(
    images,
    heatmaps,
    *,
    masks=None,
    predicted=None,
    threshold=None,
    scores=None,
    labels=None,
    n_cols=4,
    show_image=True,
    alpha=0.5,
    cmap="jet",
    vmin=None,
    vmax=None,
    panel_size=2.0,
    dpi=100,
    path=None,
):
    """A grid of heatmap overlays, one (or two) panels per image.

    Parameters
    ----------
    images : array-like of shape (n, H, W) or (n, H, W, C)
        Images, ``C`` in {1, 3}.
    heatmaps : array-like of shape (n, H, W) or (n, H * W)
        Pixel anomaly scores, higher = more anomalous (``detector.transform``).
    masks : array-like of shape (n, H, W), default=None
        Ground-truth masks (green contours).
    predicted : array-like of shape (n, H, W), default=None
        Predicted masks (dashed red contours), e.g. ``detector.segment(X)``.
    threshold : float, default=None
        Without ``predicted``, contour ``heatmaps > threshold`` instead.
    scores : array-like of shape (n,), default=None
        Image anomaly scores, printed in each panel's title.
    labels : array-like of shape (n,), default=None
        Image labels (1 = anomalous), printed in the titles.
    n_cols : int, default=4
        Images per row.
    show_image : bool, default=True
        Whether to show the plain image left of each overlay.
    alpha, cmap : see :func:`plot_anomaly_map`.
    vmin, vmax : float, default=None
        Colour limits shared by every panel; ``None`` takes the minimum and
        maximum over all heatmaps, so that panels are comparable.
    panel_size : float, default=2.0
        Size of one panel in inches.
    dpi : float, default=100
        Resolution: the figure is ``panel_size * dpi`` pixels per panel.
    path : str or path-like, default=None
        If given, save the figure there (PNG for a ``.png`` name).

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    _, Figure = _mpl()
    images = list(images) if not hasattr(images, "shape") else images
    n = len(images)
    if n == 0:
        raise ValueError("No images to plot.")
    heat = np.asarray(heatmaps, dtype=np.float64)
    if heat.shape[0] != n:
        raise ValueError(f"Got {n} images but {heat.shape[0]} heatmaps.")
    for name, extra in (("masks", masks), ("predicted", predicted),
                        ("scores", scores), ("labels", labels)):
        if extra is not None and len(extra) != n:
            raise ValueError(f"Got {n} images but {len(extra)} {name}.")
    if not isinstance(n_cols, int) or n_cols < 1:
        raise ValueError(f"n_cols must be a positive int; got {n_cols!r}.")
    finite = heat[np.isfinite(heat)]
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)

    per_image = 2 if show_image else 1
    cols = min(n_cols, n)
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(panel_size * cols * per_image, panel_size * rows), dpi=dpi)
    axes = fig.subplots(rows, cols * per_image, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i in range(n):
        r, c = divmod(i, cols)
        parts = []
        if labels is not None:
            parts.append("true: anomalous" if int(labels[i]) == 1 else "true: normal")
        if scores is not None:
            parts.append(f"score {float(scores[i]):.3g}")
        title = ", ".join(parts) or None
        if show_image:
            ax_img = axes[r, c * 2]
            img = _as_display_image(images[i])
            ax_img.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1,
                          interpolation="nearest")
            ax_img.set_axis_on()
            ax_img.set_xticks([])
            ax_img.set_yticks([])
            if title:
                ax_img.set_title(title, fontsize=7)
        ax = axes[r, c * per_image + (1 if show_image else 0)]
        ax.set_axis_on()
        plot_anomaly_map(
            images[i], heat[i],
            mask=None if masks is None else masks[i],
            predicted=None if predicted is None else predicted[i],
            threshold=threshold, alpha=alpha, cmap=cmap, vmin=lo, vmax=hi,
            title=None if show_image else title, ax=ax,
        )
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.92 if (
        scores is not None or labels is not None) else 0.99, wspace=0.05, hspace=0.2)
    if path is not None:
        save_figure(fig, path)
    return fig


def _finish_curve(fig, ax, path, xlabel, ylabel, xlim, legend):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(*xlim)
    ax.set_ylim(0.0, 1.02)
    ax.grid(True, alpha=0.3)
    if legend:
        ax.legend(loc="lower right", fontsize=8)
    if path is not None:
        save_figure(fig, path)
    return ax


#: The figure parameters and the result of the curve plots, documented once.
_CURVE_FIGURE_DOC = """\
ax : matplotlib.axes.Axes, default=None
    Axes to draw on; ``None`` makes a new figure.
figsize : tuple of float, default=(4.0, 4.0)
    Size of a new figure in inches.
dpi : float, default=100
    Resolution of a new figure.
path : str or path-like, default=None
    If given, save the figure there.

Returns
-------
ax : matplotlib.axes.Axes"""


@fill_doc(curve_figure=_CURVE_FIGURE_DOC)
def plot_roc_curve(
    y_true,
    scores,
    *,
    label=None,
    ax=None,
    figsize=(4.0, 4.0),
    dpi=100,
    path=None,
):
    """Plot a ROC curve with its AUROC in the legend.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        1 (or True) for anomalous, 0 for normal; images or pixels
        (``masks.ravel()``).
    scores : array-like of shape (n,)
        Anomaly scores, higher = more anomalous: ``-detector.score_samples(X)``
        for images, ``detector.transform(X).ravel()`` for pixels.
    label : str, default=None
        Legend label (the AUROC is appended).
    [curve_figure]
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    y_true = np.asarray(y_true).ravel().astype(int)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if y_true.shape != scores.shape:
        raise ValueError(f"y_true and scores differ in length: {y_true.size}, {scores.size}.")
    if np.unique(y_true).size != 2:
        raise ValueError("y_true must contain both normal (0) and anomalous (1) samples.")
    fpr, tpr, _ = roc_curve(y_true, scores)
    auc = roc_auc_score(y_true, scores)
    fig, ax = _new_axes(ax, figsize, dpi)
    text = f"AUROC = {auc:.3f}" if label is None else f"{label} (AUROC = {auc:.3f})"
    ax.plot(fpr, tpr, label=text)
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=0.8)
    return _finish_curve(fig, ax, path, "False positive rate", "True positive rate",
                         (0.0, 1.0), True)


@fill_doc(curve_figure=_CURVE_FIGURE_DOC)
def plot_pro_curve(
    masks,
    heatmaps,
    *,
    max_fpr=0.3,
    label=None,
    ax=None,
    figsize=(4.0, 4.0),
    dpi=100,
    path=None,
):
    """Plot the per-region overlap (PRO) curve up to a false-positive rate.

    The curve's points come from :func:`skanomaly.metrics.pro_curve`: for
    each threshold, the mean over ground-truth regions of the share of the
    region detected, against the false-positive rate on normal pixels. The
    legend gives the normalised area under the curve up to ``max_fpr``
    (:func:`skanomaly.metrics.pro_score`, AUPRO@0.3 by default).

    Parameters
    ----------
    masks : array-like of shape (n, H, W)
        Ground-truth masks (at least one defect region).
    heatmaps : array-like of shape (n, H, W)
        Pixel anomaly scores, higher = more anomalous.
    max_fpr : float, default=0.3
        Right end of the plotted range and of the integration.
    label : str, default=None
        Legend label (the area is appended).
    [curve_figure]
    """
    from skanomaly import metrics

    if not 0.0 < max_fpr <= 1.0:
        raise ValueError(f"max_fpr must be in (0, 1]; got {max_fpr}.")
    fpr, pro = metrics.pro_curve(masks, heatmaps)
    fpr = np.asarray(fpr, dtype=np.float64)
    pro = np.asarray(pro, dtype=np.float64)
    keep = fpr <= max_fpr
    x, y = fpr[keep], pro[keep]
    if keep.sum() < fpr.size:  # close the curve at max_fpr by interpolation
        x = np.r_[x, max_fpr]
        y = np.r_[y, np.interp(max_fpr, fpr, pro)]
    area = metrics.pro_score(masks, heatmaps, max_fpr=max_fpr)
    fig, ax = _new_axes(ax, figsize, dpi)
    text = f"AUPRO@{max_fpr:g} = {area:.3f}"
    if label is not None:
        text = f"{label} ({text})"
    ax.plot(x, y, label=text)
    return _finish_curve(fig, ax, path, "False positive rate", "Per-region overlap",
                         (0.0, max_fpr), True)
