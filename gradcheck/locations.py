"""Where in the user's own code something happened: a ``SourceLocation`` or None.

User code is every Python file outside TensorFlow, Keras, keras-hub, installed packages, the
standard library and gradcheck itself.  Paths are relative to the repository root (the nearest
directory above the file holding ``pyproject.toml`` or ``.git``), else to the current directory.
Code of another installed package (a third-party layer library such as rkan) is named too, with
``SourceLocation.package`` set (``"rkan 0.0.3"``) and a path inside it, so that the user can report
it upstream; TensorFlow, the Keras family and the packages they run on (NumPy, optree …) never are.
No TensorFlow: the frames and functions are plain Python.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import sysconfig
from pathlib import Path

from gradcheck.results import SourceLocation

#: TensorFlow and the Keras family: their code is never the user's, even when installed outside
#: site-packages, and a model class they define is library code (``plans.train_step``).
LIBRARY_PACKAGES = ("tensorflow", "keras", "keras_hub", "keras_nlp", "keras_cv", "tf_keras")

#: Installed packages that carry values and calls between the user's code and TensorFlow (a
#: ``np.mean`` on a tensor, a ``tree.map_structure`` callback, a test runner): a line in them is
#: never the one to report, the user's line that called them is.
INFRASTRUCTURE_PACKAGES = frozenset({
    "numpy", "scipy", "pandas", "optree", "tree", "wrapt", "absl", "ml_dtypes", "typing_extensions",
    "google", "h5py", "namex", "rich", "typer", "click", "pytest", "_pytest", "pluggy", "networkx",
    "gradcheck", "six", "setuptools", "pkg_resources", "_distutils_hack", "IPython", "ipykernel"})

#: Part of the name of the files AutoGraph writes its converted code to.
_AUTOGRAPH_FILE = "__autograph_generated_file"

#: (file suffix, function) of the frames that enter a library layer's call(): an op found with
#: one of these nearer than any user frame ran inside a Keras/keras-hub layer, not user code.
_LAYER_ENTRIES = (("keras/src/layers/layer.py", "__call__"),
                  ("keras/src/ops/operation.py", "__call__"))


def caller_location(skip: int = 1) -> SourceLocation | None:
    """The innermost frame of user code (or of a third-party package) of the current stack, unless
    a library layer's call() is nearer.

    Only called for ops that can cut a gradient, so ordinary ops never pay for the walk.  The walk
    ends where it re-enters gradcheck: what lies beyond (a test runner, the CLI) is not the step.
    """
    return _innermost(sys._getframe(skip), is_named_file, library_layers=True)


def step_sites(skip: int = 1) -> tuple[SourceLocation | None, SourceLocation | None]:
    """(``caller_location``, the outermost user-code frame inside the step) in one walk.

    The outermost user frame is the line of the step's own code that led here, e.g. the
    ``y_pred = self(x)`` of a ``train_step`` whose layer reads a weight.
    """
    frame, inner, outer, left_gradcheck = sys._getframe(skip), None, None, False
    stopped = False
    while frame is not None:
        filename = frame.f_code.co_filename
        if _is_gradcheck_file(filename):
            if left_gradcheck:
                break
        else:
            left_gradcheck = True
            if not stopped and is_named_file(filename):
                inner, stopped = _location(filename, frame), True
            elif not stopped and _enters_library_layer(filename, frame.f_code.co_name):
                inner, stopped = getattr(frame.f_locals.get("self"), CREATED_AT, None), True
            if is_user_file(filename):
                outer = _location(filename, frame)
        frame = frame.f_back
    return inner, outer


def calling_location(skip: int = 1) -> SourceLocation | None:
    """The innermost frame outside TensorFlow and gradcheck: the line that called into TensorFlow.

    For a ``tape.gradient`` call that is the user's training step, or Keras' own (a model that
    overrides only ``compute_loss`` runs Keras' ``train_step``, whose line is then named, with a
    path inside its package).
    """
    return _innermost(sys._getframe(skip), _outside_tensorflow_and_gradcheck, library_layers=False)


def _innermost(frame, accept, *, library_layers: bool) -> SourceLocation | None:
    """Walk out from ``frame`` to the first whose file ``accept``s (AutoGraph-converted code is
    mapped back to the line it came from); with ``library_layers``, stop at a library layer's
    ``call()`` entered before any accepted frame."""
    left_gradcheck = False
    while frame is not None:
        filename = frame.f_code.co_filename
        if _is_gradcheck_file(filename):
            if left_gradcheck and library_layers:
                return None  # back in gradcheck: beyond it lies no code of the step
        else:
            left_gradcheck = True
        if _AUTOGRAPH_FILE in filename:
            origin = _autograph_origin(frame)
            if origin is not None:
                return origin
        elif accept(filename):
            return _location(filename, frame)
        if library_layers and _enters_library_layer(filename, frame.f_code.co_name):
            # A keras.ops call written in a factory runs as a node of the functional graph: the
            # line is where the node was created, if it was recorded (hooks.loading).
            return getattr(frame.f_locals.get("self"), CREATED_AT, None)
        frame = frame.f_back
    return None


def _location(filename: str, frame) -> SourceLocation:
    return location_of_frame(frame, frame.f_lineno)


def location_of_frame(frame, line: int) -> SourceLocation:
    """The ``SourceLocation`` of ``line`` in ``frame``'s file and function (a traceback's frame
    gives the line separately)."""
    filename = frame.f_code.co_filename
    return SourceLocation(display_path(filename), line, frame.f_code.co_name,
                          None if is_user_file(filename) else package_of(filename))


def _outside_tensorflow_and_gradcheck(filename: str) -> bool:
    return not filename.startswith("<") and not _in_tensorflow_or_gradcheck(filename)


def location_text(location: SourceLocation) -> str:
    """``models/layers.py:14 (call)``: path and line as editors and CI logs link them."""
    return f"{location.path}:{location.line} ({location.function})"


def where_text(location: SourceLocation) -> str:
    """``at models/layers.py:14 (call)``, or for a third-party package's line
    ``in rkan 0.0.3, rkan/tensorflow.py:57 (call)`` (so the user knows whom to tell)."""
    if location.package:
        return f"in {location.package}, {location_text(location)}"
    return f"at {location_text(location)}"


def short_text(location: SourceLocation | None) -> str:
    """``file.py:LINE``: the file's name and line, as the loss line names a gradient call."""
    if location is None:
        return "<unknown>"
    return f"{location.path.rsplit('/', 1)[-1]}:{location.line}"


def display_path(filename: str) -> str:
    """User code relative to its repository (``relative_path``); installed code relative to the
    ``sys.path`` entry that holds it (``keras/src/…/trainer.py``)."""
    if is_user_file(filename):
        return relative_path(filename)
    path = os.path.realpath(filename)
    roots = [os.path.realpath(entry) for entry in sys.path if entry]
    holding = [root for root in roots if path.startswith(root + os.sep)]
    if not holding:
        return Path(path).as_posix()
    return Path(os.path.relpath(path, max(holding, key=len))).as_posix()


@functools.cache
def package_of(filename: str) -> str | None:
    """``"keras 3.15.1"``: the distribution that installed the package holding ``filename``."""
    import importlib.metadata

    top = display_path(filename).split("/", 1)[0].removesuffix(".py")
    names = importlib.metadata.packages_distributions().get(top) or [top]
    try:
        return f"{names[0]} {importlib.metadata.version(names[0])}"
    except importlib.metadata.PackageNotFoundError:
        return top or None


@functools.cache
def _is_gradcheck_file(filename: str) -> bool:
    """gradcheck's own code that runs the step (its hooks, wrapped around TF calls, do not count:
    the walk goes on through them)."""
    path = os.path.realpath(filename)
    return any(path.startswith(root + os.sep) and not path.startswith(
        os.path.join(root, "hooks") + os.sep) for root in _package_roots("gradcheck"))


def _in_tensorflow_or_gradcheck(filename: str) -> bool:
    path = os.path.realpath(filename)
    return any(path.startswith(root + os.sep) for package in ("tensorflow", "gradcheck")
               for root in _package_roots(package))


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
    if origin is None or not is_named_file(origin.loc.filename):
        return None
    filename = origin.loc.filename
    return SourceLocation(display_path(filename), origin.loc.lineno,
                          origin.function_name or frame.f_code.co_name,
                          None if is_user_file(filename) else package_of(filename))


def function_location(function) -> SourceLocation | None:
    """The ``def`` line of ``function`` (a layer's ``call``) if it is user code or a third-party
    package's (``is_named_file``), else None."""
    function = inspect.unwrap(getattr(function, "__func__", function))
    code = getattr(function, "__code__", None)
    if code is None or not is_named_file(code.co_filename):
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
    return SourceLocation(display_path(code.co_filename), line, code.co_name,
                          None if is_user_file(code.co_filename) else package_of(code.co_filename))


@functools.cache
def is_named_file(filename: str) -> bool:
    """User code, or code of an installed third-party package: a line a finding may name."""
    return is_user_file(filename) or is_third_party_file(filename)


@functools.cache
def is_third_party_file(filename: str) -> bool:
    """A file of an installed package that is neither TensorFlow, the Keras family, the standard
    library, gradcheck, nor one of ``INFRASTRUCTURE_PACKAGES``."""
    if not filename or filename.startswith("<") or is_user_file(filename):
        return False
    path = os.path.realpath(filename)
    parts = Path(path).parts
    if "site-packages" not in parts and "dist-packages" not in parts:
        return False
    if any(path.startswith(root + os.sep) for package in (*LIBRARY_PACKAGES, "gradcheck")
           for root in _package_roots(package)):
        return False
    top = display_path(filename).split("/", 1)[0].removesuffix(".py")
    return top not in INFRASTRUCTURE_PACKAGES and top not in LIBRARY_PACKAGES


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
    for package in (*LIBRARY_PACKAGES, "gradcheck"):
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
