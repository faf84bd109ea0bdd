"""Writing what gradcheck produces (reports, baselines): whole or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename.

    An interrupted run never leaves half a report or baseline behind, and a reader never sees
    one.  Characters the encoding cannot hold (lone surrogates from undecodable file names) are
    written as backslash escapes instead of failing.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                         dir=path.parent)
    try:
        os.chmod(temporary, _default_mode(path))
        with os.fdopen(handle, "wb") as out:
            out.write(text.encode("utf-8", "backslashreplace"))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _default_mode(path: Path) -> int:
    """The mode the file would get from a plain ``open``: kept if it exists, else 0o666 - umask."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
