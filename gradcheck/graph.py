"""A networkx graph of the ops one eager step executed, labelled with where gradient can flow.

``OpRecorder`` watches the step through TensorFlow's op callbacks: every op the forward pass and
the loss execute is recorded with its type, name scope, attributes and the very tensor objects it
consumed and produced, so producers are found by tensor identity and a variable's reads by its
resource handle.  ``build_op_graph`` turns the record into a ``networkx.DiGraph``.

Nodes are op names (``<name scope>/<OpType>``, uniquified like graph mode), with attributes:
  ``type`` (op type), ``layer`` (Keras layer scope or None), ``meta`` (True for ops whose outputs are
  predicates or metadata: comparisons, Shape, Bitcast …), ``variable`` (the Keras variable path, on a
  variable's handle node), ``output`` (model output name), ``loss`` (True on the loss op),
  ``location`` (a ``SourceLocation`` in user code, only on ops that can cut a gradient),
  ``dead`` (True on an activation whose output is zero on every element), ``add_loss`` (True on
  an op producing an ``add_loss`` term), ``reads_inputs`` (the model inputs an op consumes),
  ``call`` (True on a function call or custom gradient, whose body the graph does not show).
The graph itself has ``add_loss`` True when some op is marked so.
Edges P -> C (a tensor of P consumed by C) carry:
  ``float``: some tensor on the edge has a dtype gradient can flow through (float, resource, variant);
  ``grad``: some such tensor gets a gradient back from C (C's registered gradient function — the one
  the tape calls — returns something for that input, and the tape was recording when C ran).

``LayerCalls`` and ``BranchRecorder`` watch the same step from the Keras side: which layers'
``__call__`` ran, and which eager conds and Python ``if`` statements on tensors chose a side (so
``refine`` can look at the side not taken).  ``FlippedTruthTest`` reruns a forward with one such
``if`` answered the other way.

``diagnose`` never touches TensorFlow: it reads the networkx graph.
"""

from __future__ import annotations

import functools
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

#: Ops that can cut a gradient, and so get the user's line recorded (a stack walk each): ordinary
#: ops never pay for it.  Casts to a non-float dtype, comparisons and custom gradients are added
#: by dtype in ``OpRecorder``; control flow is here because a branch not taken cuts too.
CUTTING_OPS = frozenset({"StopGradient", "PreventGradient", "ArgMax", "ArgMin", "TopKV2", "TopK",
                         "Round", "Floor", "Ceil", "Rint", "Sign", "If", "StatelessIf", "Case",
                         "StatelessCase"})

#: Activations that output exact zeros; whether an output is zero everywhere is recorded.
ZEROING_ACTIVATIONS = frozenset({"Relu", "Relu6"})

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
    reads_inputs: tuple = ()  #: names of the model inputs it consumes directly


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
             location=None, dead: bool = False) -> None:
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
                                   dead, reads))
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
        dead = op_type in ZEROING_ACTIVATIONS and not outputs[0]._numpy().any()
        self._add(op_type, inputs, outputs, attrs, not self._tape_stopped(), call, location, dead)
        return None

    def _record_custom_gradient(self, op_type, output_tensors, input_tensors, backward_function,
                                forward_function=None):
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
    """Make Keras' TensorFlow ops read a ``tf.Variable`` in Python, where the op callback sees it.

    Keras' ``convert_to_tensor`` hands a ``tf.Variable`` on unread (``v * x`` on a Keras variable
    reaches ``tf.multiply(variable, x)``), and TensorFlow's C++ fast path then reads it without
    any op callback: the graph would miss the read (T5's layer norms, a weight penalty written
    as ``kernel ** 2``).  Reading it first with ``value()`` runs the same ``ReadVariableOp``,
    recorded on the tape the same way.  Returns the function that undoes the patch.
    """
    import importlib

    import tensorflow as tf

    core = importlib.import_module("keras.src.backend.tensorflow.core")
    original = core.convert_to_tensor

    def convert_to_tensor(x, *args, **kwargs):
        if isinstance(x, tf.Variable) and hasattr(x, "_read_variable_op"):
            x = x.value()
        return original(x, *args, **kwargs)

    patched = []
    for name in ("core", "numpy", "nn", "math", "linalg", "image", "random", "sparse"):
        try:
            module = importlib.import_module(f"keras.src.backend.tensorflow.{name}")
        except ImportError:
            continue
        if getattr(module, "convert_to_tensor", None) is original:
            module.convert_to_tensor = convert_to_tensor
            patched.append(module)

    def undo():
        for module in patched:
            module.convert_to_tensor = original

    return undo


@functools.cache
def _is_registered_op(op_type: str) -> bool:
    from tensorflow.python.framework import op_def_registry

    return op_def_registry.get(op_type) is not None


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


class LayerCalls:
    """Context manager noting every Keras layer whose ``__call__`` runs inside it.

    ``Layer.__call__`` is the one door every layer call goes through (functional models, nested
    models and keras-hub layers that override ``__call__`` all reach it via ``super()``), so
    observing it tells "never called" from "called but did not read the weight" by layer
    identity, where name scopes would be ambiguous between sub-models with equal layer names.
    """

    def __init__(self):
        self.called: set[int] = set()  #: ``id`` of every layer called

    def __enter__(self):
        from keras.src.layers.layer import Layer

        self._layer_class = Layer
        self._original = original = Layer.__call__
        called = self.called

        @functools.wraps(original)
        def observed(layer, *args, **kwargs):
            called.add(id(layer))
            return original(layer, *args, **kwargs)

        Layer.__call__ = observed
        return self

    def __exit__(self, *exc):
        self._layer_class.__call__ = self._original
        return False


@dataclass
class Branch:
    """One eager ``tf.cond`` / ``keras.ops.cond`` the step ran: the side taken, and the other."""

    predicate: str | None  #: node of the predicate tensor (None: a Python value)
    taken: bool  #: the predicate's value
    not_taken: Any  #: the branch function the step did not run (None for a Python ``if``)
    location: Any  #: ``SourceLocation`` of the cond call in user code, or None
    truth_test: int | None = None  #: a Python ``if`` on a tensor: its index among the step's tests


class BranchRecorder:
    """Context manager noting every eagerly run ``tf.cond`` and ``smart_cond`` (``keras.ops.cond``),
    and every Python ``if`` on a tensor's value written in user code.

    Eagerly a cond is a Python branch: only the taken side runs and the tape never sees the
    other.  Keeping the other side's function lets a probe run it afterwards, off the tape, to
    find the weights read only there; a Python ``if`` is flipped in a variant forward instead
    (``FlippedTruthTest``).
    """

    def __init__(self, recorder: OpRecorder):
        self.branches: list[Branch] = []
        self._recorder = recorder
        self._truth_tests = 0

    def __enter__(self):
        import tensorflow as tf
        from tensorflow.python.framework import ops

        self._patched = [(tf, "cond"), (tf.__internal__.smart_cond, "smart_cond"),
                         (ops._EagerTensorBase, "__bool__")]
        self._originals = [getattr(module, name) for module, name in self._patched]
        for (module, name), original in zip(self._patched[:2], self._originals):
            setattr(module, name, self._observing(original))
        ops._EagerTensorBase.__bool__ = self._observing_truth(self._originals[2])
        return self

    def _observing_truth(self, original):
        from gradcheck.locations import caller_location

        @functools.wraps(original)
        def observed(tensor):
            value = original(tensor)
            index, self._truth_tests = self._truth_tests, self._truth_tests + 1
            location = caller_location()
            if location is not None:  # a branch in user code, not one inside TF or Keras
                self.branches.append(Branch(self._recorder.producer_of(tensor), value, None,
                                            location, index))
            return value

        return observed

    def __exit__(self, *exc):
        for (module, name), original in zip(self._patched, self._originals):
            setattr(module, name, original)
        return False

    def _observing(self, original):
        from gradcheck.locations import caller_location

        @functools.wraps(original)
        def observed(pred, true_fn=None, false_fn=None, *args, **kwargs):
            taken = _eager_truth(pred)
            if taken is not None and callable(true_fn) and callable(false_fn):
                predicate = None if isinstance(pred, bool) else self._recorder.producer_of(pred)
                self.branches.append(Branch(predicate, taken, false_fn if taken else true_fn,
                                            caller_location()))
            return original(pred, true_fn, false_fn, *args, **kwargs)

        return observed


def _eager_truth(pred) -> bool | None:
    """A cond predicate's value when it is a Python bool or an eager scalar, else None."""
    if isinstance(pred, bool):
        return pred
    numpy = getattr(pred, "numpy", None)
    if numpy is None:
        return None
    try:
        return bool(numpy())
    except Exception:  # a symbolic or non-scalar predicate: not an eager branch
        return None


class FlippedTruthTest:
    """Context manager under which the ``index``-th Python truth test of a tensor answers the
    opposite: a forward run under it takes the other side of that ``if``."""

    def __init__(self, index: int):
        self._index = index

    def __enter__(self):
        from tensorflow.python.framework import ops

        self._original = original = ops._EagerTensorBase.__bool__
        seen = [0]

        @functools.wraps(original)
        def flipped(tensor):
            value = original(tensor)
            seen[0] += 1
            return (not value) if seen[0] - 1 == self._index else value

        ops._EagerTensorBase.__bool__ = flipped
        return self

    def __exit__(self, *exc):
        from tensorflow.python.framework import ops

        ops._EagerTensorBase.__bool__ = self._original
        return False
