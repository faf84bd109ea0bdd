"""The networkx graph of the ops one step executed, labelled with where gradient can flow.

Nodes are op names (``<name scope>/<OpType>``, uniquified like graph mode), with attributes:
  ``type`` (op type), ``layer`` (Keras layer scope or None), ``meta`` (True for ops whose outputs are
  predicates or metadata: comparisons, Shape, Bitcast …), ``variable`` (the Keras variable path, on a
  variable's handle node), ``output`` (model output name), ``loss`` (True on a loss op),
  ``location`` (a ``SourceLocation`` in user code, only on ops that can cut a gradient),
  ``dead`` (True on an activation whose output is zero on every element), ``one_element`` (True
  on a softmax over an axis of one element: a constant), ``add_loss`` (True on
  an op producing an ``add_loss`` term), ``reads_inputs`` (the model inputs an op consumes),
  ``call`` (True on a function call or custom gradient, whose body the graph does not show).
The graph itself has ``add_loss`` True when some op is marked so.
Edges P -> C (a tensor of P consumed by C) carry:
  ``float``: some tensor on the edge has a dtype gradient can flow through (float, resource, variant);
  ``grad``: some such tensor gets a gradient back from C (C's registered gradient function — the one
  the tape calls — returns something for that input, and the tape was recording when C ran).

The record comes from ``hooks.ops.OpRecorder``; everything downstream (``diagnose.causes``,
``diagnose.zero``) reads only this graph.
"""

from __future__ import annotations

import re
from typing import Any

import networkx as nx

from gradcheck.hooks.ops import METADATA_OPS, OpRecorder, RecordedOp

#: Ops that read only a tensor's shape.  A trace folds them into constants; eagerly they run, but
#: they carry no value and no gradient, so they do not link their input to anything downstream.
SHAPE_OPS = frozenset({"Shape", "ShapeN", "Size", "Rank"})


_UNIQUIFIER = re.compile(r"_\d+$")


def is_trainable_dtype(dtype) -> bool:
    """The dtypes a GradientTape records gradient through (``backprop_util.IsTrainable``)."""
    import tensorflow as tf

    base = tf.as_dtype(dtype).base_dtype
    return base.is_floating or base.is_complex or base in (tf.resource, tf.variant)


def variable_nodes(variables: list) -> list[str]:
    """One graph node name per variable, ``variable:<path>``, unique even where paths repeat
    (T5 has two variables of the same path; one node for both would merge their verdicts)."""
    names, seen = [], set()
    for index, variable in enumerate(variables):
        node = f"variable:{variable.path}"
        if node in seen:
            node = f"{node}#{index}"
        seen.add(node)
        names.append(node)
    return names


class GradientProber:
    """Asks an op's registered gradient function which inputs it returns a gradient for.

    This is the function the tape calls on the way back, called the way the tape calls it (on a
    mock op holding the recorded attributes and tensors), so a ``None`` here is a ``None`` there.
    Results are per op type and dtypes: for ordinary ops the answer depends on nothing else.
    """

    def __init__(self, examples: dict[tuple, tuple]):
        self._examples = examples
        self._cache: dict[tuple, tuple[bool, ...]] = {}

    def passes(self, op: RecordedOp) -> tuple[bool, ...]:
        """For each input of ``op``: does the gradient flow back into it?"""
        trainable = tuple(is_trainable_dtype(dtype) for _, dtype in op.sources)
        if not op.recorded:
            return (False,) * len(trainable)  # run inside stop_recording: the tape never saw it
        if op.call:
            return trainable
        if not any(is_trainable_dtype(dtype) for dtype in op.output_dtypes):
            return (False,) * len(trainable)  # nothing comes back through integer/bool outputs
        if op.key not in self._cache:
            self._cache[op.key] = self._probe(op.type, *self._examples[op.key], trainable)
        return self._cache[op.key]

    @staticmethod
    def _probe(op_type, attrs, inputs, outputs, trainable) -> tuple[bool, ...]:
        import tensorflow as tf
        from tensorflow.python.eager import backprop
        from tensorflow.python.framework import ops as tf_ops

        n_inputs = len(inputs)
        try:
            grad_fn = tf_ops._gradient_registry.lookup(op_type)
        except LookupError:
            return (False,) * n_inputs
        if grad_fn is None:  # registered with ops.NotDifferentiable
            return (False,) * n_inputs
        def call(inputs, outputs):
            mock = backprop._MockOp(attrs, inputs, outputs, op_type, None)
            out_grads = [tf.zeros_like(t) if t.dtype.is_floating or t.dtype.is_complex else None
                         for t in outputs]
            return grad_fn(mock, *out_grads)

        try:  # symbolically first: same answer, no backprop kernels run on full-size zeros
            with tf.Graph().as_default():
                grads = call(*([tf.compat.v1.placeholder(t.dtype, t.shape) for t in tensors]
                               for tensors in (inputs, outputs)))
        except Exception:
            try:
                grads = call(inputs, outputs)
            except Exception:  # a gradient function we cannot call out of context: assume it passes
                return trainable
        if not isinstance(grads, (list, tuple)):
            grads = [grads]
        grads = list(grads) + [None] * (n_inputs - len(grads))
        return tuple(g is not None for g in grads[:n_inputs])


def build_op_graph(recorder: OpRecorder, *, handles: dict[str, str], outputs: dict[str, Any],
                   loss, layer_names: set[str], add_losses=()) -> tuple[nx.DiGraph, str]:
    """Build the labelled DiGraph of the recorded ops; return it with the loss node's name.

    ``handles`` maps each variable's handle node to its Keras path; ``outputs`` maps a model
    output's name to its tensor; ``add_losses`` are the step's ``add_loss`` terms.
    """
    prober = GradientProber(recorder.examples)
    graph = nx.DiGraph()
    for node, path in handles.items():
        graph.add_node(node, type="VariableHandle", layer=None, meta=False, variable=path)
    for op in recorder.ops:
        graph.add_node(op.name, type=op.type, layer=layer_of(op.name, layer_names),
                       meta=_is_meta(op))
        if op.location is not None:
            graph.nodes[op.name]["location"] = op.location
        if op.dead:
            graph.nodes[op.name]["dead"] = True
        if op.one_element:
            graph.nodes[op.name]["one_element"] = True
        if op.reads_inputs:
            graph.nodes[op.name]["reads_inputs"] = op.reads_inputs
        if op.call:
            graph.nodes[op.name]["call"] = True
        if op.type in SHAPE_OPS:
            continue
        passes = None
        for index, (source, dtype) in enumerate(op.sources):
            if source is None:
                continue  # a constant or an input: nothing upstream
            trainable = is_trainable_dtype(dtype)
            if trainable and passes is None:
                passes = prober.passes(op)
            grad = bool(trainable and passes[index])
            if graph.has_edge(source, op.name):
                edge = graph.edges[source, op.name]
                edge["float"] = edge["float"] or trainable
                edge["grad"] = edge["grad"] or grad
            else:
                graph.add_edge(source, op.name, float=trainable, grad=grad)
    for name, tensor in outputs.items():
        node = recorder.producer_of(tensor)
        if node is not None:
            graph.nodes[node]["output"] = name
    for term in add_losses:
        node = recorder.producer_of(term)
        if node is not None:
            graph.nodes[node]["add_loss"] = True
            graph.graph["add_loss"] = True
    loss_node = recorder.producer_of(loss)
    if loss_node is None:  # the loss is a constant: nothing reaches it
        loss_node = "loss"
        graph.add_node(loss_node, type="Const", layer=None, meta=False)
    graph.nodes[loss_node]["loss"] = True
    return graph, loss_node


def _is_meta(op: RecordedOp) -> bool:
    if op.type in METADATA_OPS:
        return True
    return bool(op.output_dtypes) and all(d.base_dtype.name == "bool" for d in op.output_dtypes)


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
