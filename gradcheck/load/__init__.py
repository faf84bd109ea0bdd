"""SOURCE -> a model: ``.keras`` (zip or directory), ``.h5``, a SavedModel directory,
``file.py:fn`` or ``pkg.mod:fn`` (a factory, or one step of a training loop: ``steps``).

``archive`` refuses a file before Keras reads it, ``safety`` checks its config under safe mode,
``rebuild`` builds the architecture with fresh weights and checks it against the stored ones,
``user_code`` imports the repository's own Python.  This module dispatches and translates what
Keras raises into one sentence per ``ErrorKind``.  Input files are only read.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any

from gradcheck.hooks.loading import sequential_built_once
from gradcheck.load.archive import (
    check_declared_weights_file,
    check_model_config,
    check_readable_file,
    parse_config,
    read_config_file,
    read_h5_configs,
    read_keras_archive,
)
from gradcheck.load.declared import charge_config_arrays
from gradcheck.load.legacy import (
    EXTRA,
    is_legacy_config,
    is_legacy_h5,
    load_legacy_h5,
    load_legacy_keras,
)
from gradcheck.load.members import check_model_directory
from gradcheck.load.modules import ModuleModel, load_saved_model
from gradcheck.load.rebuild import check_stored_shapes, model_from_config
from gradcheck.load.safety import check_classes_known, check_no_lambda_bytecode
from gradcheck.load.stored import load_with_weights
from gradcheck.load.user_code import call_factory, parse_factory
from gradcheck.problems import ErrorKind, SourceProblem, describe_exception, is_out_of_memory, printable


def load_source(source: str, *, custom_objects: dict[str, Any], safe_mode: bool,
                weights: bool = True):
    """Load one source into a Keras model (or layer); raise ``SourceProblem`` on any user error.

    Each source starts from a fresh Keras session, so auto-generated names (``dense_1`` …) do not
    depend on what was loaded before: the same source gives the same variable paths whether it
    comes first in a run or last.  (The caller seeds the RNG; clearing the session keeps it.)
    """
    import keras

    keras.backend.clear_session(free_memory=False)
    if source.startswith("-"):
        raise SourceProblem(ErrorKind.OPTION_LIKE, f"{printable(source)} looks like an option, not a "
                            "model; a file name that starts with '-' is refused so that a list "
                            "of changed files cannot set options. Rename it, or pass it as "
                            f"./{printable(source)}.")
    factory = parse_factory(source)
    if factory is not None:
        return as_model(call_factory(source, factory))
    path = Path(source)
    suffix = path.suffix.lower()
    if path.is_dir() and os.path.lexists(path / "config.json"):  # saved with zipped=False
        return _load_keras(path, source, custom_objects, safe_mode, weights)
    if path.is_dir() and os.path.lexists(path / "saved_model.pb"):
        return load_saved_model(path, source)
    check_readable_file(path, source)
    if suffix == ".keras":
        return _load_keras(path, source, custom_objects, safe_mode, weights)
    if suffix in (".h5", ".hdf5"):
        return _load_h5(path, source, custom_objects, safe_mode)
    if suffix == ".py":
        raise SourceProblem(ErrorKind.UNSUPPORTED, f"{source} is a Python file; name the function that "
                            f"returns the model, as {source}:function.")
    raise SourceProblem(ErrorKind.UNSUPPORTED, f"{source}: unsupported file type '{path.suffix}'; "
                        "gradcheck reads .keras and .h5 model files and factories written as "
                        "file.py:function.")


def as_model(loaded):
    """What a factory returned, as the plans judge it: a Keras model or a step as it is, a plain
    ``tf.Module`` through ``ModuleModel``."""
    import keras
    import tensorflow as tf

    from gradcheck.plans.legacy import is_tf_keras

    if isinstance(loaded, tf.Module) and not isinstance(loaded, keras.layers.Layer) \
            and not is_tf_keras(loaded):
        return ModuleModel(loaded)
    return loaded


def _load_keras(path: Path, source: str, custom_objects, safe_mode: bool, weights: bool):
    """Load a ``.keras`` archive (or the directory ``save(zipped=False)`` writes, whatever its
    name).

    Without ``weights`` the model is rebuilt from config.json alone, but a truncated or
    incomplete archive is still refused: Keras itself would refuse it, and a gate must not pass a
    file that cannot be loaded.  Checksums are verified when the weights are read (a bit flip
    inside the weights does not change which variables learn, and checking it costs a full read).
    With ``weights`` they are read in place (``stored``), never copied beside the input.
    """
    import keras

    if path.is_dir():
        config = parse_config(read_config_file(path / "config.json", source), source)
        check_model_directory(path, source)
        if weights:
            check_declared_weights_file(path / "model.weights.h5", source)
    else:
        config = read_keras_archive(path, source, verify_checksums=weights)
    check_model_config(source, config)
    if safe_mode:
        check_no_lambda_bytecode(source, config)
    charge_config_arrays(source, config)  # before either Keras reads it
    if is_legacy_config(config):  # saved by Keras 2: tf_keras reads it
        return load_legacy_keras(path, source, config, custom_objects, safe_mode, weights)
    check_classes_known(source, config, custom_objects)
    try:
        with keras.saving.custom_object_scope(custom_objects), sequential_built_once():
            if weights:
                return load_with_weights(path, config, custom_objects, safe_mode, source)
            model = model_from_config(config, custom_objects, safe_mode)
    except SourceProblem:
        raise
    except (Exception, MemoryError, RecursionError) as exc:  # Keras raises many types here
        raise translate_load_error(source, exc) from exc
    check_stored_shapes(model, path, source)
    return model


def translate_load_error(source: str, exc: BaseException) -> SourceProblem:
    text = str(exc)
    if is_out_of_memory(exc):
        return SourceProblem(ErrorKind.OUT_OF_MEMORY, f"{source}: building the model ran out of memory "
                             f"({describe_exception(exc)}); lower --max-memory so gradcheck "
                             "refuses such a model up front, or run it on a larger machine.")
    refused = re.search(r"Requested the (?:deserialization|loading) of (.*?)\.(?:\s|$)", text)
    if refused and "lambda" not in refused.group(1).lower():
        return SourceProblem(ErrorKind.UNSAFE_CONTENT, f"{source}: Keras safe mode refused to load it: "
                             f"requested the {refused.group(0)[len('Requested the '):].rstrip('.')}"
                             ", which could run code or read files outside the model; if you "
                             "trust the file, pass --unsafe.")
    if "safe_mode" in text or "lambda" in text.lower() and "unsafe" in text.lower():
        return SourceProblem(ErrorKind.UNSAFE_LAMBDA, f"{source} contains a Lambda layer with Python "
                             "bytecode, which Keras safe mode refuses to load because it can run "
                             "arbitrary code; if you trust the file, pass --unsafe.")
    match = (re.search(r"Could not locate (?:class|function) '([^']+)'", text)
             or re.search(r"Unknown (?:layer|object|class|loss|metric)[a-z ]*: '([^']+)'", text))
    if match:
        return SourceProblem(ErrorKind.CUSTOM_OBJECT, f"{source} uses the class '{match.group(1)}', which "
                             "is not registered; pass the file or module that defines it with "
                             "--custom-objects PATH_OR_MODULE.")
    match = re.search(r"Could not deserialize class '([^']+)' because its parent module (\S+) "
                      "cannot be imported", text)
    if match:
        return SourceProblem(ErrorKind.KERAS_VERSION, f"{source} uses the class '{match.group(1)}' from "
                             f"the module {match.group(2)}, which does not exist here; the model "
                             "was probably saved with another Keras version, so load it with that "
                             "version or re-save it with this one.")
    if "truncated file" in text:
        return SourceProblem(ErrorKind.TRUNCATED, f"{source} is truncated (an interrupted download or "
                             "save?); re-download or re-save the model.")
    return SourceProblem(ErrorKind.LOAD_FAILED, f"{source}: Keras refused to load it "
                         f"({describe_exception(exc)}); re-save the model, or give a factory "
                         "file.py:fn that builds it.")


def _load_h5(path: Path, source: str, custom_objects, safe_mode: bool):
    """A ``.h5`` model: Keras 2's are read by ``tf_keras`` when it is installed, else by Keras 3
    (which reads many of them; when it cannot, the error names the extra)."""
    import keras

    config, training = read_h5_configs(path, source)
    if safe_mode:
        check_no_lambda_bytecode(source, config)
        check_no_lambda_bytecode(source, training)
    charge_config_arrays(source, config, "model_config")
    charge_config_arrays(source, training, "training_config")
    legacy = is_legacy_h5(path)
    if legacy and importlib.util.find_spec("tf_keras") is not None:
        return load_legacy_h5(path, source, config, custom_objects, safe_mode)
    try:
        with keras.saving.custom_object_scope(custom_objects), sequential_built_once():
            return keras.saving.load_model(path, custom_objects=custom_objects, compile=True,
                                           safe_mode=safe_mode)
    except SourceProblem:
        raise
    except (Exception, MemoryError, RecursionError) as exc:
        if legacy and not is_out_of_memory(exc):
            raise SourceProblem(ErrorKind.MISSING_PACKAGE, f"{source} was saved by Keras 2 and "
                                f"Keras 3 cannot read it ({describe_exception(exc)}); install "
                                f"tf_keras with the extra: {EXTRA}.") from exc
        raise translate_load_error(source, exc) from exc
