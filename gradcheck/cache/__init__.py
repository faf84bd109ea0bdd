"""The result cache: a source whose inputs did not change is not analyzed again.

Like ruff's and mypy's caches, a result is keyed on content and settings, never on timestamps:
the lookup key (``keys.lookup_key``) covers the source string, the working directory, the bytes
the source names, the options that change verdicts and the environment (gradcheck's code, every
installed package's version, the interpreter); the entry then lists every other file the
analysis read, with its digest, and those are hashed again on each lookup.  The lookup happens in
the CLI's process before any worker starts, so a run where every source is cached starts no
worker and imports no TensorFlow.

A cache is never trusted more than the files it describes (DESIGN "Trust"): it lives outside the
repository (the user's cache directory), holds JSON, and every entry is authenticated with a key
that no pull request can read or write (``store``).  An entry that fails any check is a miss and
the source is analyzed.  Errors that depend on the machine rather than on the files (a timeout,
a crash, running out of memory, a missing module) are never stored.
"""

from __future__ import annotations

import os
from pathlib import Path

from gradcheck.cache import codec, keys
from gradcheck.cache.store import (
    KEY_VARIABLE,
    CacheUnavailable,
    EntryStore,
    default_directory,
    default_key_file,
    load_secret,
)
from gradcheck.problems import ErrorKind
from gradcheck.results import ModelReport

__all__ = ["KEY_VARIABLE", "CacheUnavailable", "ResultCache", "open_cache"]

#: Source errors that say something about the machine or the moment, not about the files.
NOT_STORED = frozenset({
    ErrorKind.TIMEOUT, ErrorKind.CRASHED, ErrorKind.OUT_OF_MEMORY, ErrorKind.TOO_LARGE,
    ErrorKind.INTERRUPTED, ErrorKind.INTERNAL, ErrorKind.MISSING, ErrorKind.IMPORT_FAILED,
    ErrorKind.UNREADABLE, ErrorKind.GRAPH_DIR,
})


class ResultCache:
    """Look sources up before analysis; store what the workers found after it."""

    def __init__(self, store: EntryStore, options):
        self.store = store
        self.options = keys.options_fingerprint(options)
        self.environment = keys.environment()
        self._keys: dict[str, str] = {}  #: source -> its lookup key, taken at lookup

    @property
    def directory(self) -> Path:
        return self.store.directory

    def lookup(self, source: str) -> ModelReport | None:
        """The stored report of ``source`` if every input behind it is unchanged, else None."""
        fingerprint = keys.source_fingerprint(source)
        if fingerprint is None:
            return None
        key = keys.lookup_key(source, fingerprint, self.options, self.environment)
        self._keys[source] = key
        entry = self.store.read(key)
        if entry is None or entry.get("source") != source or not _unchanged(entry.get("reads")):
            return None
        try:
            report = codec.decode_model(entry.get("report"))
        except (ValueError, TypeError, KeyError):
            return None
        return report if report.source == source else None

    def add(self, source: str, report: ModelReport, reads) -> bool:
        """Store the analysis of ``source`` (looked up before); False if it is not stored."""
        key = self._keys.get(source)
        if key is None or reads is None or not _storable(report):
            return False
        payload = {"source": source, "reads": [list(pair) for pair in reads],
                   "report": codec.encode(report)}
        try:
            self.store.write(key, payload)
        except OSError:
            return False  # a full disk or a read-only cache: the run goes on without it
        return True

    def close(self) -> None:
        """Keep the cache under its size bound (only after a run that wrote to it)."""
        if self.store.written:
            self.store.evict()


def _unchanged(reads) -> bool:
    if not isinstance(reads, list):
        return False
    for item in reads:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            return False
        if keys.regular_digest(Path(item[0])) != item[1]:
            return False
    return True


def _storable(report: ModelReport) -> bool:
    if report.ok:
        return True
    kind = report.error.type if report.error is not None else None
    return kind is not None and kind not in {k.value for k in NOT_STORED}


def open_cache(options, *, directory: str | None, environ=os.environ) -> ResultCache:
    """The cache in ``directory`` (default: the user's cache directory) for runs with ``options``.

    Raises ``CacheUnavailable`` when no key can be had or the directory cannot be made.
    """
    where = Path(directory).expanduser() if directory else default_directory(environ)
    try:
        secret = load_secret(environ, key_file=default_key_file(environ), cache_dir=where,
                             repository=_repository(Path.cwd()))
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheUnavailable(f"{exc.strerror or exc}: {exc.filename or where}") from None
    return ResultCache(EntryStore(where, secret), options)


def _repository(start: Path) -> Path | None:
    """The working tree around ``start`` (the nearest folder with a ``.git``), if any."""
    for folder in (start.resolve(), *start.resolve().parents):
        if (folder / ".git").exists():
            return folder
    return None
