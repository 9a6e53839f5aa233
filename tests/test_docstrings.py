"""Documentation written once (skanomaly._docstrings) and values parsed once.

The blocks of documentation several docstrings share are filled in where a
docstring line says ``[name]``; no such line may be left unfilled anywhere
in the package.  ``_check_params`` runs once per ``fit`` and hands the
values it parsed to ``_fit``.
"""

import importlib
import inspect
import pkgutil
import re

import numpy as np
import pytest

import skanomaly
from skanomaly._docstrings import fill_doc, fill_markers, fill_method_docs
from tests.detectors import make_detector

_MARKER = re.compile(r"^\s*\[[A-Za-z_][A-Za-z_ ]*\]\s*$", re.MULTILINE)


def test_fill_markers_indents_the_block_as_the_marker_line():
    def f():
        """Summary.

        [block]
        """

    fill_markers(f, {"block": "x : int\n    The x.\n\nReturns\n-------\nint"})
    assert "        x : int\n            The x.\n\n        Returns\n" in f.__doc__
    assert "[block]" not in f.__doc__


def test_a_missing_marker_is_an_error_and_a_stripped_docstring_is_kept():
    def f():
        """No marker here."""

    with pytest.raises(ValueError, match=r"f's docstring has no '\[block\]' line"):
        fill_doc(block="text")(f)

    def g():
        pass

    assert fill_doc(block="text")(g).__doc__ is None  # python -OO


def test_fill_method_docs_fills_every_method_that_uses_a_block():
    @fill_method_docs(x="x : int")
    class A:
        def one(self):
            """One.

            [x]
            """

        def two(self):
            """Two, no block."""

    assert "x : int" in A.one.__doc__ and A.two.__doc__ == "Two, no block."
    with pytest.raises(ValueError, match=r"No method of B has a \[y\] line"):

        @fill_method_docs(x="x : int", y="y : int")
        class B(A):
            def one(self):
                """[x]"""


def _documented_objects():
    """Every class, function and method defined in a skanomaly module."""
    seen = set()
    for info in pkgutil.walk_packages(skanomaly.__path__, "skanomaly."):
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an optional dependency is missing
            continue
        for _, obj in inspect.getmembers(module):
            if getattr(obj, "__module__", None) != info.name or id(obj) in seen:
                continue
            seen.add(id(obj))
            yield f"{info.name}.{getattr(obj, '__qualname__', obj)}", obj
            if inspect.isclass(obj):
                for name, member in vars(obj).items():
                    if callable(member) or isinstance(member, property):
                        yield f"{info.name}.{obj.__qualname__}.{name}", member


def test_no_docstring_keeps_an_unfilled_marker():
    names = [name for name, obj in _documented_objects()]
    assert any(name.endswith("ScoringAPIMixin.score_samples") for name in names)
    left = [name for name, obj in _documented_objects() if _MARKER.search(obj.__doc__ or "")]
    assert not left, f"unfilled documentation markers in {left}"


@pytest.mark.parametrize(
    "name, bad, key",
    [
        ("inpainting", {"patch_size": (0.5, 0.2)}, "patch_size"),
        ("scadn", {"mask_scales": (0.9,)}, "mask_scales"),
    ],
)
def test_check_params_runs_once_and_its_values_reach_fit(name, bad, key, monkeypatch):
    det = make_detector(name, max_epochs=1)
    cls = type(det)
    calls, received = [], {}
    check, fit = cls._check_params, cls._fit

    def counted(self):
        calls.append(1)
        return check(self)

    def spied(self, images, **checked):
        received.update(checked)
        return fit(self, images, **checked)

    monkeypatch.setattr(cls, "_check_params", counted)
    monkeypatch.setattr(cls, "_fit", spied)
    X = np.random.default_rng(0).random((6, 32, 32)).astype(np.float32)
    det.fit(X)
    assert len(calls) == 1 and key in received
    # A parameter error fails before any fitted attribute is set.
    det = make_detector(name, max_epochs=1, **bad)
    with pytest.raises(ValueError, match=key):
        det.fit(X)
    assert not [k for k in vars(det) if k.endswith("_") and not k.startswith("__")]
