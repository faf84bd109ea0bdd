"""A networkx graph of the ops one eager step executed, labelled with where gradient can flow.

``OpRecorder`` watches the step through TensorFlow's op callbacks: every op the forward pass and
the loss execute is recorded with its type, name scope, attributes and the very tensor objects it
consumed and produced, so producers are found by tensor identity and a variable's reads by its
resource handle.  ``build_op_graph`` turns the record into a ``networkx.DiGraph``.

Nodes are op names (``<name scope>/<OpType>``, uniquified like graph mode), with attributes:
  ``type`` (op type), ``layer`` (Keras layer scope or None), ``meta`` (True for ops whose outputs are
  predicates or metadata: comparisons, Shape, Bitcast …), ``variable`` (the Keras variable path, on a
  variable's handle node), ``output`` (model output name), ``loss`` (True on the loss op).
Edges P -> C (a tensor of P consumed by C) carry:
  ``float``: some tensor on the edge has a dtype gradient can flow through (float, resource, variant);
  ``grad``: some such tensor gets a gradient back from C (C's registered gradient function — the one
  the tape calls — returns something for that input, and the tape was recording when C ran).

Only this module and ``step`` touch TensorFlow; ``diagnose`` reads the networkx graph.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import networkx as nx

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

#: Ops that read only a tensor's shape.  A trace folds them into constants; eagerly they run, but
#: they carry no value and no gradient, so they do not link their input to anything downstream.
SHAPE_OPS = frozenset({"Shape", "ShapeN", "Size", "Rank"})

_UNIQUIFIER = re.compile(r"_\d+$")


def is_trainable_dtype(dtype) -> bool:
    """The dtypes a GradientTape records gradient through (``backprop_util.IsTrainable``)."""
    import tensorflow as tf

    base = tf.as_dtype(dtype).base_dtype
    return base.is_floating or base.is_complex or base in (tf.resource, tf.variant)


@dataclass
class RecordedOp:
    """One executed op, with the tensor objects it consumed and produced."""

    name: str
    type: str
    inputs: list
    outputs: list
    attrs: tuple | None  #: flat (name, value, …) as the tape's mock op wants; None: not an op
    recorded: bool  #: the tape was recording (not inside ``stop_recording``)
    call: bool = False  #: a function call or custom gradient: inputs pass gradient to outputs


class OpRecorder:
    """Context manager recording every op executed eagerly inside it (see the module docstring)."""

    def __init__(self):
        self.ops: list[RecordedOp] = []
        self._names: Counter = Counter()

    def __enter__(self):
        from tensorflow.python.eager import record
        from tensorflow.python.framework import op_callbacks

        self._record_module = record
        self._original_record = record.record_operation
        record.record_operation = self._record_custom_gradient
        op_callbacks.add_op_callback(self._on_op)
        return self

    def __exit__(self, *exc):
        from tensorflow.python.framework import op_callbacks

        op_callbacks.remove_op_callback(self._on_op)
        self._record_module.record_operation = self._original_record
        return False

    def _unique(self, base: str) -> str:
        count = self._names[base]
        self._names[base] += 1
        return base if count == 0 else f"{base}_{count}"

    def _scoped(self, op_type: str) -> str:
        from tensorflow.python.framework import ops

        scope = ops.get_name_scope()
        return self._unique(f"{scope}/{op_type}" if scope else op_type)

    def _on_op(self, op_type, inputs, attrs, outputs, op_name=None, graph=None):
        from tensorflow.python import pywrap_tfe

        if graph is not None:  # ops built inside a nested trace are not executed here
            return None
        op_type = op_type.decode() if isinstance(op_type, bytes) else str(op_type)
        call = op_type in CALL_OPS or not _is_registered_op(op_type)
        self.ops.append(RecordedOp(self._scoped(op_type), op_type, list(inputs), list(outputs),
                                   attrs, not pywrap_tfe.TFE_Py_TapeSetIsStopped(), call))
        return None

    def _record_custom_gradient(self, op_type, output_tensors, input_tensors, backward_function,
                                forward_function=None):
        self.ops.append(RecordedOp(self._scoped(CUSTOM_GRADIENT), CUSTOM_GRADIENT,
                                   list(input_tensors), list(output_tensors), None, True, True))
        return self._original_record(op_type, output_tensors, input_tensors, backward_function,
                                     forward_function)


def _is_registered_op(op_type: str) -> bool:
    from tensorflow.python.framework import op_def_registry

    return op_def_registry.get(op_type) is not None


class GradientProber:
    """Asks an op's registered gradient function which inputs it returns a gradient for.

    This is the function the tape calls on the way back, called the way the tape calls it (on a
    mock op holding the recorded attributes and tensors), so a ``None`` here is a ``None`` there.
    Results are cached per op type and dtypes: for ordinary ops the answer depends on nothing else.
    """

    def __init__(self):
        self._cache: dict[Any, tuple[bool, ...]] = {}

    def passes(self, op: RecordedOp) -> tuple[bool, ...]:
        """For each input of ``op``: does the gradient flow back into it?"""
        trainable = tuple(is_trainable_dtype(t.dtype) for t in op.inputs)
        if not op.recorded:
            return (False,) * len(op.inputs)  # run inside stop_recording: the tape never saw it
        if op.call:
            return trainable
        if not any(is_trainable_dtype(t.dtype) for t in op.outputs):
            return (False,) * len(op.inputs)  # nothing comes back through integer/bool outputs
        key = (op.type, tuple(t.dtype for t in op.inputs), tuple(t.dtype for t in op.outputs))
        if key not in self._cache:
            self._cache[key] = self._probe(op, trainable)
        return self._cache[key]

    @staticmethod
    def _probe(op: RecordedOp, trainable: tuple[bool, ...]) -> tuple[bool, ...]:
        import tensorflow as tf
        from tensorflow.python.eager import backprop
        from tensorflow.python.framework import ops as tf_ops

        n_inputs = len(op.inputs)
        try:
            grad_fn = tf_ops._gradient_registry.lookup(op.type)
        except LookupError:
            return (False,) * n_inputs
        if grad_fn is None:  # registered with ops.NotDifferentiable
            return (False,) * n_inputs
        mock = backprop._MockOp(op.attrs, op.inputs, op.outputs, op.type, None)
        out_grads = [tf.zeros_like(t) if t.dtype.is_floating or t.dtype.is_complex else None
                     for t in op.outputs]
        try:
            grads = grad_fn(mock, *out_grads)
        except Exception:  # a gradient function we cannot call out of context: assume it passes
            return trainable
        if not isinstance(grads, (list, tuple)):
            grads = [grads]
        grads = list(grads) + [None] * (n_inputs - len(grads))
        return tuple(g is not None for g in grads[:n_inputs])


def build_op_graph(ops: list[RecordedOp], *, handles: dict[int, tuple[str, str]],
                   outputs: dict[int, str], loss, layer_names: set[str],
                   prober: GradientProber) -> tuple[nx.DiGraph, str]:
    """Build the labelled DiGraph of the recorded ops; return it with the loss node's name.

    ``handles`` maps ``id(resource handle)`` to (node name, Keras path) for every variable;
    ``outputs`` maps ``id(output tensor)`` to the model output's name.
    """
    graph = nx.DiGraph()
    producer: dict[int, str] = {}
    for node, path in handles.values():
        graph.add_node(node, type="VariableHandle", layer=None, meta=False, variable=path)
    for key, (node, _) in handles.items():
        producer[key] = node
    for op in ops:
        graph.add_node(op.name, type=op.type, layer=layer_of(op.name, layer_names),
                       meta=_is_meta(op))
        passes = None
        for index, tensor in enumerate(() if op.type in SHAPE_OPS else op.inputs):
            source = producer.get(id(tensor))
            if source is None:
                continue  # a constant or an input: nothing upstream
            trainable = is_trainable_dtype(tensor.dtype)
            if trainable and passes is None:
                passes = prober.passes(op)
            grad = bool(trainable and passes[index])
            if graph.has_edge(source, op.name):
                edge = graph.edges[source, op.name]
                edge["float"] = edge["float"] or trainable
                edge["grad"] = edge["grad"] or grad
            else:
                graph.add_edge(source, op.name, float=trainable, grad=grad)
        for tensor in op.outputs:
            producer[id(tensor)] = op.name
    for key, name in outputs.items():
        if key in producer:
            graph.nodes[producer[key]]["output"] = name
    loss_node = producer.get(id(loss))
    if loss_node is None:  # the loss is a constant: nothing reaches it
        loss_node = "loss"
        graph.add_node(loss_node, type="Const", layer=None, meta=False)
    graph.nodes[loss_node]["loss"] = True
    return graph, loss_node


def _is_meta(op: RecordedOp) -> bool:
    if op.type in METADATA_OPS:
        return True
    return bool(op.outputs) and all(t.dtype.base_dtype.name == "bool" for t in op.outputs)


def layer_of(op_name: str, layer_names: set[str]) -> str | None:
    """The Keras layer scope of an op: its name scopes that name layers, uniquifiers removed.

    ``functional_1/d1_1/MatMul`` -> ``d1``; ``model/bert/transformer_layer_0/query_1/add`` ->
    ``bert/transformer_layer_0/query``.
    """
    matched = []
    for scope in op_name.split("/")[:-1]:
        if scope in layer_names:
            matched.append(scope)
        else:
            stripped = _UNIQUIFIER.sub("", scope)
            if stripped in layer_names:
                matched.append(stripped)
    return "/".join(matched) or None
