"""Documentation written once and filled into several docstrings.

A docstring line that holds only ``[name]`` is replaced by the text block of
that name, indented as the line was.  :func:`~skanomaly._shared_params.fill_shared_doc`
fills in this way the parameters every detector shares; :func:`fill_doc`
fills any other block, such as the parameters several functions of a module
share.
"""

__all__ = ["fill_doc", "fill_markers", "fill_method_docs"]


def fill_markers(obj, blocks):
    """Replace each ``[name]`` line of ``obj``'s docstring by ``blocks[name]``.

    Parameters
    ----------
    obj : class or function
        Its ``__doc__`` is rewritten in place.
    blocks : dict of str to str
        The text of each marker, unindented; every marker must occur.

    Returns
    -------
    obj : class or function
        ``obj`` itself, so that this serves as a decorator.

    Raises
    ------
    ValueError
        The docstring lacks the marker of one of ``blocks``.  A docstring
        stripped by ``python -OO`` (None) is left as it is.
    """
    if obj.__doc__ is None:
        return obj
    lines, missing = [], set(blocks)
    for line in obj.__doc__.splitlines():
        key = line.strip()
        name = key[1:-1] if key.startswith("[") and key.endswith("]") else None
        if name in blocks:
            indent = line[: len(line) - len(line.lstrip())]
            lines.extend(indent + b if b else b for b in blocks[name].splitlines())
            missing.discard(name)
        else:
            lines.append(line)
    if missing:
        marker = f"[{sorted(missing)[0]}]"
        raise ValueError(f"{obj.__name__}'s docstring has no {marker!r} line.")
    obj.__doc__ = "\n".join(lines)
    return obj


def fill_doc(**blocks):
    """Decorator: fill the ``[name]`` lines of a docstring with ``blocks[name]``.

    ``@fill_doc(curve_figure=_CURVE_FIGURE_DOC)`` replaces the line
    ``[curve_figure]`` (see :func:`fill_markers`).
    """
    return lambda obj: fill_markers(obj, blocks)


def fill_method_docs(**blocks):
    """Class decorator: fill the ``[name]`` lines of the docstrings of its methods.

    Every method defined in the class body whose docstring holds the marker
    of one of ``blocks`` gets it filled (see :func:`fill_markers`); a block
    that no method uses is an error.
    """

    def decorate(cls):
        unused = set(blocks)
        for method in vars(cls).values():
            doc = getattr(method, "__doc__", None) if callable(method) else None
            used = {n: b for n, b in blocks.items() if doc and f"[{n}]" in doc}
            if used:
                fill_markers(method, used)
                unused -= set(used)
        if unused:
            raise ValueError(f"No method of {cls.__name__} has a [{sorted(unused)[0]}] line.")
        return cls

    return decorate
