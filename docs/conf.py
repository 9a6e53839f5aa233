"""Sphinx configuration of skanomaly's documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html``.
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "skanomaly"
author = "skanomaly developers"
copyright = "2025, skanomaly developers"

try:  # the installed version, if any
    from importlib.metadata import version as _version

    release = _version("skanomaly")
except Exception:  # pragma: no cover - docs built from a plain checkout
    release = "dev"
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
]

# Docstrings are numpydoc; class member tables would need autosummary stubs.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
autodoc_typehints = "none"
# Heavy optional imports are real dependencies here, so nothing is mocked:
# the docs document the code as installed.

templates_path = []
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"
html_theme = "alabaster"
html_theme_options = {
    "description": "Deep visual anomaly detection with a scikit-learn API",
    "fixed_sidebar": True,
}
html_static_path = []
nitpicky = False
