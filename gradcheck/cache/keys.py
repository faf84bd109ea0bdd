"""What a verdict depends on, as data that a cache key can be computed from (no TensorFlow).

A source's result depends on the model file's bytes (every file of a directory-form model),
the Python files and data files its analysis read (recorded by ``reads`` in the worker, hashed
again on every lookup), the options that change verdicts, and the environment: gradcheck's own
code, the installed packages (TensorFlow, Keras, keras-hub … and every other distribution on
``sys.path``), the interpreter, Keras' configuration and the variables that change what
TensorFlow and Keras do.  Content is hashed, never trusted by timestamp.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

#: Entry layout and key recipe; bump to orphan every older entry.
SCHEMA = 1
#: The packages whose versions are named in the key (every other one counts through ``installed``).
NAMED_PACKAGES = ("gradcheck", "tensorflow", "tensorflow-cpu", "keras", "keras-hub", "tf-keras",
                  "numpy", "h5py")
#: Environment variables that change what TensorFlow or Keras compute.
ENVIRONMENT_VARIABLES = ("KERAS_BACKEND", "KERAS_HOME", "TF_USE_LEGACY_KERAS",
                         "TF_ENABLE_ONEDNN_OPTS", "CUDA_VISIBLE_DEVICES")
#: ``Options`` fields that do not change a verdict: where graphs go, tracebacks, and the memory
#: budget (a source over it is refused, and that refusal is never cached).
NOT_IN_KEY = frozenset({"graph_dir", "debug", "max_memory"})


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a regular file's bytes (``OSError`` if it cannot be read)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def source_fingerprint(source: str) -> dict | None:
    """The bytes a source names, hashed; None when the source cannot be keyed (it is analyzed).

    A ``.keras``/``.h5`` file: its digest.  A directory-form ``.keras`` (``save(zipped=False)``):
    every file's relative path and digest.  A factory: its file's digest (or ``absent``); the
    Python it imports is recorded when it runs.  Pipes, devices and missing paths: None.
    """
    from gradcheck.load.user_code import parse_factory

    factory = parse_factory(source)
    if factory is not None:
        if not factory.is_file:
            return {"factory": source}
        return {"factory": source, "file": regular_digest(Path(factory.target)) or "absent"}
    path = Path(source)
    if path.is_dir() and (path / "config.json").is_file():
        return {"directory": _tree_digests(path)}
    digest = regular_digest(path)
    return {"file": digest} if digest else None


def regular_digest(path: str | os.PathLike) -> str | None:
    """A regular file's digest; None for anything else (a pipe is never opened) or an error."""
    try:
        if not os.path.isfile(path):  # never open a pipe or a device: it could block
            return None
        return file_digest(path)
    except OSError:
        return None


def _tree_digests(root: Path) -> list[list[str]] | None:
    entries = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            digest = regular_digest(path)
            if digest is None:
                return None
            entries.append([path.relative_to(root).as_posix(), digest])
    return entries


def options_fingerprint(options: Any) -> dict:
    """The engine ``Options`` fields that change a verdict, as JSON data."""
    fields = dataclasses.asdict(options)
    return {name: list(value) if isinstance(value, tuple) else value
            for name, value in sorted(fields.items()) if name not in NOT_IN_KEY}


def environment() -> dict:
    """Everything outside the source and the options that a verdict depends on (computed once a
    run: a few milliseconds)."""
    return {
        "versions": {name: _version(name) for name in NAMED_PACKAGES},
        "installed": _installed(),
        "gradcheck_code": _package_digest(),
        "python": sys.version,
        "platform": [sys.platform, platform.machine()],
        "sys_path": _search_path(),
        "variables": {name: os.environ.get(name) for name in ENVIRONMENT_VARIABLES},
        "keras_config": _keras_config_digest(),
    }


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _search_path() -> list[str]:
    """``sys.path`` without the entry the interpreter put first for how it was started (the
    script's folder, or the working directory for ``-m`` and ``-c``, which the key holds anyway):
    ``gradcheck`` and ``python -m gradcheck`` share their entries."""
    return list(sys.path if sys.flags.safe_path else sys.path[1:])


def _installed() -> list[str]:
    """Every distribution on the search path by its metadata directory (``keras-3.15.1.dist-info``):
    installing, upgrading or removing any package changes the key."""
    names = []
    for entry in _search_path():
        try:
            listed = os.listdir(entry or ".")
        except OSError:
            continue
        names += [f"{entry}/{n}" for n in listed if n.endswith((".dist-info", ".egg-info"))]
    return sorted(names)


def _package_digest() -> str:
    """gradcheck's own source, hashed: an edited checkout is another gradcheck."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _keras_config_digest() -> str | None:
    """``keras.json`` (backend, floatx, image_data_format) as Keras would find it."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return regular_digest(Path(home) / "keras.json")


def lookup_key(source: str, fingerprint: dict, options: dict, env: dict) -> str:
    """The hex key of one source's entry: what it names, where it runs, how, and with what."""
    material = {"schema": SCHEMA, "source": source, "cwd": os.getcwd(), "source_bytes": fingerprint,
                "options": options, "environment": env}
    return hashlib.sha256(canonical(material)).hexdigest()


def canonical(data: Any) -> bytes:
    """One byte string per JSON value (sorted keys, no spaces): what keys and MACs are taken of."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
