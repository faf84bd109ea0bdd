"""Plain TensorFlow as a model: a ``tf.Module`` a factory returns, and a SavedModel directory.

``ModuleModel`` lets the loss plans judge a ``tf.Module`` as they judge a Keras model: it is
called on the batch (``module(x)``), its trainable variables are named by where they sit in the
module (``mlp/layers/0/w``), its inputs come from its ``__call__``'s ``input_signature`` (or
``--input``), it has no ``add_loss`` terms; anything else is read off the module itself, so a
``--loss`` function gets the module's own attributes.

A SavedModel is an untrusted file: ``tf.saved_model.load`` runs no Python, but it reads a graph
and restores variables.  Before it is read, every file of the directory must be a regular file,
the graph must stay under ``GRAPH_LIMIT`` and the variables the checkpoint declares must fit the
memory budget.  It is then judged through its trainable variables and a signature (the
projection of its outputs, or ``--loss``); one without a signature is refused with what to do.
A SavedModel written by Keras 2 (``keras_metadata.pb``) is ``tf_keras``'s (``load.legacy``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gradcheck.budget import check_stored, human
from gradcheck.load.reach import tracked_variables
from gradcheck.problems import ErrorKind, SourceProblem, describe_exception

#: Largest saved_model.pb read: a graph is ops, not weights (those are in variables/).
GRAPH_LIMIT = 256 * 2**20


class ModuleModel:
    """A ``tf.Module`` (or a restored SavedModel) as the loss plans judge a model."""

    built = True
    losses: tuple = ()

    def __init__(self, module, *, name: str | None = None, call=None, input_signature=None):
        self.module = module
        self.name = name or getattr(module, "name", None) or type(module).__name__
        self._call = call if call is not None else module
        self.input_signature = input_signature or _call_signature(module)

    def __call__(self, inputs, training=None):
        """The module on ``inputs``; a ``tf.function`` body runs op by op, so that the step's op
        graph shows what it does (a restored SavedModel's functions stay one op each)."""
        from gradcheck.hooks.eager import FunctionsRunEagerly

        several = isinstance(inputs, (list, tuple)) and self.input_signature and \
            len(self.input_signature) == len(inputs) > 1
        with FunctionsRunEagerly():
            return self._call(*inputs) if several else self._call(inputs)

    @property
    def trainable_variables(self) -> list:
        from gradcheck.plans.variables import judged

        found = tracked_variables(self.module)
        paths = {id(v): f"{self.name}/{path}" for path, v in found}
        return judged([v for _, v in found if v.trainable], paths, prefer_hints=True)

    @property
    def variables(self) -> list:
        return [v for _, v in tracked_variables(self.module)]

    def __getattr__(self, name: str):  # a --loss function reads the module's own attributes
        if name.startswith("__") or name in ("module", "_call"):
            raise AttributeError(name)
        return getattr(self.module, name)


def _call_signature(module):
    from gradcheck.plans.legacy import call_signature

    return call_signature(module)


def load_saved_model(path: Path, source: str):
    """A SavedModel directory as a model to judge (see the module docstring)."""
    import tensorflow as tf

    check_saved_model_files(path, source)
    if (path / "keras_metadata.pb").is_file():
        from gradcheck.load.legacy import load_legacy_saved_model

        return load_legacy_saved_model(path, source)
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise SourceProblem(ErrorKind.LOAD_FAILED, f"{source}: TensorFlow could not load the "
                            f"SavedModel ({describe_exception(exc)}); re-save it, or give a "
                            "factory file.py:fn that builds the model.") from exc
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    if not signatures:
        raise SourceProblem(ErrorKind.NO_SIGNATURE, f"{source}: the SavedModel has no signature, "
                            "so gradcheck cannot call it; save it with one (tf.saved_model.save("
                            "module, path, signatures=module.__call__.get_concrete_function("
                            "tf.TensorSpec(...)))), or give a factory file.py:fn that returns the "
                            "tf.Module, or a training step.")
    key = "serving_default" if "serving_default" in signatures else sorted(signatures)[0]
    function = signatures[key]
    names, specs = _signature_inputs(function)

    def call(*inputs):
        if len(inputs) == 1 and isinstance(inputs[0], dict):
            return function(**inputs[0])
        return function(**dict(zip(names, inputs)))

    return ModuleModel(loaded, name=path.name, call=call, input_signature=specs)


def _signature_inputs(function) -> tuple[list[str], list]:
    """A signature's keyword inputs, in order, with their specs named after them."""
    import tensorflow as tf

    _, keywords = function.structured_input_signature
    names = sorted(keywords)
    specs = [tf.TensorSpec(keywords[n].shape, keywords[n].dtype, name=n) for n in names]
    return names, specs


def check_saved_model_files(path: Path, source: str) -> None:
    """Refuse a SavedModel directory before TensorFlow reads it: only regular files (no pipe,
    device or link out of it), a graph under ``GRAPH_LIMIT``, declared variables in budget."""
    for directory, subdirectories, files in os.walk(path, followlinks=False):
        for name in [*files, *subdirectories]:
            entry = Path(directory) / name
            mode = os.lstat(entry).st_mode
            if stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise SourceProblem(ErrorKind.UNSAFE_CONTENT, f"{source}: the SavedModel holds "
                                    f"{entry.relative_to(path)}, which is not a regular file (a "
                                    "link, pipe or device); a SavedModel is plain files, so it "
                                    "is refused unread.")
    graph = path / "saved_model.pb"
    size = graph.stat().st_size
    if size > GRAPH_LIMIT:
        raise SourceProblem(ErrorKind.TOO_LARGE, f"{source}: its saved_model.pb is {human(size)}, "
                            f"more than the {human(GRAPH_LIMIT)} a graph of ops needs; refused "
                            "without reading it.")
    check_stored(declared_checkpoint_bytes(path / "variables" / "variables"), f"{source}: its "
                 "variables")


def declared_checkpoint_bytes(prefix: Path) -> int:
    """The bytes the variables of a checkpoint declare (from its index: shapes and dtypes)."""
    import tensorflow as tf

    if not Path(f"{prefix}.index").is_file():
        return 0
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    except Exception as exc:
        raise SourceProblem(ErrorKind.CORRUPT, f"{prefix.parent.parent}: its variables index "
                            f"cannot be read ({describe_exception(exc)}); re-save the "
                            "SavedModel.") from exc
    from gradcheck.budget import variable_bytes

    return sum(variable_bytes(shapes[name], dtypes[name]) for name in shapes)
