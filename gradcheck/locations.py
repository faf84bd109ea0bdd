"""Where in the user's own code something happened: a ``SourceLocation`` or None.

User code is every Python file outside TensorFlow, Keras, keras-hub, installed packages, the
standard library and gradcheck itself.  Paths are relative to the repository root (the nearest
directory above the file holding ``pyproject.toml`` or ``.git``), else to the current directory.
No TensorFlow: the frames and functions are plain Python.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import sysconfig
from pathlib import Path

from gradcheck.report import SourceLocation

#: Packages whose code is never the user's, even when installed outside site-packages.
LIBRARY_PACKAGES = ("tensorflow", "keras", "keras_hub", "tf_keras", "gradcheck")

#: Part of the name of the files AutoGraph writes its converted code to.
_AUTOGRAPH_FILE = "__autograph_generated_file"

#: (file suffix, function) of the frames that enter a library layer's call(): an op found with
#: one of these nearer than any user frame ran inside a Keras/keras-hub layer, not user code.
_LAYER_ENTRIES = (("keras/src/layers/layer.py", "__call__"),
                  ("keras/src/ops/operation.py", "__call__"))


def caller_location(skip: int = 1) -> SourceLocation | None:
    """The innermost user-code frame of the current stack, unless a library layer's call() is nearer.

    Only called for ops that can cut a gradient, so ordinary ops never pay for the walk.
    """
    frame = sys._getframe(skip)
    while frame is not None:
        filename = frame.f_code.co_filename
        if _AUTOGRAPH_FILE in filename:
            origin = _autograph_origin(frame)
            if origin is not None:
                return origin
        elif is_user_file(filename):
            return SourceLocation(relative_path(filename), frame.f_lineno, frame.f_code.co_name)
        if _enters_library_layer(filename, frame.f_code.co_name):
            # A keras.ops call written in a factory runs as a node of the functional graph: the
            # line is where the node was created, if it was recorded (hooks.loading).
            return getattr(frame.f_locals.get("self"), CREATED_AT, None)
        frame = frame.f_back
    return None


#: Attribute holding the ``SourceLocation`` where a keras.ops node of a functional model was built.
CREATED_AT = "_gradcheck_created_at"


def creation_location() -> SourceLocation | None:
    """The user's line that is creating a Keras operation (``hooks.loading.recording_creation``)."""
    frame = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not _in_package(filename, "keras"):
            return (SourceLocation(relative_path(filename), frame.f_lineno, frame.f_code.co_name)
                    if is_user_file(filename) else None)
        frame = frame.f_back
    return None


def _in_package(filename: str, package: str) -> bool:
    path = os.path.realpath(filename)
    return any(path.startswith(root + os.sep) for root in _package_roots(package))


@functools.cache
def _package_roots(package: str) -> tuple[str, ...]:
    import importlib.util

    spec = importlib.util.find_spec(package)
    return tuple(os.path.realpath(p) for p in (spec.submodule_search_locations or [])) if spec else ()


def _autograph_origin(frame) -> SourceLocation | None:
    """The user's line behind a frame of AutoGraph-converted code, from the converted function's
    source map (``converted_call``, one frame out, holds that function as ``converted_f``)."""
    converted = frame.f_back.f_locals.get("converted_f") if frame.f_back is not None else None
    source_map = getattr(converted, "ag_source_map", None) or {}
    origin = source_map.get((frame.f_code.co_filename, frame.f_lineno))
    if origin is None or not is_user_file(origin.loc.filename):
        return None
    return SourceLocation(relative_path(origin.loc.filename), origin.loc.lineno,
                          origin.function_name or frame.f_code.co_name)


def function_location(function) -> SourceLocation | None:
    """The ``def`` line of ``function`` (a layer's ``call``) if it is user code, else None."""
    function = inspect.unwrap(getattr(function, "__func__", function))
    code = getattr(function, "__code__", None)
    if code is None or not is_user_file(code.co_filename):
        return None
    line = code.co_firstlineno
    try:  # co_firstlineno is the first decorator's line; the user looks for the ``def``
        lines, start = inspect.getsourcelines(function)
        for offset, text in enumerate(lines):
            if text.lstrip().startswith(("def ", "async def ")):
                line = start + offset
                break
    except (OSError, TypeError):
        pass
    return SourceLocation(relative_path(code.co_filename), line, code.co_name)


@functools.cache
def is_user_file(filename: str) -> bool:
    """True for a real Python file that belongs to none of the libraries above."""
    if not filename or filename.startswith("<"):
        return False
    path = os.path.realpath(filename)
    parts = Path(path).parts
    if "site-packages" in parts or "dist-packages" in parts:
        return False
    return not any(path.startswith(root + os.sep) for root in _library_roots())


@functools.cache
def _library_roots() -> tuple[str, ...]:
    import importlib.util

    roots = {os.path.realpath(sysconfig.get_paths()[key]) for key in ("stdlib", "platstdlib")}
    for package in LIBRARY_PACKAGES:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        for location in (spec.submodule_search_locations or []) if spec else []:
            roots.add(os.path.realpath(location))
    return tuple(sorted(roots))


def _enters_library_layer(filename: str, function: str) -> bool:
    normalized = filename.replace(os.sep, "/")
    return any(function == name and normalized.endswith(suffix) for suffix, name in _LAYER_ENTRIES)


@functools.cache
def relative_path(filename: str) -> str:
    """``filename`` relative to its repository root, else to the current directory (``/``-separated)."""
    path = Path(os.path.realpath(filename))
    root = _repository_root(path.parent)
    base = root if root is not None else Path(os.path.realpath(os.getcwd()))
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return Path(os.path.relpath(path, base)).as_posix()


def _repository_root(directory: Path) -> Path | None:
    for candidate in (directory, *directory.parents):
        if (candidate / "pyproject.toml").is_file() or (candidate / ".git").exists():
            return candidate
    return None
