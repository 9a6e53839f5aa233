"""The saving and export methods of every detector (mixed into ``BaseDetector``)."""

from __future__ import annotations

from .persistence import save_detector

__all__ = ["PersistenceMixin"]


class PersistenceMixin:
    """``save``/``export_onnx`` and the hooks the safe format needs (part of ``BaseDetector``)."""

    #: Fitted attributes beyond the base ones (``n_features_in_``,
    #: ``input_shape_``, ``offset_``, ``threshold_``, ``device_``, ``_seed_``)
    #: that :meth:`save` writes and ``skanomaly.load`` restores before
    #: ``_build_networks``: scalars, lists, tuples, dicts or numeric arrays.
    _fitted_attributes = ()

    def _build_networks(self, pretrained=True):
        """Hook: construct the untrained networks from parameters and fitted scalars.

        Called by ``_fit`` before training and by ``skanomaly.load`` before
        the saved tensors are loaded into them; sets the module and skorch
        net attributes (the net initialised), so that the loaded detector
        scores through the same objects as a fitted one.

        Parameters
        ----------
        pretrained : bool, default=True
            ``False`` skips fetching pretrained weights (``load``: the file
            holds them).
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement _build_networks, which the safe "
            f"model format needs."
        )

    def save(self, path):
        """Save the fitted detector to one pickle-free file (``.skan``).

        The file holds every network tensor in `safetensors` format, and the
        constructor parameters, fitted values, registry name, format version
        and the versions of skanomaly, torch and scikit-learn as JSON in its
        header.  No training image is stored.  :func:`skanomaly.load` reads
        it without unpickling or importing anything named by the file.

        Parameters that cannot be represented safely are recorded as a note
        in the file and rebuilt as ``None`` (with a ``UserWarning`` here):
        ``callbacks`` (skorch callback objects), ``weights`` when it is a
        path to a local file (the file holds the weights themselves) and
        ``random_state`` when it is a ``RandomState``/``Generator`` instance.
        Optimizer states are not saved: a loaded detector scores, and
        ``fit`` trains it anew.

        Parameters
        ----------
        path : str or path-like
            File to write; written to a temporary name in the same folder
            and renamed, so a failure leaves no partial file.

        Returns
        -------
        self : object
            The detector, unchanged.
        """
        save_detector(self, path)
        return self

    def export_onnx(self, path, opset=17):
        """Export scoring to an ONNX graph (needs ``pip install 'skanomaly[onnx]'``).

        The graph takes float32 images ``(n, C, H, W)`` in [0, 1] at the
        fitted size (``n`` dynamic) and returns ``scores`` (``(n,)``, equal
        to ``-score_samples``) and ``maps`` (``(n, H, W)``, equal to
        ``transform``), with resizing, normalisation and every step of the
        method inside the graph.  See :mod:`skanomaly.export`.

        Parameters
        ----------
        path : str or path-like
            ``.onnx`` file to write (temporary name, then renamed).
        opset : int, default=17
            ONNX opset version.

        Returns
        -------
        self : object
            The detector, unchanged.
        """
        from .export import export_onnx

        export_onnx(self, path, opset=opset)
        return self
