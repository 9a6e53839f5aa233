"""Imports of optional dependencies, failing with how to install them."""

from importlib import import_module

__all__ = ["import_optional"]


def import_optional(name, message):
    """Import the module ``name``, or raise an ImportError saying ``message``.

    Parameters
    ----------
    name : str
        Dotted module name, e.g. ``"matplotlib.figure"``.
    message : str
        What needs the module and how to install it: the error's text (the
        original ImportError is chained to it).

    Returns
    -------
    module : module
    """
    try:
        return import_module(name)
    except ImportError as exc:
        raise ImportError(message) from exc
