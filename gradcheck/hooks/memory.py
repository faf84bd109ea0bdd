"""The memory budget's patch: every Keras variable is charged before it allocates its value.

A trainable variable is charged three times (its value, its gradient and one temporary); one
that takes no gradient (optimizer slots, batch-norm statistics) once."""

from __future__ import annotations

import contextlib

from gradcheck.budget import STEP_COPIES_PER_WEIGHT, MemoryBudget, variable_bytes
from gradcheck.hooks.patching import replaced


@contextlib.contextmanager
def guarded_variables(budget: MemoryBudget):
    """Check every Keras variable created inside against ``budget`` before it is allocated."""
    from keras.src.backend import Variable  # the backend's class: it overrides the method

    original = Variable._initialize_with_initializer

    def initialize(self, initializer):
        shape = getattr(self, "_shape", None) or ()
        if any(not isinstance(d, int) or d < 0 for d in shape):
            original(self, initializer)  # Keras itself refuses these shapes
            return
        size = variable_bytes(shape, getattr(self, "_dtype", None) or "float32")
        name = getattr(self, "path", None) or getattr(self, "name", "?")
        copies = STEP_COPIES_PER_WEIGHT if getattr(self, "_trainable", True) else 1
        budget.charge(size * copies, f"the weight '{name}' of shape {tuple(shape)}")
        original(self, initializer)

    with replaced(Variable, "_initialize_with_initializer", initialize):
        yield budget


@contextlib.contextmanager
def guarded_legacy_weights(budget: MemoryBudget):
    """The same check for every weight a ``tf_keras`` layer adds (``Layer.add_weight``), when
    ``tf_keras`` is installed: its variables are plain ``tf.Variable``s."""
    try:
        from tf_keras.src.engine.base_layer import Layer
    except ImportError:
        yield budget
        return
    original = Layer.add_weight

    def add_weight(self, name=None, shape=None, dtype=None, *args, **kwargs):
        dims = tuple(shape or ())
        if all(isinstance(d, int) and d >= 0 for d in dims):
            size = variable_bytes(dims, getattr(dtype, "name", dtype) or "float32")
            budget.charge(size * STEP_COPIES_PER_WEIGHT,
                          f"the weight '{getattr(self, 'name', '?')}/{name}' of shape {dims}")
        return original(self, name, shape, dtype, *args, **kwargs)

    with replaced(Layer, "add_weight", add_weight):
        yield budget
