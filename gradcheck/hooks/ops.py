"""Recording the ops one eager step executes, through TensorFlow's op callbacks.

``OpRecorder`` is a context manager: inside it every op the step executes is recorded with its
type, name scope, the producers of its inputs (found by tensor identity, while the tensors are
alive) and its output dtypes; ``tf.custom_gradient`` functions are recorded as one op through
``record.record_operation``.  ``plans.opgraph`` turns the record into the networkx graph.
On exit every patch is undone.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from typing import Any

#: Op types that run a function body (control flow, nested tf.function).  Their gradient functions
#: build whole backward functions, so we don't probe them: every trainable input is assumed to pass
#: gradient, and the tape settles any disagreement.
CALL_OPS = frozenset({"While", "StatelessWhile", "If", "StatelessIf", "Case", "StatelessCase",
                      "PartitionedCall", "StatefulPartitionedCall"})


#: Ops whose output describes a tensor rather than carrying its values.
METADATA_OPS = frozenset({"Shape", "ShapeN", "Size", "Rank", "Bitcast", "BitwiseAnd", "BitwiseOr",
                          "BitwiseXor", "ZerosLike", "OnesLike", "IsNan", "IsInf", "IsFinite",
                          "BroadcastGradientArgs", "TensorListLength", "TensorListElementShape"})


#: Type of the node standing for a ``tf.custom_gradient`` function: its backward function, not
#: the ops it ran forward, decides the gradient.
CUSTOM_GRADIENT = "CustomGradient"


#: Ops that can cut a gradient, and so get the user's line recorded (a stack walk each): ordinary
#: ops never pay for it.  Casts to a non-float dtype, comparisons and custom gradients are added
#: by dtype in ``OpRecorder``; control flow is here because a branch not taken cuts too.
CUTTING_OPS = frozenset({"StopGradient", "PreventGradient", "ArgMax", "ArgMin", "TopKV2", "TopK",
                         "Round", "Floor", "Ceil", "Rint", "Sign", "If", "StatelessIf", "Case",
                         "StatelessCase", "EagerPyFunc", "PyFunc", "PyFuncStateless"})

#: Ops that run Python code on their inputs' values (``tf.py_function``, ``tf.numpy_function``):
#: the value leaves TensorFlow, and a gradient passes back only if the Python code used TF ops.
PY_FUNCTION_OPS = frozenset({"EagerPyFunc", "PyFunc", "PyFuncStateless"})


#: Activations that output exact zeros; whether an output is zero everywhere is recorded.
ZEROING_ACTIVATIONS = frozenset({"Relu", "Relu6"})


#: Comparisons whose integer constant operand is noted (``OpRecorder.compared``).
COMPARISONS = frozenset({"Equal", "NotEqual"})


#: Normalizations over the last axis: over one element their output is a constant (and a
#: cross-entropy over one class, whose probability is always 1, gives its logits no gradient).
SOFTMAX_OPS = frozenset({"Softmax", "LogSoftmax", "SoftmaxCrossEntropyWithLogits",
                         "SparseSoftmaxCrossEntropyWithLogits"})


@dataclass
class RecordedOp:
    """One executed op: where each input came from, and what it produced."""

    name: str
    type: str
    sources: list  #: per input: (producing node or None for a constant/input, dtype)
    output_dtypes: list
    key: tuple  #: (type, input dtypes, output dtypes): ops alike for the gradient registry
    recorded: bool  #: the tape was recording (not inside ``stop_recording``)
    call: bool = False  #: a function call or custom gradient: inputs pass gradient to outputs
    location: Any = None  #: ``SourceLocation`` of the user's line, for ops that can cut
    dead: bool = False  #: a zeroing activation whose output is zero on every element
    one_element: bool = False  #: a softmax over an axis of one element (a constant output)
    reads_inputs: tuple = ()  #: names of the model inputs it consumes directly


class OpRecorder:
    """Context manager recording every op executed eagerly inside it (see the module docstring).

    Producers are resolved while the tensors are alive and remembered through weak references,
    so the record holds no activations (the tape frees them as usual) and a recycled ``id`` is
    never mistaken for an old tensor.  One example op per ``RecordedOp.key`` keeps its tensors,
    for ``GradientProber``.
    """

    def __init__(self, handles: dict[int, tuple[Any, str]],
                 model_inputs: dict[int, tuple[Any, str]] | None = None):
        """``handles``: ``id(resource handle)`` -> (the handle tensor, its node name);
        ``model_inputs``: ``id(input tensor)`` -> (the tensor, the input's name)."""
        import weakref

        self.paused = False  #: while True nothing is recorded (a probe runs a branch not taken)
        self.compared: set[int] = set()  #: integer constants an Equal / NotEqual compared with
        self._inputs = {key: (weakref.ref(tensor), name)
                        for key, (tensor, name) in (model_inputs or {}).items()}
        self.ops: list[RecordedOp] = []
        self.examples: dict[tuple, tuple] = {}
        self._names: Counter = Counter()
        self._weakref = weakref.ref
        self._producer = {key: (weakref.ref(tensor), node) for key, (tensor, node) in handles.items()}

    def __enter__(self):
        from tensorflow.python import pywrap_tfe
        from tensorflow.python.eager import record
        from tensorflow.python.framework import op_callbacks, ops

        # Looked up once: the callbacks below run for every op of the step.
        from gradcheck.locations import caller_location

        self._caller_location = caller_location
        self._name_scope = ops.get_name_scope
        self._tape_stopped = pywrap_tfe.TFE_Py_TapeSetIsStopped
        self._record_module = record
        self._original_record = record.record_operation
        record.record_operation = self._record_custom_gradient
        self._unhooked = _variables_read_where_seen()
        op_callbacks.add_op_callback(self._on_op)
        return self

    def __exit__(self, *exc):
        from tensorflow.python.framework import op_callbacks

        op_callbacks.remove_op_callback(self._on_op)
        self._record_module.record_operation = self._original_record
        self._unhooked()
        return False

    def producer_of(self, tensor) -> str | None:
        """The node that produced ``tensor`` (still alive), or None."""
        entry = self._producer.get(id(tensor))
        return entry[1] if entry is not None and entry[0]() is tensor else None

    def _add(self, op_type: str, inputs, outputs, attrs, recorded: bool, call: bool,
             location=None, dead: bool = False, one_element: bool = False) -> None:
        scope = self._name_scope()
        base = f"{scope}/{op_type}" if scope else op_type
        count = self._names[base]
        self._names[base] += 1
        name = base if count == 0 else f"{base}_{count}"
        inputs, outputs = list(inputs), list(outputs)
        key = (op_type, tuple(t.dtype for t in inputs), tuple(t.dtype for t in outputs))
        reads = tuple(entry[1] for entry in map(self._inputs.get, map(id, inputs))
                      if entry is not None) if self._inputs else ()
        self.ops.append(RecordedOp(name, op_type, [(self.producer_of(t), t.dtype) for t in inputs],
                                   [t.dtype for t in outputs], key, recorded, call, location,
                                   dead, one_element, reads))
        if key not in self.examples:
            self.examples[key] = (attrs, inputs, outputs)
        for tensor in outputs:
            self._producer[id(tensor)] = (self._weakref(tensor), name)

    def _on_op(self, op_type, inputs, attrs, outputs, op_name=None, graph=None):
        if graph is not None or self.paused:  # ops built inside a nested trace are not executed here
            return None
        op_type = op_type.decode() if isinstance(op_type, bytes) else str(op_type)
        call = op_type in CALL_OPS or not _is_registered_op(op_type)
        location = self._caller_location() if _can_cut(op_type, inputs, outputs) else None
        if op_type in COMPARISONS:
            self._note_constants(inputs)
        dead = op_type in ZEROING_ACTIVATIONS and not outputs[0]._numpy().any()
        one = op_type in SOFTMAX_OPS and inputs[0].shape.rank and inputs[0].shape[-1] == 1
        self._add(op_type, inputs, outputs, attrs, not self._tape_stopped(), call, location, dead,
                  bool(one))
        return None

    def _note_constants(self, inputs) -> None:
        """An integer scalar no op produced, compared with a tensor: a placeholder id, say."""
        if len(inputs) != 2 or not all(t.dtype.is_integer for t in inputs):
            return
        for constant, other in (inputs, inputs[::-1]):
            if constant.shape.num_elements() == 1 and other.shape.num_elements() != 1 \
                    and self.producer_of(constant) is None:
                self.compared.add(int(constant._numpy().reshape(-1)[0]))

    def _record_custom_gradient(self, op_type, output_tensors, input_tensors, backward_function,
                                forward_function=None):
        if not self.paused:
            self._add(CUSTOM_GRADIENT, input_tensors, output_tensors, None, True, True,
                      self._caller_location())
        return self._original_record(op_type, output_tensors, input_tensors, backward_function,
                                     forward_function)


def _can_cut(op_type: str, inputs, outputs) -> bool:
    """An op that may pass no gradient back: a cut op, a comparison, a cast off the float dtypes."""
    if op_type in CUTTING_OPS:
        return True
    if op_type in METADATA_OPS or not inputs or not outputs or not inputs[0].dtype.is_floating:
        return False
    out = outputs[0].dtype
    return not (out.is_floating or out.is_complex)


def _variables_read_where_seen():
    """Make every op read a ``tf.Variable`` input in Python, where the op callback sees it.

    TensorFlow's C++ fast path reads a ``tf.Variable`` handed straight to an op (``x * v`` on a
    plain variable, a ``tf.Module``'s ``w * x + b``; Keras' ``convert_to_tensor`` hands one on
    unread for ``v * x`` on a Keras variable) without any op callback: the graph would miss the
    read (a ``tf.Module``'s weights, T5's layer norms, a penalty written as ``kernel ** 2``).
    Reading it first with ``value()`` runs the same ``ReadVariableOp``, recorded on the tape the
    same way.  Returns the function that undoes the patch.
    """
    import importlib

    import tensorflow as tf
    from tensorflow.python import pywrap_tfe

    def read(x):
        if isinstance(x, tf.Variable) and hasattr(x, "_read_variable_op"):
            return x.value()
        return x

    core = importlib.import_module("keras.src.backend.tensorflow.core")
    original = core.convert_to_tensor

    def convert_to_tensor(x, *args, **kwargs):
        return original(read(x), *args, **kwargs)

    patched = []
    for name in ("core", "numpy", "nn", "math", "linalg", "image", "random", "sparse"):
        try:
            module = importlib.import_module(f"keras.src.backend.tensorflow.{name}")
        except ImportError:
            continue
        if getattr(module, "convert_to_tensor", None) is original:
            module.convert_to_tensor = convert_to_tensor
            patched.append(module)
    fast_path = pywrap_tfe.TFE_Py_FastPathExecute
    variable_types = tf.Variable

    def fast_path_execute(*args):
        if not any(isinstance(arg, variable_types) for arg in args):
            return fast_path(*args)
        try:
            return fast_path(*(read(arg) for arg in args))
        except Exception:  # an op that takes the variable's resource itself: as it was
            return fast_path(*args)

    pywrap_tfe.TFE_Py_FastPathExecute = fast_path_execute

    def undo():
        for module in patched:
            module.convert_to_tensor = original
        pywrap_tfe.TFE_Py_FastPathExecute = fast_path

    return undo


@functools.cache
def _is_registered_op(op_type: str) -> bool:
    from tensorflow.python.framework import op_def_registry

    return op_def_registry.get(op_type) is not None
