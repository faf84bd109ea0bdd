"""Every patch of TensorFlow or Keras is undone on exit, even when the code inside raises.

``gradcheck/hooks/`` is the one place that patches (``test_architecture`` enforces it); here each
hook is entered, an exception is raised inside it, and every attribute of every class and module
a hook may touch must be the very object it was before.  A hook added to ``gradcheck/hooks/``
without an entry in ``HOOKS`` fails ``test_every_hook_is_tested``.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import pkgutil

import pytest

pytest.importorskip("tensorflow")


class _Boom(Exception):
    """Raised inside a hook: the step failed."""


def _budget():
    from gradcheck.budget import MemoryBudget

    return MemoryBudget(1 << 30)


def _recorder():
    from gradcheck.hooks.ops import OpRecorder

    return OpRecorder({})


#: Every hook, built as the engine builds it: module, name, factory.
HOOKS = {
    ("loading", "sequential_built_once"): lambda m: m.sequential_built_once(),
    ("loading", "cheap_fresh_weights"): lambda m: m.cheap_fresh_weights(),
    ("loading", "shapes_compared_not_assigned"): lambda m: m.shapes_compared_not_assigned(),
    ("loading", "recording_creation"): lambda m: m.recording_creation(),
    ("memory", "guarded_variables"): lambda m: m.guarded_variables(_budget()),
    ("memory", "guarded_legacy_weights"): lambda m: m.guarded_legacy_weights(_budget()),
    ("ops", "OpRecorder"): lambda m: m.OpRecorder({}),
    ("layers", "LayerCalls"): lambda m: m.LayerCalls(),
    ("layers", "BranchRecorder"): lambda m: m.BranchRecorder(_recorder()),
    ("layers", "FlippedTruthTest"): lambda m: m.FlippedTruthTest(0),
    ("interception", "StepInterceptor"): lambda m: m.StepInterceptor([], lambda g: g, str),
    ("eager", "FunctionsRunEagerly"): lambda m: m.FunctionsRunEagerly(),
    ("variables", "VariableWrites"): lambda m: m.VariableWrites(),
    ("patching", "replaced"): lambda m: m.replaced(_patchable()[0], "gradient", None),
    ("boundaries", "VariableReads"): lambda m: m.VariableReads(),
    ("boundaries", "ValuesLeaving"): lambda m: m.ValuesLeaving(_recorder()),
    ("calls", "FirstCalls"): lambda m: m.FirstCalls(),
}


def _patchable():
    """Every class and module a hook may patch (and the Keras backend modules)."""
    import numpy as np
    import tensorflow as tf
    from keras.src.backend import Variable
    from keras.src.backend.tensorflow import random as backend_random
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer
    from keras.src.layers.layer import Layer
    from keras.src.models.sequential import Sequential
    from keras.src.ops.operation import Operation
    from keras.src.optimizers.base_optimizer import BaseOptimizer
    from keras.src.saving import saving_lib
    from tensorflow.python import pywrap_tfe
    from tensorflow.python.eager import record
    from tensorflow.python.framework import ops
    from tensorflow.python.ops import resource_variable_ops, script_ops
    from tensorflow.python.ops.resource_variable_ops import BaseResourceVariable, ResourceVariable

    optimizers, stack = [], [BaseOptimizer]
    while stack:
        cls = stack.pop()
        optimizers.append(cls)
        stack.extend(cls.__subclasses__())
    backend = [importlib.import_module(f"keras.src.backend.tensorflow.{name}")
               for name in ("core", "numpy", "nn", "math", "linalg", "image", "random", "sparse")]
    legacy = []
    with contextlib.suppress(ImportError):
        from tf_keras.src.engine.base_layer import Layer as LegacyLayer

        legacy.append(LegacyLayer)
    return [tf.GradientTape, Layer, Operation, Sequential, Variable, saving_lib.H5IOStore,
            ops._EagerTensorBase, tf, tf.__internal__.smart_cond, record, backend_random,
            TensorFlowTrainer, np, resource_variable_ops, script_ops, pywrap_tfe,
            tf.compat.v1.train.Optimizer, *tf.compat.v1.train.Optimizer.__subclasses__(),
            BaseResourceVariable, ResourceVariable,
            *backend, *optimizers, *legacy]


def _snapshot() -> dict:
    import tensorflow as tf
    from tensorflow.python.framework import op_callbacks

    state = {}
    for owner in _patchable():
        for name, value in vars(owner).items():
            if inspect.ismodule(owner) and not callable(value):
                continue  # a module's data may change for its own reasons; its functions may not
            state[(id(owner), name)] = id(value)
    state["run_functions_eagerly"] = tf.config.functions_run_eagerly()
    state["op callbacks"] = op_callbacks.should_invoke_op_callbacks()
    return state


@pytest.mark.parametrize("key", sorted(HOOKS))
def test_hook_is_undone_when_the_step_raises(key):
    module = importlib.import_module(f"gradcheck.hooks.{key[0]}")
    before = _snapshot()
    with pytest.raises(_Boom), HOOKS[key](module):
        raise _Boom
    assert _snapshot() == before


def test_hooks_patch_while_active():
    """The snapshot sees a patch: entering each hook changes something it restores."""
    unchanged = []
    for key, make in HOOKS.items():
        module = importlib.import_module(f"gradcheck.hooks.{key[0]}")
        before = _snapshot()
        with contextlib.suppress(_Boom), make(module):
            if _snapshot() == before:
                unchanged.append(key)
            raise _Boom
    assert unchanged == [], f"hooks whose patch the snapshot cannot see: {unchanged}"


def test_every_hook_is_tested():
    import gradcheck.hooks as hooks

    found = set()
    for info in pkgutil.iter_modules(hooks.__path__):
        module = importlib.import_module(f"gradcheck.hooks.{info.name}")
        for name, value in vars(module).items():
            if getattr(value, "__module__", None) != module.__name__ or name.startswith("_"):
                continue
            is_manager = inspect.isclass(value) and hasattr(value, "__enter__")
            wrapped = getattr(value, "__wrapped__", None)
            is_generator = inspect.isfunction(value) and wrapped is not None and \
                inspect.isgeneratorfunction(wrapped)
            if is_manager or is_generator:
                found.add((info.name, name))
    assert found == set(HOOKS)
