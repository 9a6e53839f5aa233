"""The safe model format: fitted detectors in one file, without pickle.

A ``.skan`` file is a `safetensors <https://huggingface.co/docs/safetensors>`_
file.  Its tensors are every tensor of the detector's networks (the state
dict of each module, buffers included, named ``<attribute>.<key>``, e.g.
``net_.module_.encoder.0.weight``) and its fitted arrays (``fitted.<name>``,
e.g. ``fitted.mu_``).  Everything else is one JSON document stored in the
safetensors header's ``__metadata__`` under the key ``"skanomaly"``:

``format``
    ``"skanomaly-safe"``.
``format_version``
    :data:`FORMAT_VERSION`; a file from a newer format is refused.
``detector``
    The registry name (:mod:`skanomaly.registry`), e.g. ``"dfr"``.
``params``
    The constructor parameters (``get_params(deep=False)``).
``fitted``
    Fitted scalars, lists and dicts (``offset_``, ``input_shape_``, ...).
``arrays``
    Names, dtypes and shapes of the fitted arrays stored as tensors.
``notes``
    Parameters that could not be stored safely and are rebuilt as ``None``.
``versions``
    Versions of skanomaly, torch and scikit-learn that wrote the file.

A :class:`~skanomaly.TiledDetector` is stored as ``detector`` ``"tiled"``
with its ``params`` (``tile_size``, ``stride``) and ``fitted`` values, the
parameters of the unfitted detector it was given (``detector_params``), and
the whole description above of its fitted inner detector (``inner``), whose
tensors are named ``detector_.<name>``.

:func:`load_detector` reads the JSON and the tensors with the
``safetensors`` parser (no pickle, no code named by the file is imported or
run), rebuilds the detector from the registry through the code paths of
``fit`` (the detector's ``_build_networks`` hook) and accepts only the
tensor names, shapes and dtypes of the freshly built networks.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import stat
import struct
import warnings

import numpy as np
import torch
from skorch import NeuralNet

from ._docstrings import fill_doc
from ._files import atomic_path
from ._shared_params import MAX_IMAGE_SIZE, physical_memory
from .registry import get_detector, registry_name
from .validation import check_image_shape, check_value_range

__all__ = [
    "FORMAT_VERSION",
    "save_detector",
    "load_detector",
    "load",
    "is_safe_model_file",
    "looks_like_pickle",
]

#: Version of the file layout written by :func:`save_detector`.
FORMAT_VERSION = 1
_FORMAT = "skanomaly-safe"
_METADATA_KEY = "skanomaly"
_FITTED_PREFIX = "fitted."
# A header larger than this is not one of ours (safetensors caps it at 100 MB).
_MAX_HEADER = 100_000_000
# Fitted attributes every detector has (BaseDetector.fit); threshold_ is optional.
_BASE_FITTED = (
    "n_features_in_", "input_shape_", "offset_", "threshold_", "device_", "_seed_", "n_epochs_",
    "image_score_rule_",
)
_REQUIRED_FITTED = ("n_features_in_", "input_shape_", "offset_", "device_", "_seed_")
# Deepest nesting of JSON values in a model file (a tiled detector's inner
# description holding a tuple is about 6 levels); deeper is a tampered file.
_MAX_DEPTH = 32
# Largest integer a fitted value may hold: the number of values of the
# largest image a detector works on (a count of pixels, channels, ...).
_MAX_COUNT = 3 * MAX_IMAGE_SIZE**2
# Fitted seeds are drawn below 2**31 (BaseDetector.fit).
_MAX_SEED = 2**32 - 1


# ------------------------------------------------------------ JSON values
def _encode(value, where):
    """A JSON value for ``value``; tuples and dicts are tagged, anything else refused."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, where) for v in value]}
    if isinstance(value, list):
        return [_encode(v, where) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _encode(v, where) for k, v in value.items()}}
    raise TypeError(f"{where} holds a {type(value).__name__}, which has no safe representation.")


def _decode(value, where):
    """Inverse of :func:`_encode`; raises ValueError on anything it did not write."""
    if value is None or isinstance(value, (bool, str, int, float)):
        return value
    if isinstance(value, list):
        return [_decode(v, where) for v in value]
    if isinstance(value, dict) and len(value) == 1:
        (tag, inner), = value.items()
        if tag == "tuple" and isinstance(inner, list):
            return tuple(_decode(v, where) for v in inner)
        if tag == "dict" and isinstance(inner, dict):
            return {k: _decode(v, where) for k, v in inner.items()}
    raise ValueError(f"{where} holds a value that a skanomaly model file never contains.")


def _is_weights_path(value):
    return isinstance(value, os.PathLike) or (
        isinstance(value, str)
        and ("/" in value or os.sep in value or value.endswith((".pt", ".pth")))
    )


def _safe_params(detector):
    """Constructor parameters as JSON, plus notes on those rebuilt as ``None``."""
    params, notes = {}, []
    for name, value in detector.get_params(deep=False).items():
        reason = None
        if name == "callbacks" and value:
            reason = "skorch callback objects cannot be stored safely"
        elif name == "weights" and _is_weights_path(value):
            reason = "a path to a local weights file is not portable (the file holds the weights)"
        elif name == "random_state" and not (
            value is None or isinstance(value, numbers.Integral)
        ):
            reason = f"a {type(value).__name__} instance cannot be stored safely"
        if isinstance(value, torch.device):
            value = str(value)
        if reason is None:
            try:
                params[name] = _encode(value, f"parameter {name!r}")
                continue
            except TypeError as exc:
                reason = str(exc)
        params[name] = None
        notes.append(f"{name}: rebuilt as None ({reason})")
    return params, notes


# ------------------------------------------------------- network tensors
def _modules_of(detector):
    """``{prefix: module}`` of every network the fitted detector holds, sorted."""
    out = {}
    for attr, value in sorted(vars(detector).items()):
        if isinstance(value, torch.nn.Module):
            out[attr] = value
        elif isinstance(value, NeuralNet) and getattr(value, "initialized_", False):
            for name in list(value._modules) + list(value._criteria):
                module = getattr(value, name + "_", None)
                if isinstance(module, torch.nn.Module):
                    out[f"{attr}.{name}_"] = module
    return out


def _network_tensors(detector):
    """Every state-dict tensor of the detector's networks, named ``prefix.key``."""
    tensors = {}
    for prefix, module in _modules_of(detector).items():
        for key, t in module.state_dict().items():
            tensors[f"{prefix}.{key}"] = t
    return tensors


def _fitted_names(cls):
    return tuple(_BASE_FITTED) + tuple(getattr(cls, "_fitted_attributes", ()))


def _check_supported(cls, error=TypeError):
    if "_build_networks" not in _defining_attrs(cls):
        raise error(
            f"{cls.__name__} does not support the safe model format yet (it has no "
            f"_build_networks hook); save it with joblib.dump and load only trusted files."
        )


def _defining_attrs(cls):
    names = set()
    for klass in cls.__mro__:
        if klass.__name__ == "BaseDetector":
            break
        names.update(vars(klass))
    return names


# ------------------------------------------------------------------ save
def save_detector(detector, path):
    """Write a fitted detector to ``path`` in the safe format.

    Parameters
    ----------
    detector : BaseDetector or TiledDetector
        A fitted, registered detector, or a fitted TiledDetector around one.
    path : str or path-like
        File to write (``.skan`` by convention); written to a temporary name
        in the same folder, then renamed, so a failure leaves no partial file.

    Returns
    -------
    path : str
        The file written.

    Warns
    -----
    UserWarning
        When a parameter is rebuilt as ``None`` (see
        :meth:`skanomaly.base.BaseDetector.save`).
    """
    from sklearn.utils.validation import check_is_fitted

    from .tiling import TiledDetector

    check_is_fitted(detector)
    if isinstance(detector, TiledDetector):
        document, tensors = _describe_tiled(detector)
    else:
        document, tensors = _describe(detector)
    if document["notes"]:
        warnings.warn(
            f"{type(detector).__name__}.save: " + "; ".join(document["notes"]) + ".",
            UserWarning, stacklevel=3,
        )
    import sklearn

    from . import __version__

    document = {
        "format": _FORMAT,
        "format_version": FORMAT_VERSION,
        **document,
        "versions": {
            "skanomaly": __version__,
            "torch": torch.__version__,
            "scikit-learn": sklearn.__version__,
        },
    }
    from safetensors.torch import save

    blob = save(tensors, metadata={_METADATA_KEY: json.dumps(document, allow_nan=True)})
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)
    return path


def _describe(detector):
    """The JSON description and the tensors of a fitted registered detector."""
    cls = type(detector)
    name = registry_name(detector)
    _check_supported(cls)
    params, notes = _safe_params(detector)
    allowed = _fitted_names(cls)
    fitted, arrays, tensors = {}, {}, {}
    for attr, value in vars(detector).items():
        if not attr.endswith("_") or attr.startswith("__"):
            continue
        if isinstance(value, (torch.nn.Module, NeuralNet)):
            continue
        if attr not in allowed:
            raise TypeError(
                f"{cls.__name__} has the fitted attribute {attr!r}, which is not declared "
                f"in {cls.__name__}._fitted_attributes; the safe format would lose it."
            )
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biuf":
                raise TypeError(f"fitted array {attr!r} has dtype {value.dtype}, not a number.")
            arrays[attr] = {"dtype": str(value.dtype), "shape": list(value.shape)}
            tensors[_FITTED_PREFIX + attr] = torch.from_numpy(np.ascontiguousarray(value).copy())
        else:
            fitted[attr] = _encode(value, f"fitted attribute {attr!r}")
    for key, t in _network_tensors(detector).items():
        tensors[key] = t.detach().to("cpu", copy=True).contiguous()
    document = {"detector": name, "params": params, "fitted": fitted, "arrays": arrays,
                "notes": notes}
    return document, tensors


#: The registry-free name of a :class:`~skanomaly.TiledDetector` in a model file.
_TILED = "tiled"
#: Its fitted values (``threshold_`` is optional) and the prefix of its inner
#: detector's tensors.
_TILED_REQUIRED = ("stride_", "n_features_in_", "input_shape_", "offset_")
#: Fitted since format 1 files were first written: older files lack them and
#: get them from the saved parameters (what fit used when nothing changed).
_TILED_DERIVED = ("tile_size_", "image_shape_", "value_range_")
_TILED_FITTED = _TILED_REQUIRED + ("threshold_",) + _TILED_DERIVED
_TILED_PREFIX = "detector_."


def _describe_tiled(tiled):
    """A TiledDetector: its parameters and fitted values, the description of
    its fitted inner detector (``inner``) and of the unfitted one it was given
    (``detector``: its ``image_shape`` and ``value_range`` read the images),
    and the inner detector's tensors under ``detector_.``."""
    if registry_name(tiled.detector) != registry_name(tiled.detector_):
        raise ValueError(
            f"This TiledDetector was fitted with a {type(tiled.detector_).__name__} but its "
            f"detector parameter is now a {type(tiled.detector).__name__}; fit it again "
            f"before saving (or set the detector it was fitted with back)."
        )
    inner, tensors = _describe(tiled.detector_)
    given, given_notes = _safe_params(tiled.detector)
    fitted = {a: _encode(getattr(tiled, a), f"fitted attribute {a!r}")
              for a in _TILED_FITTED if hasattr(tiled, a)}
    document = {
        "detector": _TILED,
        "params": {"tile_size": int(tiled.tile_size),
                   "stride": None if tiled.stride is None else int(tiled.stride)},
        "fitted": fitted,
        "detector_params": {"detector": registry_name(tiled.detector), "params": given},
        "inner": inner,
        "notes": sorted(set(inner["notes"]) | set(given_notes)),
    }
    return document, {_TILED_PREFIX + k: v for k, v in tensors.items()}


# ------------------------------------------------------------------ load
def _read_start(fh, size):
    """The file's first bytes: its 8-byte header length and the header itself
    when that length fits the file of ``size`` bytes (``math.inf`` for a pipe
    or a device) and ``_MAX_HEADER``, else 9 bytes at most.

    Nothing beyond the header is read, so that a large file of another kind
    (an image or a video given by mistake) is refused at once.
    """
    head = fh.read(8)
    if len(head) < 8:
        return head
    (n,) = struct.unpack("<Q", head)
    return head + fh.read(n if n <= _MAX_HEADER and n + 8 <= size else 1)


def _read_header(path, data, size):
    """The JSON document of a safe model file of ``size`` bytes (``math.inf``
    for a pipe or a device) that starts with ``data`` (see :func:`_read_start`),
    with clear errors for anything else."""
    where = f"{path} is not a skanomaly model file"
    if len(data) < 8:
        raise ValueError(f"{where}: it is {len(data)} bytes long.")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or n + 8 > size or len(data) < n + 8 or data[8:9] != b"{":
        hint = ""
        if _pickle_prefix(data[:8]):
            hint = " (it looks like a pickle/joblib file: load a trusted one with joblib.load)"
        elif n <= _MAX_HEADER and n + 8 > min(size, len(data)) and data[8:9] == b"{":
            hint = " (the file is truncated)"
        raise ValueError(f"{where}{hint}.")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
        document = json.loads(header["__metadata__"][_METADATA_KEY])
    except RecursionError:
        raise ValueError(
            f"{path}: its header nests JSON values too deeply; the file is damaged or was "
            f"modified."
        ) from None
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise ValueError(f"{where}: its header has no skanomaly model description.") from None
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise ValueError(f"{where}: its header has no skanomaly model description.")
    if _depth(document) > _MAX_DEPTH:
        raise ValueError(
            f"{path}: its model description nests values more than {_MAX_DEPTH} levels "
            f"deep, which a skanomaly model file never does; the file is damaged or was "
            f"modified."
        )
    version = document.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{path}: invalid format_version {version!r}.")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written in format version {version}, newer than the version "
            f"{FORMAT_VERSION} this skanomaly reads; upgrade skanomaly to load it."
        )
    return document


def _depth(value):
    """Nesting depth of a JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > _MAX_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


# Starts of pickle files and of joblib's compressed pickles (zlib, gzip, bz2, xz, lz4).
_PICKLE_PREFIXES = (b"\x80", b"ZF", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x04\x22\x4d\x18")


def _pickle_prefix(head):
    return any(head.startswith(p) for p in _PICKLE_PREFIXES)


def _file_start(path, size):
    """The first ``size`` bytes of the file ``path`` (fewer if shorter); None if unreadable."""
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except OSError:
        return None


#: The parameters and result of the tests of a file's kind, documented once.
_FILE_TEST_DOC = """\
Parameters
----------
path : str or path-like
    The file to test; a missing or unreadable one gives ``False``.

Returns
-------
bool"""


@fill_doc(file_test=_FILE_TEST_DOC)
def looks_like_pickle(path):
    """Whether ``path`` starts like a pickle or joblib file (only its first bytes are read).

    [file_test]
    """
    head = _file_start(path, 8)
    return head is not None and _pickle_prefix(head)


@fill_doc(file_test=_FILE_TEST_DOC)
def is_safe_model_file(path):
    """Whether ``path`` starts like a safe model file (its header is read, nothing else).

    [file_test]
    """
    head = _file_start(path, 9)
    if head is None or len(head) < 9 or head[8:9] != b"{":
        return False
    return struct.unpack("<Q", head[:8])[0] <= _MAX_HEADER


def _check_tensors(path, found, expected):
    """Refuse a file whose tensors differ from the rebuilt networks' in name, shape or dtype."""
    problems = []
    for key in sorted(set(found) - set(expected)):
        problems.append(f"unexpected tensor {key!r}")
    for key in sorted(set(expected) - set(found)):
        problems.append(f"missing tensor {key!r}")
    for key in sorted(set(found) & set(expected)):
        f, e = found[key], expected[key]
        if tuple(f.shape) != tuple(e.shape):
            problems.append(
                f"tensor {key!r} has shape {tuple(f.shape)}, expected {tuple(e.shape)}"
            )
        elif f.dtype != e.dtype:
            problems.append(f"tensor {key!r} has dtype {f.dtype}, expected {e.dtype}")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError(
            f"{path} does not match the networks its parameters describe: "
            + "; ".join(problems[:3]) + more + ". The file is damaged or was modified."
        )


def _is_number(value):
    """A finite real number (a bool is not one, nor an int beyond the floats)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_base_fitted(path, detector, seeded=True):
    """Types, bounds and consistency of the fitted values every detector has.

    ``seeded=False`` is a TiledDetector (no ``_seed_``).  ``fit`` takes
    input images of any side (``image_size`` resizes them), so the image
    shape is bounded by memory only: one float32 image must fit in it.
    """
    shape = detector.input_shape_
    if not (
        isinstance(shape, tuple)
        and len(shape) == 3
        and all(_is_int(v) and v > 0 for v in shape)
        and shape[2] in (1, 3)
    ):
        raise ValueError(f"{path}: input_shape_ {shape!r} is not (H, W, C) with C in {{1, 3}}.")
    memory = physical_memory()
    if memory is not None and 4 * shape[0] * shape[1] * shape[2] > memory:
        raise ValueError(
            f"{path}: input_shape_ {shape} describes images larger than this machine's "
            f"memory; the file is damaged or was modified."
        )
    if detector.n_features_in_ != shape[0] * shape[1] * shape[2]:
        raise ValueError(f"{path}: n_features_in_ does not match input_shape_ {shape}.")
    for attr in ("offset_", "threshold_"):
        if hasattr(detector, attr) and not _is_number(getattr(detector, attr)):
            raise ValueError(f"{path}: {attr} must be a finite number.")
    if seeded and not (_is_int(detector._seed_) and 0 <= detector._seed_ <= _MAX_SEED):
        raise ValueError(f"{path}: _seed_ must be an integer in [0, {_MAX_SEED}].")
    epochs = getattr(detector, "n_epochs_", 0)
    if not _is_int(epochs) or epochs < 0:
        raise ValueError(f"{path}: n_epochs_ must be a count of epochs, got {epochs!r}.")


def load_detector(path):
    """Rebuild a fitted detector from a safe model file.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save_detector`.

    Returns
    -------
    detector : BaseDetector or TiledDetector
        Scores and maps equal those of the saved detector.  A model fitted on
        CUDA is loaded onto the CPU when CUDA is not available (``device_``
        becomes ``"cpu"``).

    Raises
    ------
    ValueError
        The file is not a safe model file (for instance a pickle), is
        truncated, comes from a newer format, names an unknown detector or
        parameter, holds parameters ``fit`` would refuse, nests JSON too
        deeply, holds fitted sizes or numbers beyond any fitted detector's,
        or holds tensors other than those of the rebuilt networks (checked
        on a build on the ``meta`` device, before any network is allocated).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as load_tensors

    path = os.fspath(path)
    with open(path, "rb") as fh:
        # The header first: the rest is read only once it describes a model.
        # A pipe or a device has no size to bound the header by.
        info = os.fstat(fh.fileno())
        regular = stat.S_ISREG(info.st_mode)
        size = info.st_size if regular else math.inf
        head = _read_start(fh, size)
        document = _read_header(path, head, size)
        if regular:
            fh.seek(0)
            data = fh.read()
        else:
            data = head + fh.read()
        del head
    try:
        tensors = load_tensors(data)
    except (SafetensorError, RuntimeError, ValueError) as exc:
        raise ValueError(f"{path} is damaged or truncated: {exc}") from None
    del data
    if document.get("detector") == _TILED:
        return _load_tiled(path, document, tensors)
    return _rebuild(path, document, tensors)


def _unfitted(path, cls, params):
    """The detector class ``cls`` built from the stored ``params``, validated."""
    _check_supported(cls, ValueError)
    if not isinstance(params, dict):
        raise ValueError(f"{path}: params must be a JSON object.")
    known = set(cls().get_params(deep=False))
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(
            f"{path} names parameters unknown to {cls.__name__}: {unknown}; the file was "
            f"modified or written by another version of skanomaly."
        )
    detector = cls(**{k: _decode(v, f"parameter {k!r}") for k, v in params.items()})
    try:
        detector._validate_params()
        detector._check_params()
        _check_shared_on_load(detector)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: invalid parameters: {exc}") from None
    return detector


def _check_shared_on_load(detector):
    """The checks ``fit`` runs on the shared parameters (``image_size``,
    ``callbacks``, ...), but with a ``cuda`` device accepted on a machine
    without CUDA: a loaded model runs on the CPU there (see ``device_``)."""
    device = detector.device
    try:
        on_cuda = torch.device(str(device)).type == "cuda"
    except (RuntimeError, TypeError, ValueError):
        on_cuda = False  # the check below names the invalid device
    if not on_cuda:
        detector._check_shared_params()
        return
    try:
        detector.device = "cpu"
        detector._check_shared_params()
    finally:
        detector.device = device


def _rebuild(path, document, tensors):
    """A fitted registered detector from its description and tensors (all used)."""
    from ._training import runtime_device

    if not isinstance(document, dict):
        raise ValueError(f"{path}: a detector's description must be a JSON object.")
    cls = get_detector(document.get("detector"))
    params = document.get("params")
    fitted = document.get("fitted")
    arrays = document.get("arrays")
    if not all(isinstance(v, dict) for v in (params, fitted, arrays)):
        raise ValueError(f"{path}: params, fitted and arrays must be JSON objects.")
    detector = _unfitted(path, cls, params)

    allowed = set(_fitted_names(cls))
    names = set(fitted) | set(arrays)
    if names - allowed:
        raise ValueError(
            f"{path} holds fitted values unknown to {cls.__name__}: {sorted(names - allowed)}."
        )
    missing = [n for n in _REQUIRED_FITTED if n not in names]
    if missing:
        raise ValueError(f"{path} lacks the fitted values {missing}.")
    for attr, value in fitted.items():
        value = _decode(value, f"fitted attribute {attr!r}")
        if attr not in _UNBOUNDED_FITTED:
            _check_counts(path, attr, value)
        setattr(detector, attr, value)
    for attr, spec in arrays.items():
        key = _FITTED_PREFIX + attr
        if key not in tensors:
            raise ValueError(f"{path} lacks the tensor {key!r} of fitted array {attr!r}.")
        array = tensors.pop(key).numpy()
        if not isinstance(spec, dict) or str(array.dtype) != spec.get("dtype") or list(
            array.shape
        ) != spec.get("shape"):
            raise ValueError(f"{path}: fitted array {attr!r} does not match its description.")
        setattr(detector, attr, array)
    if not isinstance(detector.device_, str):
        raise ValueError(f"{path}: device_ must be a string.")
    try:
        detector.device_ = runtime_device(detector.device_)
    except RuntimeError as exc:
        raise ValueError(f"{path}: invalid device_ {detector.device_!r}.") from exc
    _check_base_fitted(path, detector)
    _check_image_score_rule(path, detector)
    try:
        detector._check_fitted_values()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}; the file is damaged or was modified.") from None

    # The networks' tensors as the parameters and fitted values describe
    # them, built on the meta device (no memory): a value that sizes a
    # network must agree with the file's tensors before anything is allocated.
    _check_tensors(path, tensors, _planned_tensors(path, detector))
    # Build the untrained networks as fit does (without fetching pretrained
    # weights: the file holds them), away from the caller's RNG state.
    _build(path, detector)
    modules = _modules_of(detector)
    expected = {
        f"{prefix}.{key}": t for prefix, m in modules.items() for key, t in m.state_dict().items()
    }
    _check_tensors(path, tensors, expected)
    for prefix, module in modules.items():
        start = len(prefix) + 1
        state = {k[start:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        module.load_state_dict(state, strict=True)
    detector._prepare_inference(detector.device_)
    return detector


# Fitted values with checks of their own (_check_base_fitted): any finite
# number for the scores, the image shape, the feature count and the seed.
_UNBOUNDED_FITTED = ("offset_", "threshold_", "input_shape_", "n_features_in_", "_seed_")


def _check_image_score_rule(path, detector):
    """``image_score_rule_``: a file from before it was stored takes the
    saved parameters' rule (what fit used, unless changed before saving)."""
    from .image_scores import IMAGE_SCORES

    rule = getattr(detector, "image_score_rule_", None)
    if rule is None:
        detector.image_score_rule_ = detector._image_score_key()
        return
    if not (isinstance(rule, tuple) and len(rule) == 3 and rule[0] in IMAGE_SCORES
            and all(_is_number(v) for v in rule[1:])):
        raise ValueError(f"{path}: image_score_rule_ {rule!r} is not (image_score, k, sigma).")
    detector.image_score_rule_ = (rule[0], float(rule[1]), float(rule[2]))


def _check_counts(path, attr, value):
    """Refuse an integer beyond ``_MAX_COUNT`` anywhere in a fitted value.

    Fitted integers are counts and sizes (channels, windows, areas, epochs);
    one larger than the values of the largest image is not from ``fit``.
    ``value`` is decoded JSON, whose depth ``_read_header`` bounded.
    """
    if _is_int(value):
        if abs(value) > _MAX_COUNT:
            raise ValueError(
                f"{path}: fitted attribute {attr!r} holds an integer beyond "
                f"{_MAX_COUNT}, more than any size or count a fitted detector has; "
                f"the file is damaged or was modified."
            )
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_counts(path, attr, item)
    elif isinstance(value, dict):
        for item in value.values():
            _check_counts(path, attr, item)


def _build(path, detector):
    """Run the detector's ``_build_networks(pretrained=False)``, seeded with 0."""
    from ._training import seeded

    with seeded(0, "cpu"):
        try:
            detector._build_networks(pretrained=False)
        except (TypeError, ValueError, AttributeError, RuntimeError, IndexError, KeyError,
                OverflowError) as exc:
            raise ValueError(
                f"{path}: cannot rebuild {type(detector).__name__}'s networks: {exc}"
            ) from exc


def _planned_tensors(path, detector):
    """``{name: tensor}`` of the networks ``_build_networks`` would build, as
    meta tensors (shapes and dtypes, no data): built on the ``meta`` device,
    then removed from the detector."""
    before, device = set(vars(detector)), detector.device_
    detector.device_ = "meta"
    try:
        with torch.device("meta"):
            _build(path, detector)
        return {
            f"{prefix}.{key}": t
            for prefix, module in _modules_of(detector).items()
            for key, t in module.state_dict().items()
        }
    finally:
        detector.device_ = device
        for attr in set(vars(detector)) - before:
            delattr(detector, attr)


def _load_tiled(path, document, tensors):
    """A fitted TiledDetector (see :func:`_describe_tiled`)."""
    from .tiling import TiledDetector

    params, fitted = document.get("params"), document.get("fitted")
    given, inner = document.get("detector_params"), document.get("inner")
    if not all(isinstance(v, dict) for v in (params, fitted, given, inner)):
        raise ValueError(f"{path}: params, fitted, detector_params and inner must be "
                         f"JSON objects.")
    unknown = sorted((set(params) - {"tile_size", "stride"}) | (set(fitted) - set(_TILED_FITTED)))
    if unknown:
        raise ValueError(f"{path} names values unknown to TiledDetector: {unknown}.")
    if given.get("detector") != inner.get("detector"):
        raise ValueError(f"{path}: the tiled detector's kinds disagree.")
    outside = sorted(k for k in tensors if not k.startswith(_TILED_PREFIX))
    if outside:
        raise ValueError(f"{path}: unexpected tensor {outside[0]!r}. The file is damaged "
                         f"or was modified.")
    start = len(_TILED_PREFIX)
    detector_ = _rebuild(path, inner, {k[start:]: v for k, v in tensors.items()})
    tiled = TiledDetector(
        detector=_unfitted(path, get_detector(given.get("detector")), given.get("params")),
        **{k: _decode(v, f"parameter {k!r}") for k, v in params.items()},
    )
    tiled._validate_params()
    stride = tiled._check_params()
    values = {a: _decode(v, f"fitted attribute {a!r}") for a, v in fitted.items()}
    missing = [a for a in _TILED_REQUIRED if a not in values]
    if missing:
        raise ValueError(f"{path} lacks the fitted values {missing}.")
    if not any(a in values for a in _TILED_DERIVED):
        # A file from before these were stored: saved right after fit, so the
        # parameters are what fit used.
        values["tile_size_"] = int(tiled.tile_size)
        if type(values["stride_"]) is not int or values["stride_"] != stride:
            raise ValueError(f"{path}: stride_ {values['stride_']!r} does not match the "
                             f"parameters (stride {stride}).")
        values["image_shape_"], values["value_range_"] = tiled._reading_params()
    missing = [a for a in _TILED_DERIVED if a not in values]
    if missing:
        raise ValueError(f"{path} lacks the fitted values {missing}.")
    tile = values["tile_size_"]
    if type(tile) is not int or tile < 1:
        raise ValueError(f"{path}: tile_size_ {tile!r} is not a positive int.")
    if type(values["stride_"]) is not int or not 1 <= values["stride_"] <= tile:
        raise ValueError(f"{path}: stride_ {values['stride_']!r} is not an int in "
                         f"[1, tile_size_={tile}].")
    try:  # set_params after fit may differ from them; what fit used must be valid
        values["image_shape_"] = check_image_shape(values["image_shape_"])
        values["value_range_"] = check_value_range(values["value_range_"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: invalid image_shape_ or value_range_: {exc}") from None
    for attr, value in values.items():
        setattr(tiled, attr, value)
    tiled.detector_ = detector_
    _check_base_fitted(path, tiled, seeded=False)
    if tile > min(tiled.input_shape_[:2]):
        raise ValueError(f"{path}: tile_size_ exceeds the training images' size.")
    tile_shape = (tile, tile, tiled.input_shape_[2])
    if detector_.input_shape_ != tile_shape:
        raise ValueError(f"{path}: the inner detector was fitted on "
                         f"{detector_.input_shape_} images, not on the {tile_shape} tiles of "
                         f"the tiled detector. The file is damaged or was modified.")
    return tiled


def load(path):
    """Load a detector saved with ``det.save(path)`` (``skanomaly.load``).

    Parameters
    ----------
    path : str or path-like
        A ``.skan`` file written by :meth:`~skanomaly.base.BaseDetector.save`.

    Returns
    -------
    detector : BaseDetector or TiledDetector
        The fitted detector; its scores and maps equal the saved one's.

    Raises
    ------
    ValueError
        The file is not a skanomaly model (a pickle, for instance), is
        damaged or truncated, comes from a newer format, or names a detector,
        parameter or tensor that does not match (see :func:`load_detector`).
    """
    return load_detector(path)
