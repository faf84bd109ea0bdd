"""Turn a SOURCE string into a Keras model: ``.keras``, ``.h5``, ``file.py:fn`` or ``pkg.mod:fn``.

Input files are only ever opened for reading.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradcheck.problems import SourceProblem

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


@dataclass(frozen=True)
class FactorySpec:
    """A ``target:function`` source: ``target`` is a ``.py`` path or a dotted module name."""

    target: str
    function: str
    is_file: bool


def parse_factory(source: str) -> FactorySpec | None:
    """Return the factory spec if ``source`` looks like ``file.py:fn`` or ``pkg.mod:fn``."""
    if ":" not in source or source.lower().endswith(MODEL_SUFFIXES):
        return None
    target, _, function = source.rpartition(":")
    if not target or not function.isidentifier():
        return None
    is_file = target.endswith(".py") or "/" in target or "\\" in target
    if not is_file and not all(part.isidentifier() for part in target.split(".")):
        return None
    return FactorySpec(target, function, is_file)


def source_file(source: str) -> str:
    """The file a source lives in (for locating findings): the path part of a factory."""
    spec = parse_factory(source)
    return spec.target if spec and spec.is_file else source


def import_custom_objects(specs: list[str]) -> dict[str, Any]:
    """Import each ``.py`` file or module so its registered Keras classes become known.

    Also returns the Keras classes and functions the modules define, by name, so that classes
    the author forgot to register still deserialize.
    """
    import keras

    found: dict[str, Any] = {}
    for spec in specs:
        module = import_target(spec, is_file=spec.endswith(".py") or "/" in spec, what="--custom-objects")
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, (keras.layers.Layer, keras.losses.Loss,
                                                             keras.initializers.Initializer,
                                                             keras.regularizers.Regularizer,
                                                             keras.constraints.Constraint)):
                found[name] = value
    return found


def load_source(source: str, *, custom_objects: dict[str, Any], safe_mode: bool,
                weights: bool = True):
    """Load one source into a Keras model (or layer); raise ``SourceProblem`` on any user error."""
    factory = parse_factory(source)
    if factory is not None:
        return _call_factory(source, factory)
    path = Path(source)
    if not path.exists():
        raise SourceProblem("missing", f"{source}: no such file or directory; check the path.")
    if path.is_dir():
        raise SourceProblem("not-a-file", f"{source} is a directory; give a .keras or .h5 file, "
                            "or a factory as path/to/file.py:function.")
    if path.stat().st_size == 0:
        raise SourceProblem("empty", f"{source} is an empty file (0 bytes); re-save the model.")
    suffix = path.suffix.lower()
    if suffix == ".keras":
        return _load_keras(path, source, custom_objects, safe_mode, weights)
    if suffix in (".h5", ".hdf5"):
        return _load_h5(path, source, custom_objects, safe_mode)
    raise SourceProblem("unsupported", f"{source}: unsupported file type '{path.suffix}'; gradcheck "
                        "reads .keras and .h5 model files and factories written as file.py:function.")


def _load_keras(path: Path, source: str, custom_objects, safe_mode: bool, weights: bool):
    import keras

    if not zipfile.is_zipfile(path):
        raise SourceProblem("corrupt", f"{source} is not a valid .keras file (not a zip archive); "
                            "the file is corrupt or was saved in another format.")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "config.json" not in names:
                raise SourceProblem("corrupt", f"{source} has no config.json inside; it is not a "
                                    "Keras model archive (was it saved with save_weights?).")
            raw_config = archive.read("config.json")
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise SourceProblem("corrupt", f"{source} is a damaged .keras archive ({exc}); re-save the "
                            "model.") from exc
    if bad is not None:
        raise SourceProblem("corrupt", f"{source} is a damaged .keras archive ({bad} fails its "
                            "checksum, the file is probably truncated); re-save the model.")
    try:
        config = json.loads(raw_config)
    except ValueError as exc:
        raise SourceProblem("corrupt", f"{source} has an invalid config.json ({exc.args[0]}); "
                            "re-save the model.") from exc
    _check_classes_known(source, config, custom_objects)
    try:
        with keras.saving.custom_object_scope(custom_objects):
            if weights:
                return keras.saving.load_model(path, custom_objects=custom_objects,
                                               compile=True, safe_mode=safe_mode)
            return _model_from_config(config, custom_objects, safe_mode)
    except SourceProblem:
        raise
    except Exception as exc:  # Keras raises many types here; translate the ones we know.
        raise _translate_load_error(source, exc) from exc


def _model_from_config(config: dict, custom_objects, safe_mode: bool):
    """Build the architecture (and compile it as saved) without reading the stored weights."""
    import keras

    model = keras.saving.deserialize_keras_object(config, custom_objects=custom_objects,
                                                  safe_mode=safe_mode)
    compile_config = config.get("compile_config")
    if compile_config and hasattr(model, "compile_from_config"):
        model.compile_from_config(compile_config)
    return model


def _load_h5(path: Path, source: str, custom_objects, safe_mode: bool):
    import h5py
    import keras

    try:
        with h5py.File(path, "r") as handle:
            has_config = "model_config" in handle.attrs
            has_weights = "model_weights" in handle or "layer_names" in handle.attrs
    except OSError as exc:
        raise SourceProblem("corrupt", f"{source} is not a valid HDF5 file; the file is corrupt or "
                            "truncated.") from exc
    if not has_config:
        what = "weights but no model architecture" if has_weights else "no Keras model"
        raise SourceProblem("weights-only", f"{source} holds {what} (saved with save_weights?); "
                            "save the whole model with model.save(), or give a factory file.py:fn "
                            "that builds it.")
    try:
        with keras.saving.custom_object_scope(custom_objects):
            return keras.saving.load_model(path, custom_objects=custom_objects, compile=True,
                                           safe_mode=safe_mode)
    except Exception as exc:
        raise _translate_load_error(source, exc) from exc


def _check_classes_known(source: str, config: Any, custom_objects) -> None:
    """Refuse early, by name, a layer class nobody registered (Keras' own message is a wall)."""
    import keras

    for node in _walk(config):
        class_name = node.get("class_name")
        if not isinstance(class_name, str) or "config" not in node or class_name.startswith("__"):
            continue
        registered = node.get("registered_name") or class_name
        if registered in custom_objects or class_name in custom_objects:
            continue
        if keras.saving.get_registered_object(registered) is not None:
            continue
        module = node.get("module") or ""
        if module.startswith(("keras", "keras_hub", "keras_nlp", "keras_cv", "tensorflow")):
            if _module_has(module, class_name):
                continue
        if module in ("builtins", "") and class_name in ("function", "__lambda__", "__tensor__",
                                                         "__numpy__", "__bytes__", "__typespec__",
                                                         "__ellipsis__", "__slice__"):
            continue
        raise SourceProblem("custom-object", f"{source} uses the class '{registered}', which is not "
                            "registered; pass the file or module that defines it with "
                            "--custom-objects PATH_OR_MODULE.")


def _module_has(module: str, name: str) -> bool:
    try:
        return hasattr(importlib.import_module(module), name)
    except Exception:
        return False


def _walk(node: Any):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _translate_load_error(source: str, exc: Exception) -> SourceProblem:
    text = str(exc)
    if "safe_mode" in text or "lambda" in text.lower() and "unsafe" in text.lower():
        return SourceProblem("unsafe-lambda", f"{source} contains a Lambda layer with Python "
                             "bytecode, which Keras safe mode refuses to load because it can run "
                             "arbitrary code; if you trust the file, pass --unsafe.")
    match = re.search(r"Could not locate (?:class|function) '([^']+)'", text)
    if match:
        return SourceProblem("custom-object", f"{source} uses '{match.group(1)}', which is not "
                             "registered; pass the file or module that defines it with "
                             "--custom-objects PATH_OR_MODULE.")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return SourceProblem("load-failed", f"{source} could not be loaded by Keras "
                         f"({type(exc).__name__}: {first[:300]}).")


def import_target(target: str, *, is_file: bool, what: str):
    if is_file:
        path = Path(target)
        if not path.is_file():
            raise SourceProblem("missing", f"{what} {target}: no such Python file.")
        name = "gradcheck_user_" + re.sub(r"\W", "_", str(path.resolve()))
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.resolve().parent))
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise SourceProblem("import-failed", f"{what} {target} failed to import "
                                f"({type(exc).__name__}: {_first_line(exc)}).") from exc
        finally:
            sys.path.remove(str(path.resolve().parent))
        return module
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        raise SourceProblem("missing", f"{what} {target}: no module named '{exc.name}' (is it "
                            "installed, or on PYTHONPATH?).") from exc
    except Exception as exc:
        raise SourceProblem("import-failed", f"{what} module {target} failed to import "
                            f"({type(exc).__name__}: {_first_line(exc)}).") from exc


def _call_factory(source: str, spec: FactorySpec):
    import keras

    module = import_target(spec.target, is_file=spec.is_file, what="factory")
    factory = getattr(module, spec.function, None)
    if factory is None:
        raise SourceProblem("missing", f"{source}: {spec.target} defines no function "
                            f"'{spec.function}'.")
    if not callable(factory):
        raise SourceProblem("not-callable", f"{source}: '{spec.function}' is a "
                            f"{type(factory).__name__}, not a function returning a model.")
    try:
        model = factory()
    except Exception as exc:
        raise SourceProblem("factory-failed", f"{source}: the factory raised "
                            f"{type(exc).__name__}: {_first_line(exc)}") from exc
    if not isinstance(model, keras.layers.Layer):
        raise SourceProblem("not-a-model", f"{source}: the factory returned a "
                            f"{type(model).__name__}, not a keras.Model or keras.Layer.")
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
