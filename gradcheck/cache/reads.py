"""In the worker: which of the user's files one source's analysis read, and their digests.

The cache may reuse a result only while every file behind it is unchanged, so the worker
records, for each source, the user's Python modules it imported (factories, ``--custom-objects``,
``--loss``, ``--data`` and whatever they import) and the other files its code opened for reading
(a factory's JSON of hyperparameters, ``--data``'s arrays).  "The user's" means outside the
standard library, site-packages and gradcheck itself: installed packages count through their
versions in the key instead.

Modules are recorded by import, so a worker that analyzes several sources first forgets the
user's modules a source imported before the next one starts: each source imports, and records,
its own.  (It also means no source sees module state another one left behind.)  Opened files are
seen through an audit hook (``sys.addaudithook``), installed once per worker.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
from pathlib import Path

from gradcheck.cache.keys import file_digest

#: Paths never recorded: kernel interfaces, devices, and compiled bytecode (its source is).
_SYSTEM_PREFIXES = ("/proc/", "/sys/", "/dev/")
_MAIN_MODULES = ("__main__", "__mp_main__")

_opened: set[str] | None = None  #: files opened for reading while a source is recorded
_hook_installed = False


def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[name] for name in ("stdlib", "platstdlib", "purelib", "platlib", "scripts")
             if name in paths}
    roots.update(site.getsitepackages() if hasattr(site, "getsitepackages") else ())
    roots.add(site.getusersitepackages())
    roots.add(str(Path(__file__).resolve().parents[1]))  # gradcheck itself
    return tuple(sorted(os.path.join(os.path.realpath(r), "") for r in roots if r))


_LIBRARY_ROOTS = _library_roots()


def is_user_file(path: str) -> bool:
    """True for a file of the user's: not the standard library, an installed package or gradcheck."""
    real = os.path.realpath(path)
    if real.startswith(_SYSTEM_PREFIXES) or real.endswith((".pyc", ".pyo")):
        return False
    return not real.startswith(_LIBRARY_ROOTS)


def _module_file(module) -> str | None:
    path = getattr(module, "__file__", None)
    return path if isinstance(path, str) and os.path.isfile(path) else None


def forget_user_modules() -> None:
    """Drop the user's modules from ``sys.modules``, so the next source imports its own again."""
    for name, module in list(sys.modules.items()):
        path = _module_file(module)
        if name not in _MAIN_MODULES and path is not None and is_user_file(path):
            del sys.modules[name]


def _audit(event: str, args: tuple) -> None:
    if event != "open" or _opened is None:
        return
    try:  # an exception here would fail the user's open(): never let one out
        path, mode, flags = args
        if path is None or isinstance(path, int):
            return
        if mode is None:  # os.open: the access mode is in the flags
            reading = (flags & os.O_ACCMODE) == os.O_RDONLY
        else:
            reading = not any(c in mode for c in "wax+")
        if reading:
            _opened.add(os.path.abspath(os.fsdecode(path)))
    except Exception:  # noqa: BLE001
        pass


class SourceReads:
    """Record one source's reads: ``with SourceReads() as reads: …``; then ``reads.digests()``."""

    def __init__(self, *, also: tuple[tuple[str, str], ...] = (), exclude: str = ""):
        self.also = also  #: (path, digest) pairs read before, for this source (custom objects)
        self.exclude = os.path.abspath(exclude) if exclude else ""  #: the model file (in the key)
        self.files: set[str] = set()

    def __enter__(self) -> SourceReads:
        global _opened, _hook_installed
        if not _hook_installed:
            sys.addaudithook(_audit)
            _hook_installed = True
        forget_user_modules()
        _opened = set()
        return self

    def __exit__(self, *exc) -> bool:
        global _opened
        opened, _opened = _opened or set(), None
        modules = {_module_file(m) for name, m in list(sys.modules.items())
                   if name not in _MAIN_MODULES}  # the parent's script, run again by spawn
        candidates = {os.path.abspath(p) for p in modules if p} | opened
        self.files = {p for p in candidates
                      if is_user_file(p) and os.path.isfile(p) and not self._excluded(p)}
        return False

    def _excluded(self, path: str) -> bool:
        return bool(self.exclude) and (path == self.exclude or path.startswith(self.exclude + os.sep))

    def digests(self) -> tuple[tuple[str, str], ...] | None:
        """Every recorded file with its SHA-256, sorted; None if one can no longer be read."""
        found = dict(self.also)
        for path in self.files:
            try:
                found[path] = file_digest(path)
            except OSError:
                return None
        return tuple(sorted(found.items()))
