"""A networkx graph of the traced forward ops, labelled with where gradient can flow.

Nodes are op names, with attributes:
  ``type`` (op type), ``layer`` (Keras layer scope or None), ``meta`` (True for ops whose outputs are
  predicates or metadata: comparisons, Shape, Bitcast …), ``variable`` (the Keras variable path, on a
  variable's captured handle), ``output`` (model output name), ``loss`` (True on the loss op).
Edges P -> C (a tensor of P consumed by C) carry:
  ``float``: some tensor on the edge has a dtype gradient can flow through (float, resource, variant);
  ``grad``: some such tensor gets a gradient back from C (C's registered gradient function returns
  something for that input).

Only this module and ``step`` touch TensorFlow; ``diagnose`` reads the networkx graph.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

import networkx as nx

#: Ops that contain a function body (control flow, nested tf.function).  Their gradient functions
#: build whole backward functions, so we don't probe them: every trainable input is assumed to pass
#: gradient, and the tape settles any disagreement.
CALL_OPS = frozenset({"While", "StatelessWhile", "If", "StatelessIf", "Case", "StatelessCase",
                      "PartitionedCall", "StatefulPartitionedCall"})

#: Ops whose output describes a tensor rather than carrying its values.
METADATA_OPS = frozenset({"Shape", "ShapeN", "Size", "Rank", "Bitcast", "BitwiseAnd", "BitwiseOr",
                          "BitwiseXor", "ZerosLike", "OnesLike", "IsNan", "IsInf", "IsFinite",
                          "BroadcastGradientArgs", "TensorListLength", "TensorListElementShape"})

_UNIQUIFIER = re.compile(r"_\d+$")


def is_trainable_dtype(dtype) -> bool:
    """The dtypes a GradientTape records gradient through (``backprop_util.IsTrainable``)."""
    import tensorflow as tf

    base = dtype.base_dtype
    return base.is_floating or base.is_complex or base in (tf.resource, tf.variant)


class GradientProber:
    """Asks an op's registered gradient function which inputs it returns a gradient for.

    This is the same function the tape calls on the way back, so a ``None`` here is a ``None``
    there.  Results are cached per op type and dtypes (the answer depends on nothing else for
    ordinary ops; custom gradients are probed one by one).
    """

    def __init__(self):
        self._cache: dict[Any, tuple[bool, ...]] = {}

    def passes(self, op) -> tuple[bool, ...]:
        """For each input of ``op``: does its gradient function return a gradient for it?"""
        if op.type in CALL_OPS:
            return tuple(is_trainable_dtype(t.dtype) for t in op.inputs)
        custom = _gradient_op_type(op)
        key = None if custom else (op.type, tuple(t.dtype for t in op.inputs),
                                   tuple(t.dtype for t in op.outputs))
        if key is not None and key in self._cache:
            return self._cache[key]
        answer = self._probe(op)
        if key is not None:
            self._cache[key] = answer
        return answer

    @staticmethod
    def _probe(op) -> tuple[bool, ...]:
        import tensorflow as tf
        from tensorflow.python.framework import ops as tf_ops

        n_inputs = len(op.inputs)
        if not any(is_trainable_dtype(t.dtype) for t in op.outputs):
            return (False,) * n_inputs  # nothing can come back through integer/bool outputs
        try:
            grad_fn = tf_ops.get_gradient_function(op)
        except LookupError:
            return (False,) * n_inputs
        if grad_fn is None:  # registered with ops.NotDifferentiable
            return (False,) * n_inputs
        out_grads = [tf.zeros_like(t) if t.dtype.is_floating or t.dtype.is_complex else None
                     for t in op.outputs]
        try:
            with tf.name_scope("gradcheck_probe"):
                grads = grad_fn(op, *out_grads)
        except Exception:
            return tuple(is_trainable_dtype(t.dtype) for t in op.inputs)
        if not isinstance(grads, (list, tuple)):
            grads = [grads]
        grads = list(grads) + [None] * (n_inputs - len(grads))
        return tuple(g is not None for g in grads[:n_inputs])


def _gradient_op_type(op) -> str | None:
    try:
        return op.get_attr("_gradient_op_type").decode()
    except (ValueError, AttributeError):
        return None


def build_op_graph(ops: Iterable, *, variable_handles: dict[str, str], output_ops: dict[str, str],
                   loss_op: str, layer_names: set[str], prober: GradientProber) -> nx.DiGraph:
    """Build the labelled DiGraph of the forward ``ops``.

    ``variable_handles`` maps a variable's captured-handle op name to its Keras path;
    ``output_ops`` maps an op name to the model output it produces.
    """
    ops = list(ops)
    graph = nx.DiGraph()
    for op in ops:
        graph.add_node(op.name, type=op.type, layer=layer_of(op.name, layer_names),
                       meta=_is_meta(op))
    for op in ops:
        passes = None
        for index, tensor in enumerate(op.inputs):
            producer = tensor.op.name
            if producer not in graph:
                continue
            trainable = is_trainable_dtype(tensor.dtype)
            if trainable and passes is None:
                passes = prober.passes(op)
            grad = bool(trainable and passes[index])
            if graph.has_edge(producer, op.name):
                edge = graph.edges[producer, op.name]
                edge["float"] = edge["float"] or trainable
                edge["grad"] = edge["grad"] or grad
            else:
                graph.add_edge(producer, op.name, float=trainable, grad=grad)
    for name, path in variable_handles.items():
        if name in graph:
            graph.nodes[name]["variable"] = path
    for name, output in output_ops.items():
        if name in graph:
            graph.nodes[name]["output"] = output
    graph.nodes[loss_op]["loss"] = True
    return graph


def _is_meta(op) -> bool:
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
