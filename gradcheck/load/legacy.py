"""Models saved by Keras 2 (``tf_keras``): its ``.keras`` archives and its SavedModel directories.

Keras 3 cannot read them (``Functional`` is not one of its classes); ``tf_keras`` can, when it is
installed (``pip install gradcheck[tf-keras]``); without it, one sentence names the extra.  The
trust rules of every model file hold: the archive checks of ``load.archive`` ran before, safe
mode refuses a ``Lambda``'s bytecode, every class the file names must be ``tf_keras``'s own,
registered, or given with ``--custom-objects`` (no module the file names is imported), and every
weight a layer adds is charged to the memory budget before it is allocated.  Without
``--real-weights`` the architecture is rebuilt with fresh weights and compiled for its loss.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
from pathlib import Path
from typing import Any

from gradcheck.load.safety import check_no_lambda_bytecode, unprovided_classes, walk_config
from gradcheck.problems import ErrorKind, SourceProblem, describe_exception

EXTRA = "pip install gradcheck[tf-keras]"


def is_legacy_config(config: Any) -> bool:
    """A config written by ``tf_keras``: some class of it comes from a ``tf_keras`` module."""
    return any(isinstance(node.get("module"), str) and node["module"].startswith("tf_keras")
               for node in walk_config(config))


def require_tf_keras(source: str):
    """``tf_keras``, imported; or the sentence that names the extra."""
    if importlib.util.find_spec("tf_keras") is None:
        raise SourceProblem(ErrorKind.MISSING_PACKAGE, f"{source} was saved by Keras 2 (tf_keras), "
                            "which is not installed; install it with the extra: "
                            f"{EXTRA}.")
    import tf_keras

    return tf_keras


def load_legacy_keras(path: Path, source: str, config: Any, custom_objects: dict,
                      safe_mode: bool, weights: bool):
    """A ``tf_keras`` ``.keras`` archive (its checks against the archive already passed)."""
    tf_keras = require_tf_keras(source)
    check_legacy_config(source, config, custom_objects, safe_mode)
    with _guarded(), tf_keras.saving.custom_object_scope(custom_objects):
        try:
            if weights:
                return tf_keras.models.load_model(path, custom_objects=custom_objects,
                                                  compile=True, safe_mode=safe_mode)
            model = tf_keras.saving.deserialize_keras_object(
                config, custom_objects=custom_objects, safe_mode=safe_mode)
        except SourceProblem:
            raise
        except Exception as exc:
            raise _load_failed(source, exc) from exc
    _compile_for_loss(model, config.get("compile_config"))
    return model


def is_legacy_h5(path: Path) -> bool:
    """An ``.h5`` model written by Keras 2 (its ``keras_version`` attribute says 2.x)."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            version = handle.attrs.get("keras_version")
    except OSError:
        return False
    if isinstance(version, bytes):
        version = version.decode("utf-8", "replace")
    return isinstance(version, str) and version.startswith("2.")


def load_legacy_h5(path: Path, source: str, config: Any, custom_objects: dict, safe_mode: bool):
    """A Keras 2 ``.h5`` model (``load.archive`` checked its sizes), read by ``tf_keras``."""
    tf_keras = require_tf_keras(source)
    check_legacy_config(source, config, custom_objects, safe_mode)
    with _guarded(), tf_keras.saving.custom_object_scope(custom_objects):
        try:
            return tf_keras.models.load_model(path, custom_objects=custom_objects, compile=True,
                                              safe_mode=safe_mode)
        except SourceProblem:
            raise
        except Exception as exc:
            raise _load_failed(source, exc) from exc


def load_legacy_saved_model(path: Path, source: str):
    """A SavedModel written by ``tf_keras`` (its files were checked by ``load.modules``)."""
    tf_keras = require_tf_keras(source)
    for config in _metadata_configs(path / "keras_metadata.pb", source):
        check_legacy_config(source, config, {}, safe_mode=True)
    with _guarded():
        try:
            return tf_keras.models.load_model(str(path), compile=True, safe_mode=True)
        except SourceProblem:
            raise
        except Exception as exc:
            raise _load_failed(source, exc) from exc


def check_legacy_config(source: str, config: Any, custom_objects: dict, safe_mode: bool) -> None:
    """Safe mode on a ``tf_keras`` config: no bytecode, and every class one ``tf_keras`` has,
    registered or given; nothing the file names is imported."""
    if safe_mode:
        check_no_lambda_bytecode(source, config)
    import tf_keras

    known = _legacy_names() | {"function"}
    for node, class_name, registered in unprovided_classes(config, custom_objects,
                                                           tf_keras.saving.get_registered_object):
        module = node.get("module")
        package = module.split(".")[0] if isinstance(module, str) and module else None
        if class_name in known and package in (None, "keras", "tf_keras", "builtins"):
            continue  # tf_keras's own class: found without importing what the file names
        raise SourceProblem(ErrorKind.CUSTOM_OBJECT, f"{source} uses the class '{registered}', which "
                            "tf_keras does not define and nobody registered; pass the file or "
                            "module that defines it with --custom-objects PATH_OR_MODULE.")


def _legacy_names() -> set[str]:
    import tf_keras

    names = {"Functional", "Sequential", "Model"}
    for space in (tf_keras.layers, tf_keras.losses, tf_keras.metrics, tf_keras.optimizers,
                  tf_keras.optimizers.schedules, tf_keras.initializers, tf_keras.regularizers,
                  tf_keras.constraints, tf_keras.activations, tf_keras.mixed_precision):
        names.update(name for name, value in vars(space).items()
                     if inspect.isclass(value) or inspect.isfunction(value))
    return names


def _metadata_configs(path: Path, source: str) -> list:
    """The JSON of every Keras object a SavedModel's ``keras_metadata.pb`` describes."""
    from tf_keras.protobuf import saved_metadata_pb2

    metadata = saved_metadata_pb2.SavedMetadata()
    try:
        metadata.ParseFromString(path.read_bytes())
        return [json.loads(node.metadata) for node in metadata.nodes if node.metadata]
    except Exception as exc:
        raise SourceProblem(ErrorKind.CORRUPT, f"{source}: its keras_metadata.pb cannot be read "
                            f"({describe_exception(exc)}); re-save the model.") from exc


def _compile_for_loss(model, compile_config) -> None:
    """Compile a rebuilt model with its saved loss and loss weights (no optimizer, no metrics)."""
    if not isinstance(compile_config, dict) or compile_config.get("loss") is None:
        return
    import tf_keras

    kept = {key: compile_config.get(key) for key in ("loss", "loss_weights")}
    try:
        kept["loss"] = tf_keras.saving.deserialize_keras_object(kept["loss"]) \
            if isinstance(kept["loss"], dict) else kept["loss"]
        model.compile(optimizer="sgd", **kept)
    except Exception as exc:
        raise SourceProblem(ErrorKind.LOAD_FAILED, f"the compile settings saved with the model "
                            f"do not apply to it ({describe_exception(exc)}); re-save it.") from exc


@contextlib.contextmanager
def _guarded():
    """Every weight ``tf_keras`` adds is charged to the memory budget in force."""
    from gradcheck.budget import current
    from gradcheck.hooks.memory import guarded_legacy_weights

    budget = current()
    if budget is None:
        yield
        return
    with guarded_legacy_weights(budget):
        yield


def _load_failed(source: str, exc: BaseException) -> SourceProblem:
    return SourceProblem(ErrorKind.LOAD_FAILED, f"{source} could not be loaded by tf_keras "
                         f"({describe_exception(exc)}); check that it was saved by a compatible "
                         "Keras 2 version, or give a factory file.py:fn that builds the model.")
