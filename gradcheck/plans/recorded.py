"""The one recorded GradientTape step of the loss plans: gradients under NONE (and so ZERO) and
the op graph.

The step runs eagerly, exactly like the hand-written check (forward pass and loss on a
``tf.GradientTape``, then ``tape.gradient``), while ``hooks.ops.OpRecorder`` records every op it
executes.  The tape's own answers are the verdicts; the recorded ops become the networkx graph the
causes are read from.  Under ``UnconnectedGradients.ZERO`` the tape returns ``zeros_like`` for
exactly the variables that are None under NONE and the same tensors for the rest, so one backward
pass answers both.  Running eagerly costs no tracing or function instantiation, and the numbers
are the eager tape's to the bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from gradcheck.hooks.boundaries import ValuesLeaving, VariableReads
from gradcheck.hooks.layers import BranchRecorder, LayerCalls
from gradcheck.hooks.ops import OpRecorder
from gradcheck.layers import layers_of
from gradcheck.plans.base import TapeVerdict
from gradcheck.plans.compiled import output_keys
from gradcheck.plans.loss import LossFunction
from gradcheck.plans.opgraph import build_op_graph, variable_nodes
from gradcheck.plans.py_functions import py_function_failure
from gradcheck.problems import ErrorKind, SourceProblem, describe_exception


@dataclass
class RecordedStep:
    """What the step found: one tape verdict per variable, the op graph and its anchors."""

    verdicts: list[TapeVerdict]
    graph: nx.DiGraph
    handles: list[str | None]  #: per variable, its handle node (None: never read in the step)
    loss_node: str
    called_layers: frozenset[int] = frozenset()  #: ``id`` of every Keras layer called in the step
    branches: list = field(default_factory=list)  #: every eager branch the step ran
    tensors: object = None  #: the inputs as the tensors the step ran on
    named_inputs: dict = field(default_factory=dict)  #: ``id(tensor)`` -> (tensor, input name)
    add_loss_terms: int = 0  #: ``add_loss`` terms of the step's forward pass (activity
    #: regularizers' terms not counted: the loss line calls those regularizers)
    reads: dict = field(default_factory=dict)  #: ``hooks.boundaries.VariableReads.reads``
    departures: list = field(default_factory=list)  #: ``hooks.boundaries.Departure``s
    compared: set = field(default_factory=set)  #: integer constants the step compared with


def run_step(model, inputs, variables: list, loss: LossFunction, *, training: bool) -> RecordedStep:
    """Run and record one step of ``model`` on ``inputs``; ``variables`` are Keras variables."""
    import tensorflow as tf

    tf_vars = [getattr(v, "value", v) for v in variables]
    names = variable_nodes(variables)
    nodes = {id(v.handle): (v.handle, node) for v, node in zip(tf_vars, names)}
    stage = "forward pass"  # names the culprit if the step fails
    tensors, named_inputs = named_tensors(model, inputs)
    try:
        with OpRecorder(nodes, named_inputs) as recorder, LayerCalls() as calls, \
                BranchRecorder(recorder) as branches, VariableReads() as reads, \
                ValuesLeaving(recorder) as leaving:
            # Watching what it reads too, the tape names every trainable tf.Variable the step
            # reads, those Keras does not track included (TensorFlow's C++ fast path reads a
            # tf.Variable without telling Python; it tells the tapes).
            with tf.GradientTape() as tape:
                tape.watch(tf_vars)
                outputs = forward(model, tensors, training)
                stage = "loss"
                value = tf.convert_to_tensor(loss.compute(model, tensors, outputs))
            reads.add_watched(tape.watched_variables())
    except SourceProblem:
        raise
    except Exception as exc:  # the user's model or loss failed: say where
        raise (py_function_failure(stage, exc, recorder.ops)
               or _step_problem(stage, exc, model, inputs, loss)) from exc
    if value.shape.rank != 0 or not value.dtype.is_floating:
        raise SourceProblem(ErrorKind.BAD_LOSS, f"the loss is a {value.dtype.name} tensor of shape "
                            f"{value.shape}, not a float scalar.")
    try:
        grads = tape.gradient(value, tf_vars)
    except Exception as exc:
        raise (py_function_failure("backward pass", exc, recorder.ops)
               or _step_problem("backward pass", exc, model, inputs, loss)) from exc
    verdicts = [tape_verdict(g) for g in grads]
    del grads
    add_losses = _add_loss_terms(model)
    graph, loss_node = build_op_graph(
        recorder, handles={node: var.path for node, var in zip(names, variables)},
        outputs=output_tensors(model, outputs), loss=value,
        layer_names={layer.name for layer in sublayers(model)}, add_losses=add_losses)
    handles = [nodes[id(v.handle)][1] for v in tf_vars]
    handles = [node if graph.succ[node] else None for node in handles]
    return RecordedStep(verdicts, graph, handles, loss_node, frozenset(calls.called),
                        branches.branches, tensors, named_inputs,
                        max(0, len(add_losses) - activity_regularized(model)), reads.reads,
                        leaving.departures, recorder.compared)


def named_tensors(model, inputs):
    """The inputs as tensors (so the ops reading them are known), and ``id`` -> (tensor, name)."""
    import keras
    import tensorflow as tf

    try:
        tensors = keras.tree.map_structure(tf.convert_to_tensor, inputs)
    except Exception:  # an input TensorFlow cannot hold: the model gets it as it is, unnamed
        return inputs, {}
    if isinstance(tensors, dict):
        names = list(keras.tree.flatten({key: key for key in tensors}))
    else:
        try:
            names = [getattr(t, "name", None) or f"input {i}"
                     for i, t in enumerate(getattr(model, "inputs", None) or [])]
        except Exception:  # a subclassed model has no symbolic inputs
            names = []
    flat = keras.tree.flatten(tensors)
    return tensors, {id(t): (t, names[i] if i < len(names) else f"input {i}")
                     for i, t in enumerate(flat)}


def _add_loss_terms(model) -> list:
    """The ``add_loss`` terms of the step (not ``model.losses``: that computes regularizers anew)."""
    layers = [model, *sublayers(model)]
    return [term for layer in layers if hasattr(layer, "_get_own_losses")
            for term in layer._get_own_losses()]


def activity_regularized(model) -> int:
    """How many layers of ``model`` add an activity regularizer's term when called."""
    return sum(getattr(layer, "activity_regularizer", None) is not None
               for layer in [model, *sublayers(model)])


def has_regularizers(model) -> bool:
    """Does any weight or layer of ``model`` carry a regularizer (a term of ``model.losses``)?"""
    return (any(getattr(v, "regularizer", None) is not None for v in getattr(model, "weights", ()))
            or activity_regularized(model) > 0)


def tape_verdict(grad) -> TapeVerdict:
    """None-ness, and whether the gradient is exactly all zeros / all finite."""
    import numpy as np
    import tensorflow as tf

    if grad is None:
        return TapeVerdict(none=True, zero=True, finite=True)
    if isinstance(grad, tf.IndexedSlices):  # rows of an embedding: sum repeated ids first
        unique, position = tf.unique(grad.indices)
        values = tf.math.unsorted_segment_sum(grad.values, position, tf.size(unique))
    else:
        values = grad
    array = values.numpy()  # a view of the CPU buffer: numpy's reductions beat eager ops here
    return TapeVerdict(none=False, zero=not array.any(), finite=bool(np.isfinite(array).all()))


def _step_problem(stage: str, exc: Exception, model, inputs, loss: LossFunction) -> Exception:
    from gradcheck.plans.inputs import describe_tree

    shapes = describe_tree(model, inputs)  # each input by name: what --input NAME= to write
    if stage == "loss":
        return SourceProblem(ErrorKind.LOSS_FAILED, f"the {loss.kind.value} loss failed on the "
                             f"model's outputs for the synthetic inputs [{shapes}]: "
                             f"{describe_exception(exc)}; give a loss that fits with --loss "
                             "module:fn.")
    return SourceProblem(ErrorKind.FORWARD_FAILED, f"the model's {stage} failed on the synthetic "
                         f"inputs [{shapes}]: {describe_exception(exc)}; if the model expects "
                         "other shapes, dtypes or values, give them with --input "
                         "NAME=DIM,DIM[:DTYPE][@LOW..HIGH].")


def forward(model, batch, training: bool):
    """``model(batch, training=…)``, or ``model(batch)`` for a layer whose call() takes none."""
    try:
        return model(batch, training=training)
    except TypeError as exc:
        if "training" not in str(exc):
            raise
        return model(batch)


def sublayers(model) -> list:
    """Every layer inside ``model``, recursively (not the model itself)."""
    return layers_of(model)


def output_tensors(model, outputs) -> dict[str, object]:
    """The model output's name (dict key or output name) -> its tensor."""
    import keras

    flat = keras.tree.flatten(outputs)
    names = output_keys(model, outputs)
    return {names[i] if i < len(names) else f"output_{i}": tensor
            for i, tensor in enumerate(flat)}
