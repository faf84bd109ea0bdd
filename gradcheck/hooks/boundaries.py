"""Where a step's values cross a boundary the tape cannot follow: variables read (and by which
tapes), and values that leave TensorFlow.

``VariableReads`` notes every trainable ``tf.Variable`` the step reads — Keras weights and the
ones Keras does not track alike (a ``tf.Module`` inside a layer, a raw ``tf.Variable``
attribute) — through the one function every read goes through
(``resource_variable_ops.variable_accessed``, also called for the variables a traced
``tf.function`` captures), and which ``GradientTape``s were recording at that moment
(``GradientTape._push_tape`` / ``_pop_tape``), with the line of the read.

``ValuesLeaving`` notes every floating eager tensor whose value leaves TensorFlow in the step:
``.numpy()``, ``float()``, ``int()``, ``bool()``, ``np.asarray`` / ``np.array`` (NumPy reads an
EagerTensor through the buffer protocol, so these functions are wrapped), NumPy ufuncs and array
functions on a tensor (``np.tanh(t)``, ``np.mean(t)``: ``__array_ufunc__`` /
``__array_function__``, answered exactly as NumPy would on the tensor's array), the inputs of an
eager ``tf.numpy_function`` and the NumPy results of ``model.predict*``, with the user's line;
``tf.py_function`` ops are seen by the op recorder.  Each is a context manager that restores
exactly what it patched.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from gradcheck.hooks.patching import replaced


@dataclass
class Sighting:
    """One way a variable was read: under which tapes, and where."""

    tapes: frozenset[int]  #: ``id`` of every ``GradientTape`` recording at that moment
    location: Any = None  #: ``SourceLocation`` of the read (user or third-party code), or None
    step_line: Any = None  #: the outermost user-code line of the step that led to the read


@dataclass
class VariableRead:
    """A trainable ``tf.Variable`` the step read, and how."""

    variable: Any  #: the ``tf.Variable`` itself
    sightings: list[Sighting] = field(default_factory=list)  #: one per distinct set of tapes


class VariableReads:
    """Context manager noting every trainable ``tf.Variable`` read inside it (see the module
    docstring); ``reads`` maps ``id(variable.handle)`` to its ``VariableRead``."""

    def __init__(self):
        self.reads: dict[int, VariableRead] = {}
        self._recording: list[int] = []  #: ids of the tapes recording now, innermost last
        self._stack = None

    def __enter__(self):
        import contextlib

        import tensorflow as tf
        from tensorflow.python.ops import resource_variable_ops

        from gradcheck.locations import step_sites

        original = resource_variable_ops.variable_accessed
        push, pop = vars(tf.GradientTape)["_push_tape"], vars(tf.GradientTape)["_pop_tape"]
        recording, reads = self._recording, self.reads

        @functools.wraps(original)
        def accessed(variable):
            if getattr(variable, "trainable", False):
                key = id(getattr(variable, "handle", variable))
                read = reads.get(key)
                if read is None:
                    read = reads[key] = VariableRead(variable)
                tapes = frozenset(recording)
                if all(s.tapes != tapes for s in read.sightings):  # one stack walk per tape set
                    read.sightings.append(Sighting(tapes, *step_sites(2)))
            return original(variable)

        @functools.wraps(push)
        def pushed(tape):
            push(tape)
            recording.append(id(tape))

        @functools.wraps(pop)
        def popped(tape):
            pop(tape)
            if id(tape) in recording:
                recording.remove(id(tape))

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(replaced(resource_variable_ops, "variable_accessed", accessed))
        self._stack.enter_context(replaced(tf.GradientTape, "_push_tape", pushed))
        self._stack.enter_context(replaced(tf.GradientTape, "_pop_tape", popped))
        return self

    def __exit__(self, *exc):
        self._stack.close()
        return False

    def add_watched(self, variables) -> frozenset[int] | None:
        """Add the trainable variables a tape watched (a read through TensorFlow's C++ fast path
        reaches the tapes but not Python); return their handle ids (None for None)."""
        if variables is None:
            return None
        keys = set()
        for variable in variables:
            key = id(getattr(variable, "handle", variable))
            keys.add(key)
            if key not in self.reads and getattr(variable, "trainable", False):
                self.reads[key] = VariableRead(variable)
        return frozenset(keys)


@dataclass(frozen=True)
class Departure:
    """A value that left TensorFlow in the step."""

    how: str  #: ``.numpy()``, ``float()``, ``int()``, ``bool()``, ``np.asarray``, ``predict_on_batch`` …
    node: str  #: the op (in the step's op graph) that produced the value
    location: Any = None  #: ``SourceLocation`` of the user's line, or None


#: EagerTensor methods through which a value leaves TensorFlow, and how the report names each.
_EXITS = {"numpy": ".numpy()", "__float__": "float()", "__int__": "int()", "__index__": "int()",
          "__bool__": "bool()", "__complex__": "complex()", "__array__": "np.asarray"}

#: Keras' predict methods, whose results come back as NumPy arrays.
_PREDICTS = ("predict", "predict_on_batch")

#: NumPy ufuncs behind ``array <op> tensor``, and the tensor's reflected operator NumPy defers to.
_REFLECTED = {"add": "__radd__", "subtract": "__rsub__", "multiply": "__rmul__",
              "true_divide": "__rtruediv__", "floor_divide": "__rfloordiv__", "power": "__rpow__",
              "matmul": "__rmatmul__", "remainder": "__rmod__", "less": "__gt__",
              "greater": "__lt__", "less_equal": "__ge__", "greater_equal": "__le__",
              "logical_and": "__rand__", "bitwise_and": "__rand__", "bitwise_or": "__ror__",
              "bitwise_xor": "__rxor__"}

#: NumPy functions that copy a tensor into an array, and how the report names each.
_NUMPY_COPIES = {"asarray": "np.asarray", "array": "np.array", "asanyarray": "np.asanyarray"}


class ValuesLeaving:
    """Context manager noting every floating eager tensor, produced by a recorded op, whose value
    leaves TensorFlow inside it; ``departures`` in the order they happened."""

    def __init__(self, recorder):
        """``recorder`` is the step's ``hooks.ops.OpRecorder`` (it names the tensors' producers)."""
        self.departures: list[Departure] = []
        self._recorder = recorder
        self._through: list[str] = []  #: the calls running now that return NumPy (predict …)
        self._stack = None

    def __enter__(self):
        import contextlib

        import numpy as np
        from keras.src.backend.tensorflow.trainer import TensorFlowTrainer
        from tensorflow.python.framework import ops
        from tensorflow.python.ops import script_ops

        base = ops._EagerTensorBase
        self._stack = stack = contextlib.ExitStack()
        for name, how in _EXITS.items():
            stack.enter_context(replaced(base, name, self._observing(getattr(base, name), how)))
        stack.enter_context(replaced(base, "__array_ufunc__", self._ufunc))
        stack.enter_context(replaced(base, "__array_function__", self._array_function))
        for name, how in _NUMPY_COPIES.items():
            stack.enter_context(replaced(np, name, self._observing(getattr(np, name), how)))
        for name in _PREDICTS:
            stack.enter_context(replaced(TensorFlowTrainer, name, self._through_call(
                getattr(TensorFlowTrainer, name), f"model.{name}")))
        stack.enter_context(replaced(script_ops, "py_func_common", self._through_call(
            script_ops.py_func_common, "tf.numpy_function")))
        return self

    def __exit__(self, *exc):
        self._stack.close()
        return False

    def _note(self, value, how: str) -> None:
        """Note ``value`` leaving TensorFlow if it is a floating tensor a recorded op produced."""
        from tensorflow.python.framework import ops

        if not isinstance(value, ops._EagerTensorBase):
            return
        dtype = value.dtype
        if dtype.is_floating or dtype.is_complex:
            node = self._recorder.producer_of(value)
            if node is not None:
                from gradcheck.locations import caller_location

                label = self._through[0] if self._through else how
                self.departures.append(Departure(label, node, caller_location(3)))

    def _observing(self, original, how: str):
        """``original`` (a tensor method, or a NumPy function of a value) noting its first
        argument leaving TensorFlow."""
        @functools.wraps(original)
        def observed(value, *args, **kwargs):
            self._note(value, how)
            return original(value, *args, **kwargs)

        return observed

    def _as_arrays(self, values, how: str):
        """``values`` (nested in lists, tuples and dicts) with every tensor noted and copied out."""
        from tensorflow.python.framework import ops

        if isinstance(values, ops._EagerTensorBase):
            self._note(values, how)
            return values._numpy()
        if isinstance(values, (list, tuple)):
            return type(values)(self._as_arrays(v, how) for v in values)
        if isinstance(values, dict):
            return {k: self._as_arrays(v, how) for k, v in values.items()}
        return values

    def _ufunc(self, tensor, ufunc, method, *inputs, **kwargs):
        """``np.tanh(t)`` and friends: NumPy's answer on the tensor's array, the departure noted.

        ``array * tensor`` reaches here too (an operand with ``__array_ufunc__`` makes NumPy's
        operator call the ufunc); without this hook NumPy defers to the tensor's reflected
        operator, so that is what it gets: the value stays in TensorFlow.
        """
        reflected = _REFLECTED.get(ufunc.__name__)
        if (reflected and method == "__call__" and len(inputs) == 2 and not kwargs
                and inputs[1] is tensor and inputs[0] is not tensor):
            return getattr(tensor, reflected)(inputs[0])
        how = f"np.{ufunc.__name__}"
        return getattr(ufunc, method)(*self._as_arrays(inputs, how),
                                      **self._as_arrays(kwargs, how))

    def _array_function(self, tensor, func, types, args, kwargs):
        """``np.mean(t)`` and friends, likewise."""
        how = f"np.{func.__name__}"
        return func(*self._as_arrays(args, how), **self._as_arrays(kwargs, how))

    def _through_call(self, original, how: str):
        """``original`` (a call that hands back NumPy values) labels what leaves inside it."""
        through = self._through

        @functools.wraps(original)
        def call(*args, **kwargs):
            through.append(how)
            try:
                return original(*args, **kwargs)
            finally:
                through.pop()

        return call
