"""Writing files without ever leaving a partial one: the one atomic-write helper.

Every file skanomaly writes (models, ONNX graphs, CSVs, heatmaps, reports)
goes to a temporary name in the target's folder and is renamed onto the
target only when complete, so an interrupt, a full disk or an error leaves
the previous file intact.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["atomic_path", "heatmap_names", "spreadsheet_text"]


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _final_mode(target):
    """The permission bits the finished file gets.

    An existing file keeps its own (rewriting a private ``0600`` file must
    not make it readable by others); a new file gets what ``open`` would
    give it, ``0666`` less the umask.
    """
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(target):
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success.

    The temporary file keeps ``target``'s extension (formats are chosen from
    it).  The finished file keeps the permission bits of the file it
    replaces, or gets those ``open`` would give a new file; on any error or
    interrupt the temporary file is removed and ``target`` is left as it was.

    Parameters
    ----------
    target : str or path-like

    Yields
    ------
    tmp : pathlib.Path
        Write the complete file here.
    """
    target = Path(os.fspath(target))
    fd, tmp = tempfile.mkstemp(
        dir=target.resolve().parent, prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}"
    )
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _final_mode(target))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


#: First characters that make a spreadsheet read a cell as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(text):
    """A text cell that spreadsheets show as text: formula starts get a ``'``."""
    text = str(text)
    return "'" + text if text.startswith(_FORMULA_START) else text


def heatmap_names(paths):
    """Unique, deterministic heatmap file names for ``paths``, in order.

    ``<stem>_heatmap.png``; an input whose stem was already used (``a/x.png``
    and ``b/x.png``, or ``x.png`` and ``x.jpg``) gets ``<stem>_2_heatmap.png``,
    ``<stem>_3_heatmap.png``, ... (compared without case, for case-insensitive
    file systems).
    """
    names, taken = [], set()
    for p in paths:
        stem = Path(p).stem
        name, k = f"{stem}_heatmap.png", 2
        while name.lower() in taken:
            name, k = f"{stem}_{k}_heatmap.png", k + 1
        taken.add(name.lower())
        names.append(name)
    return names
