"""The repository's Python code a run imports: factories, ``--custom-objects``, ``--loss`` and
``--data`` functions.

This code is trusted (a reviewer reads it in the diff) and run; whatever it prints goes to
stderr, and no bytecode cache is written next to the user's files.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradcheck.problems import ErrorKind, SourceProblem, describe_exception

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


def import_custom_objects(specs: list[str]) -> dict[str, Any]:
    """Import each ``.py`` file or module so its registered Keras classes become known.

    Also returns the Keras classes and functions the modules define, by name, so that classes
    the author forgot to register still deserialize (Keras 2 ``tf_keras`` classes too).
    """
    import keras

    from gradcheck.plans.legacy import is_tf_keras_class

    found: dict[str, Any] = {}
    for spec in specs:
        module = import_target(spec, is_file=spec.endswith(".py") or "/" in spec,
                               what="--custom-objects")
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, (keras.layers.Layer, keras.losses.Loss,
                                                             keras.initializers.Initializer,
                                                             keras.regularizers.Regularizer,
                                                             keras.constraints.Constraint)):
                found[name] = value
            elif inspect.isclass(value) and is_tf_keras_class(value):
                found[name] = value
    return found


def import_function(spec: str, *, what: str, kind: str):
    """The function an option such as ``--loss`` or ``--data`` names as ``module:fn`` or
    ``file.py:fn``; a ``SourceProblem`` of ``kind`` when it is not one or does not exist."""
    factory = parse_factory(spec)
    if factory is None:
        raise SourceProblem(kind, f"{what} {spec} is not module:function or file.py:function.")
    module = import_target(factory.target, is_file=factory.is_file, what=what)
    fn = getattr(module, factory.function, None)
    if not callable(fn):
        raise SourceProblem(kind, f"{what} {spec}: {factory.target} defines no function "
                            f"'{factory.function}'.")
    return fn


def import_target(target: str, *, is_file: bool, what: str):
    """Import a ``.py`` file or a module for ``what`` (``factory``, ``--loss`` …), or say why not.

    Whatever the user's code prints goes to stderr, so that it cannot corrupt a JSON report, and
    no bytecode cache is written next to the user's files.
    """
    written = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # no __pycache__ next to the user's files
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return _import_file(target, what) if is_file else _import_module(target, what)
    finally:
        sys.dont_write_bytecode = written


def _import_file(target: str, what: str):
    path = Path(target)
    if not path.is_file():
        raise SourceProblem(ErrorKind.MISSING, f"the {what} file {target} does not exist; check the path.")
    name = "gradcheck_user_" + re.sub(r"\W", "_", str(path.resolve()))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.resolve().parent))
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        del sys.modules[name]
        raise SourceProblem(ErrorKind.IMPORT_FAILED, f"the {what} file {target} failed to import "
                            f"({describe_exception(exc)}); fix the error, or run python {target} "
                            "to see it in full.") from exc
    finally:
        sys.path.remove(str(path.resolve().parent))
    return module


def _import_module(target: str, what: str):
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and (target == exc.name or target.startswith(exc.name + ".")):
            raise SourceProblem(ErrorKind.MISSING, f"the {what} module {target} cannot be found (no module "
                                f"named '{exc.name}'); is it installed, or on PYTHONPATH?") from exc
        raise SourceProblem(ErrorKind.IMPORT_FAILED, f"the {what} module {target} failed to import: it "
                            f"needs the module '{exc.name}', which is not installed.") from exc
    except (Exception, SystemExit) as exc:
        raise SourceProblem(ErrorKind.IMPORT_FAILED, f"the {what} module {target} failed to import "
                            f"({describe_exception(exc)}).") from exc


def call_factory(source: str, spec: FactorySpec):
    """The model a factory returns, or, for a function that is one step of a training loop
    (``load.steps``), that step, not run yet."""
    from gradcheck.load.steps import StepSource, is_step_function

    module = import_target(spec.target, is_file=spec.is_file, what="factory")
    factory = getattr(module, spec.function, None)
    if factory is None:
        raise SourceProblem(ErrorKind.MISSING, f"{source}: {spec.target} defines no function "
                            f"'{spec.function}'{_did_you_mean(module, spec.function)}.")
    if not callable(factory):
        raise SourceProblem(ErrorKind.NOT_CALLABLE, f"{source}: '{spec.function}' is a "
                            f"{type(factory).__name__}, not a function returning a model.")
    if is_step_function(factory):
        return StepSource(factory, source, spec.function)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            model = factory()
    except (Exception, SystemExit) as exc:
        raise SourceProblem(ErrorKind.FACTORY_FAILED, f"{source}: the factory raised "
                            f"{describe_exception(exc)}") from exc
    if not is_model(model):
        hint = " (a missing return statement?)" if model is None else ""
        raise SourceProblem(ErrorKind.NOT_A_MODEL, f"{source}: the factory returned "
                            f"{'None' if model is None else 'a ' + type(model).__name__}{hint}, "
                            "not a keras.Model, keras.Layer or tf.Module; make it return the "
                            "model, or name a function that runs one training step.")
    return model


def is_model(value) -> bool:
    """Something gradcheck judges: a Keras 3 layer or model, a ``tf_keras`` one (a
    ``tf.Module``), or a plain ``tf.Module``."""
    import keras
    import tensorflow as tf

    return isinstance(value, (keras.layers.Layer, tf.Module))


def _did_you_mean(module, name: str) -> str:
    candidates = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
