"""Every ``tf.Variable`` a block writes, put back as it was on exit.

A training step run for real (``plans.steps``) writes variables nobody listed beforehand: a
gradient accumulator or a step counter kept as a plain ``tf.Variable`` on the model (Keras does
not track those), an optimizer's slots.  ``VariableWrites`` patches the write methods of
TensorFlow's resource variables (every Keras variable writes through them), keeps each
variable's value from before its first write, and assigns it back on exit, after undoing the
patch.  ``written`` tells which variables a block wrote (by ``id``), for as long as it runs.
"""

from __future__ import annotations

import contextlib
import functools

#: The methods of ``BaseResourceVariable`` that change its value.
WRITE_METHODS = ("assign", "assign_add", "assign_sub", "scatter_update", "scatter_add",
                 "scatter_sub", "scatter_mul", "scatter_div", "scatter_min", "scatter_max",
                 "scatter_nd_update", "scatter_nd_add", "scatter_nd_sub", "batch_scatter_update")


class VariableWrites:
    """Context manager: every resource variable written inside comes back to its old value."""

    def __init__(self, while_reading=None):
        """``while_reading`` (a context manager factory) is entered around each read of a value
        before its first write: the read is no op of the step (the op recorder pauses)."""
        self.written: dict[int, tuple] = {}  #: id(variable) -> (variable, value before)
        self._while_reading = while_reading or contextlib.nullcontext
        self._patched: list[tuple[type, str, object]] = []

    def __enter__(self):
        from tensorflow.python.ops.resource_variable_ops import BaseResourceVariable

        classes, stack = [], [BaseResourceVariable]  # subclasses redefine some (ResourceVariable)
        while stack:
            cls = stack.pop()
            if cls not in classes:
                classes.append(cls)
                stack.extend(cls.__subclasses__())
        for cls in classes:
            for name in WRITE_METHODS:
                original = vars(cls).get(name)
                if callable(original):
                    self._patched.append((cls, name, original))
                    setattr(cls, name, self._observing(original))
        return self

    def _observing(self, original):
        import numpy as np
        import tensorflow as tf

        written, quietly = self.written, self._while_reading

        @functools.wraps(original)
        def observed(variable, *args, **kwargs):
            if id(variable) not in written and tf.executing_eagerly():
                with quietly():
                    written[id(variable)] = (variable, np.array(variable.numpy(), copy=True))
            return original(variable, *args, **kwargs)

        return observed

    def __exit__(self, *exc):
        for cls, name, original in reversed(self._patched):
            setattr(cls, name, original)
        self._patched.clear()
        for variable, value in self.written.values():
            variable.assign(value)
        return False
