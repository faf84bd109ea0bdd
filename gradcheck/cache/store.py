"""Cache entries on disk: JSON files authenticated with a key that lives elsewhere, bounded in size.

An entry is data (JSON, never pickle) and carries an HMAC-SHA256 over everything else in it,
taken with a secret that is neither in the repository nor in the cache directory: the
``GRADCHECK_CACHE_KEY`` environment variable (the GitHub Action sets it from a repository
secret), else ``$XDG_CONFIG_HOME/gradcheck/cache.key`` (``~/.config/gradcheck/cache.key``),
created on first use with mode 0600.  With no usable key the cache is off; it is never read
unauthenticated.  An entry also names its own lookup key, so a valid entry copied to another
file name is refused too.  The store keeps under ``MAX_BYTES``, dropping the least recently used
entries first.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import stat
import tempfile
from pathlib import Path

from gradcheck.cache.keys import SCHEMA, canonical

KEY_VARIABLE = "GRADCHECK_CACHE_KEY"
MIN_KEY_CHARACTERS = 16
#: The cache's size bound; past it the least recently used entries go until 3/4 of it is left.
MAX_BYTES = 128 * 2**20
#: An entry larger than this is not read (a report of a 10k-variable model is a few MB).
MAX_ENTRY_BYTES = 32 * 2**20
_MAC_CONTEXT = b"gradcheck cache entry\0"


class CacheUnavailable(Exception):
    """The cache cannot be used safely; the message says why in one sentence."""


def default_directory(environ=os.environ) -> Path:
    """``$XDG_CACHE_HOME/gradcheck``, else ``~/.cache/gradcheck``: the user's, not the repo's."""
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gradcheck"


def default_key_file(environ=os.environ) -> Path:
    """``$XDG_CONFIG_HOME/gradcheck/cache.key``, else ``~/.config/gradcheck/cache.key``."""
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "gradcheck" / "cache.key"


def load_secret(environ, *, key_file: Path, cache_dir: Path, repository: Path | None) -> bytes:
    """The HMAC key: ``GRADCHECK_CACHE_KEY`` if set, else the key file (created on first use).

    Raises ``CacheUnavailable`` when the variable is too short, or the file sits inside the
    cache directory or the repository, or others may read or write it.
    """
    value = environ.get(KEY_VARIABLE)
    if value:
        if len(value) < MIN_KEY_CHARACTERS:
            raise CacheUnavailable(f"{KEY_VARIABLE} is shorter than {MIN_KEY_CHARACTERS} "
                                   "characters")
        return value.encode("utf-8", "surrogateescape")
    where = key_file.expanduser().absolute()
    for place, name in ((cache_dir, "the cache directory"), (repository, "the repository")):
        if place is not None and where.resolve().is_relative_to(place.resolve()):
            raise CacheUnavailable(f"the cache key {where} is inside {name}, where whoever writes "
                                   "the cache could read it")
    try:
        return _read_key_file(where)
    except FileNotFoundError:
        return _create_key_file(where)


def _read_key_file(path: Path) -> bytes:
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise CacheUnavailable(f"the cache key {path} is not a regular file")
    if hasattr(os, "getuid") and (info.st_uid != os.getuid() or info.st_mode & 0o077):
        raise CacheUnavailable(f"the cache key {path} may be read or written by other users "
                               f"(mode {stat.S_IMODE(info.st_mode):04o}); chmod 600 it")
    key = path.read_bytes().strip()
    if len(key) < MIN_KEY_CHARACTERS:
        raise CacheUnavailable(f"the cache key {path} is shorter than {MIN_KEY_CHARACTERS} "
                               "characters; delete it and a new one is made")
    return key


def _create_key_file(path: Path) -> bytes:
    """A new random key, written whole and readable by its owner only (two runs racing to
    create it agree on one: the second ``link`` fails and that run reads the first's)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".cache.key.", dir=path.parent)
    try:
        os.write(handle, secrets.token_hex(32).encode() + b"\n")
        os.close(handle)
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
    return _read_key_file(path)


class EntryStore:
    """Authenticated JSON entries under ``directory``, one file per lookup key."""

    def __init__(self, directory: Path, secret: bytes):
        self.directory = Path(directory)
        self.secret = secret
        self.written = False

    def path(self, key: str) -> Path:
        return self.directory / f"v{SCHEMA}" / key[:2] / f"{key}.json"

    def read(self, key: str) -> dict | None:
        """The payload stored under ``key``, or None: absent, unreadable, or not authentic."""
        path = self.path(key)
        try:
            if path.stat().st_size > MAX_ENTRY_BYTES:
                return None
            entry = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or not isinstance(entry.get("mac"), str):
            return None
        mac = entry.pop("mac")
        if not hmac.compare_digest(mac, self._mac(entry)) or entry.get("key") != key:
            return None  # forged, edited, made with another key, or copied from another key
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: evicted last
        return entry

    def write(self, key: str, payload: dict) -> None:
        """Store ``payload`` under ``key`` (atomically; ``OSError`` if the directory refuses)."""
        from gradcheck.files import write_atomically

        entry = {**payload, "key": key}
        entry["mac"] = self._mac(entry)
        path = self.path(key)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(path, json.dumps(entry, sort_keys=True))
        self.written = True

    def _mac(self, entry: dict) -> str:
        return hmac.new(self.secret, _MAC_CONTEXT + canonical(entry), hashlib.sha256).hexdigest()

    def evict(self, limit: int = MAX_BYTES) -> int:
        """Drop the least recently used entries while the store is over ``limit``; how many."""
        entries = []
        for path in self.directory.glob(f"v{SCHEMA}/*/*.json"):
            with contextlib.suppress(OSError):
                info = path.stat()
                entries.append((info.st_mtime, info.st_size, path))
        total = sum(size for _, size, _ in entries)
        if total <= limit:
            return 0
        dropped = 0
        for _, size, path in sorted(entries):
            if total <= limit * 3 // 4:
                break
            with contextlib.suppress(OSError):
                path.unlink()
                total -= size
                dropped += 1
        return dropped
