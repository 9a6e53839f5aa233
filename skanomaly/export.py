"""ONNX export of a fitted detector's scoring (``det.export_onnx(path)``).

The exported graph takes one input and gives two outputs:

``images``
    float32 ``(n, C, H, W)`` in [0, 1] at the fitted input size
    (``input_shape_``); ``n`` is dynamic.  Convert integer images to [0, 1]
    first (divide 8-bit images by 255, or apply the detector's
    ``value_range``).
``scores``
    float32 ``(n,)``: the image anomaly scores, equal to
    ``-det.score_samples(images)``.
``maps``
    float32 ``(n, H, W)``: the pixel anomaly maps, equal to
    ``det.transform(images)``.

Everything between is in the graph: the resize to the working size (the
library resizes with antialiased bilinear interpolation, which ONNX's
``Resize`` cannot express; as the sizes are fixed at export, the resize is
the exact linear map ``A_h @ x @ A_w^T`` whose matrices are obtained by
applying the library's own ``F.interpolate`` to identity matrices), the
grey-to-RGB expansion and normalisation of pretrained backbones, the method
itself (DFR's regional features and CAE; SCADN's ``4 * len(mask_scales)``
masked passes, per-scale maximum and scale selection) and the resize of the
maps back to the input size.  The graph's metadata (``metadata_props``)
records the detector, ``offset_`` (an image is anomalous when its score
exceeds ``-offset_``), ``threshold_`` and ``input_shape_``.

Equality: on held-out images the outputs equal the library's to within 1e-4
(maps relative to their range) with the same image ranking; the tests check
it for every detector that supports export.

Needs the optional extra ``pip install 'skanomaly[onnx]'`` (``onnx`` and,
to run the graph, ``onnxruntime``).
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._files import atomic_path
from ._training import runtime_device
from .persistence import _modules_of
from .image_scores import reduce_maps
from .registry import registry_name

__all__ = ["export_onnx", "resize_matrix", "require_onnx"]

_INSTALL = "pip install 'skanomaly[onnx]'"


def require_onnx(runtime=False):
    """Import ``onnx`` (and ``onnxruntime``), or raise an ImportError saying how to install them.

    Parameters
    ----------
    runtime : bool, default=False
        Also import ``onnxruntime``.

    Returns
    -------
    modules : tuple
        ``(onnx,)`` or ``(onnx, onnxruntime)``.
    """
    names = ["onnx"] + (["onnxruntime"] if runtime else [])
    modules = []
    for name in names:
        try:
            modules.append(__import__(name))
        except ImportError as exc:
            raise ImportError(
                f"ONNX export needs the optional packages onnx and onnxruntime ({name} is "
                f"missing): {_INSTALL}"
            ) from exc
    return tuple(modules)


def resize_matrix(n_in, n_out, antialias):
    """The ``(n_out, n_in)`` matrix of the library's 1-D bilinear resize.

    ``F.interpolate(x, size, mode="bilinear", align_corners=False,
    antialias=antialias)`` acts separably on rows and columns, so for an
    image ``x`` of shape ``(..., H, W)`` it equals
    ``resize_matrix(H, S_h) @ x @ resize_matrix(W, S_w).T``.  The matrix is
    that very interpolation applied to the identity.

    Parameters
    ----------
    n_in, n_out : int
        Input and output lengths.
    antialias : bool
        As ``F.interpolate``'s (the working-size resize uses ``True``, the
        resize of maps back to the input ``False``).

    Returns
    -------
    matrix : Tensor of shape (n_out, n_in), float32
    """
    # The identity as one image, resized along its height only (the width
    # keeps its size, which interpolation leaves unchanged): column j is the
    # resized basis vector e_j.
    eye = torch.eye(n_in, dtype=torch.float32).reshape(1, 1, n_in, n_in)
    out = nn.functional.interpolate(
        eye, size=(n_out, n_in), mode="bilinear", align_corners=False, antialias=antialias
    )
    return out[0, 0].contiguous()


def _scadn_working(det, xw):
    """SCADN's ``_anomaly_working`` with every masked pass in one batch (dynamic ``n``).

    The same computation as :func:`skanomaly.scadn.torch_model.scale_error_maps`
    and :func:`~skanomaly.scadn.torch_model.select_scale`, without the chunk
    loop whose trip count depends on the batch size, and with the chosen map
    taken by ``gather`` instead of indexing with ``arange(n)``.
    """
    from .scadn.masks import striped_masks

    c, h, w = (int(v) for v in xw.shape[1:])  # fixed at export; the batch stays dynamic
    masks = striped_masks(h, w, det.mask_scales_, device=xw.device)
    n_scales, n_types = masks.shape[:2]
    flat = masks.reshape(1, n_scales * n_types, 1, h, w)
    k = n_scales * n_types
    images = xw.unsqueeze(1).expand(-1, k, -1, -1, -1)
    out = det.net_.module_((images * flat).reshape(-1, c, h, w)).reshape(-1, k, c, h, w)
    errors = (out - images).square().mean(dim=2) * (1 - flat[:, :, 0])
    maps = errors.reshape(-1, n_scales, n_types, h, w).amax(dim=2)
    mu = torch.as_tensor(det.mu_, dtype=maps.dtype, device=maps.device)
    chosen = torch.argmax(maps.mean(dim=(2, 3)) - mu, dim=1)
    final = maps.gather(1, chosen[:, None, None, None].expand(-1, 1, h, w))[:, 0]
    return final.mean(dim=(1, 2)), final


def _dfr_working(det, xw):
    """DFR's ``_anomaly_working`` with the alignment operators as constants.

    :class:`~skanomaly.dfr.torch_model.RegionalFeatures` caches its operators
    by feature-map size; under tracing the sizes are traced values, so the
    cache is looked up with plain ints here (sizes are fixed at export).
    """
    from .dfr.torch_model import regional_error_map

    fe = det.feature_extractor_
    parts = []
    for phi in fe.backbone(xw):
        a_h = fe._operator(int(phi.shape[-2]), phi.device, int(xw.shape[-2]))
        a_w = fe._operator(int(phi.shape[-1]), phi.device, int(xw.shape[-1]))
        parts.append(torch.einsum("Hh,bchw,Ww->bcHW", a_h, phi, a_w))
    f = torch.cat(parts, dim=1)
    return None, regional_error_map(f, det.net_.module_(f))


def _igd_working(det, xw):
    """IGD's ``_anomaly_working`` with all patches of the batch in one pass.

    The library cuts the local branch's patches into chunks of
    ``batch_size`` (memory); the chunk count would fix the batch size in the
    graph, so the graph runs them at once (same values, per patch).  The
    MS-SSIM is always :func:`skanomaly.igd.ssim.ms_ssim` (constant window)
    in the graph.
    """
    from .igd.losses import LOCAL_WINDOW
    from .igd.ssim import own_ms_ssim_only
    from .igd.torch_model import DATA_RANGE, igd_anomaly

    with own_ms_ssim_only():
        return igd_anomaly(
            det.net_.module_, xw, beta=det.beta, xi=det.xi, rho=det.rho,
            global_window=det.global_window_, local_window=LOCAL_WINDOW,
            data_range=DATA_RANGE, chunk_size=None,
        )


def gaussian_matrix(n, sigma):
    """The ``(n, n)`` float64 operator of :func:`~skanomaly.inpainting.torch_model.gaussian_smooth` along one axis.

    Column ``j`` is the smoothed unit impulse at ``j`` (reflected borders
    included), obtained by running the library's own filter on the
    identity; a length-1 second axis is left unchanged by the filter.
    """
    from .inpainting.torch_model import gaussian_smooth

    eye = torch.eye(n, dtype=torch.float64).reshape(n, n, 1)
    return gaussian_smooth(eye, sigma)[:, :, 0].T.contiguous()


def _inpainting_working(det, xw):
    """InpaintingAE's maps with the Gaussian filter as two fixed float32 matrices.

    onnxruntime has no float64 convolution; ``G_h @ E @ G_w^T`` equals the
    library's separable float64 filter to ~2e-7.  The image score of the
    library is the §4.2 connected-component level of the input-size map,
    which no ONNX operator computes: the graph's ``scores`` output is the
    map's maximum, which *is* the library's score when
    ``min_defect_area_ == 1``; otherwise apply
    :func:`skanomaly.inpainting.largest_component_level` to each exported
    map with the ``min_defect_area`` stored in the model's metadata
    (:func:`onnx_image_scores` does it).
    """
    from .inpainting.torch_model import reconstruction_error

    err = reconstruction_error(det.net_.module_(xw), xw).float()
    sigma = float(det.smoothing_sigma)
    if sigma > 0:
        h, w = int(err.shape[-2]), int(err.shape[-1])
        g_h = gaussian_matrix(h, sigma).float().to(err.device)
        g_w_t = gaussian_matrix(w, sigma).T.float().to(err.device)
        err = torch.matmul(torch.matmul(g_h, err), g_w_t)
    return None, err


#: Registry name -> function ``(det, xw) -> (scores or None, maps)`` traced into the graph.
_WORKING = {
    "dfr": _dfr_working,
    "scadn": _scadn_working,
    "igd": _igd_working,
    "inpainting": _inpainting_working,
}


def onnx_image_scores(scores, maps, metadata):
    """The library's image anomaly scores from an exported graph's outputs.

    For every detector but an InpaintingAE with ``min_defect_area > 1``
    these are the graph's ``scores``; for that one the §4.2 rule is applied
    to the exported maps (connected components have no ONNX operator).

    Parameters
    ----------
    scores, maps : ndarray
        The graph's two outputs.
    metadata : dict
        The model's ``metadata_props`` (onnxruntime:
        ``session.get_modelmeta().custom_metadata_map``).

    Returns
    -------
    scores : ndarray of shape (n,)
        Equal to ``-score_samples`` of the library.
    """
    area = int(metadata.get("min_defect_area", "1"))
    if area <= 1:
        return np.asarray(scores, dtype=np.float64)
    from .inpainting.postprocess import largest_component_level

    return np.array([largest_component_level(m, area) for m in maps], dtype=np.float64)


class _ScoringGraph(nn.Module):
    """Input-size images in, anomaly scores and input-size maps out (traced for ONNX)."""

    def __init__(self, det, working):
        super().__init__()
        # Registered so that the networks' tensors become the graph's initializers.
        self.networks = nn.ModuleDict(
            {prefix.replace(".", "__"): m for prefix, m in _modules_of(det).items()}
        )
        self._det = [det]  # a list: not registered as a submodule
        self._working = working
        h, w, c = det.input_shape_
        self._rgb = det._needs_rgb and c == 1
        size = det.image_size
        # image_size=None (full resolution): pad as the library does, crop the maps.
        self._pad = self._crop = None
        if size is None:
            hp, wp = det._working_shape(h, w)
            if (hp, wp) != (h, w):
                self._pad = (0, wp - w, 0, hp - h)
                self._pad_mode = "reflect" if hp - h < h and wp - w < w else "replicate"
                self._crop = (h, w)
            size = (h, w)  # no resize
        else:
            size = (size, size)
        self._resize_in = (h, w) != size
        self._resize_out = None
        if self._resize_in:
            self.register_buffer("a_h", resize_matrix(h, size[0], antialias=True))
            self.register_buffer("a_w_t", resize_matrix(w, size[1], antialias=True).T.contiguous())

    def set_map_size(self, map_hw, input_hw):
        """Register the matrices resizing the method's maps to the input size."""
        self._resize_out = tuple(map_hw) != tuple(input_hw)
        if self._resize_out:
            (mh, mw), (h, w) = map_hw, input_hw
            self.register_buffer("b_h", resize_matrix(mh, h, antialias=False))
            self.register_buffer("b_w_t", resize_matrix(mw, w, antialias=False).T.contiguous())

    def forward(self, x):
        det = self._det[0]
        if self._rgb:
            x = x.expand(-1, 3, -1, -1)
        if self._resize_in:
            x = torch.matmul(torch.matmul(self.a_h, x), self.a_w_t)
        if self._pad is not None:
            x = F.pad(x, self._pad, mode=self._pad_mode)
        scores, maps = self._working(det, x)
        if self._resize_out:
            maps = torch.matmul(torch.matmul(self.b_h, maps), self.b_w_t)
        if self._crop is not None:
            maps = maps[..., : self._crop[0], : self._crop[1]]
        rule = getattr(det, "image_score", "auto")
        if rule == "smoothed_max" and float(det.image_score_sigma) > 0:
            # The library's Gaussian filter as two fixed matrices (as InpaintingAE's).
            h, w = maps.shape[-2:]
            g_h = gaussian_matrix(int(h), det.image_score_sigma).float().to(maps.device)
            g_w_t = gaussian_matrix(int(w), det.image_score_sigma).T.float().to(maps.device)
            scores = torch.matmul(torch.matmul(g_h, maps), g_w_t).amax(dim=(1, 2))
        elif rule != "auto":
            scores = reduce_maps(maps, rule, det.image_score_k, det.image_score_sigma)
        elif scores is None:
            # Every detector's default (DFR): the input-size map's maximum;
            # InpaintingAE's area rule is applied outside (onnx_image_scores).
            scores = maps.amax(dim=(1, 2))
        return scores.float(), maps.float()


def _scoring_graph(det, device):
    """The traced module of ``det`` on ``device``, its map-resize matrices set."""
    name = registry_name(det)
    if name not in _WORKING:
        raise TypeError(
            f"{type(det).__name__} does not support ONNX export yet; score it with the "
            f"library (or save it with det.save)."
        )
    graph = _ScoringGraph(det, _WORKING[name]).to(device).eval()
    h, w, c = det.input_shape_
    with torch.no_grad():
        probe = torch.zeros(1, c, h, w, device=device)
        if graph._rgb:
            probe = probe.expand(-1, 3, -1, -1)
        if graph._resize_in:
            probe = torch.matmul(torch.matmul(graph.a_h, probe), graph.a_w_t)
        if graph._pad is not None:
            probe = F.pad(probe, graph._pad, mode=graph._pad_mode)
        _, maps = graph._working(det, probe)
    # Padded (image_size=None): maps go to the padded size, then are cropped.
    graph.set_map_size(maps.shape[-2:], probe.shape[-2:] if graph._pad is not None else (h, w))
    return graph.to(device)


def export_onnx(det, path, opset=17):
    """Write the ONNX graph of a fitted detector's scoring to ``path``.

    Parameters
    ----------
    det : BaseDetector
        A fitted detector of any registered kind.
    path : str or path-like
        ``.onnx`` file; written to a temporary name in the same folder, then
        renamed.
    opset : int, default=17
        ONNX opset version.

    Returns
    -------
    path : str

    Raises
    ------
    ImportError
        ``onnx`` is not installed (``pip install 'skanomaly[onnx]'``).
    TypeError
        The detector does not support export yet.
    """
    from sklearn.utils.validation import check_is_fitted

    (onnx,) = require_onnx()
    check_is_fitted(det)
    device = runtime_device(det.device_)
    det._prepare_inference(device)
    graph = _scoring_graph(det, device)
    h, w, c = det.input_shape_
    example = torch.rand(2, c, h, w, generator=torch.Generator().manual_seed(0)).to(device)
    path = os.fspath(path)
    with atomic_path(path) as tmp_path, torch.no_grad(), warnings.catch_warnings():
        tmp = str(tmp_path)
        # The TorchScript-based exporter (no onnxscript needed) warns that
        # it is the legacy one, and about instance norm's use of input
        # statistics, which is what the detectors use too.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (example,),
            tmp,
            dynamo=False,
            input_names=["images"],
            output_names=["scores", "maps"],
            dynamic_axes={"images": {0: "n"}, "scores": {0: "n"}, "maps": {0: "n"}},
            opset_version=opset,
            do_constant_folding=True,
        )
        model = onnx.load(tmp)
        from . import __version__

        meta = {
            "skanomaly_version": __version__,
            "detector": registry_name(det),
            "input_shape": json.dumps(list(det.input_shape_)),
            "input": "float32 images (n, C, H, W) in [0, 1]",
            "scores": "image anomaly scores = -score_samples",
            "maps": "pixel anomaly maps = transform",
            "offset": repr(float(det.offset_)),
            "threshold": repr(float(getattr(det, "threshold_", float("nan")))),
        }
        if hasattr(det, "min_defect_area_") and getattr(det, "image_score", "auto") == "auto":
            meta["min_defect_area"] = str(int(det.min_defect_area_))
            if det.min_defect_area_ > 1:
                meta["scores"] = (
                    "maximum of each map; the library's image score is "
                    "skanomaly.inpainting.largest_component_level(map, min_defect_area) "
                    "(skanomaly.export.onnx_image_scores)"
                )
        for key, value in meta.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(model)
        onnx.save(model, tmp)
    return path
