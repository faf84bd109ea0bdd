"""The one traced GradientTape step: gradients under NONE (and so ZERO) and the op graph.

Everything happens in a single ``tf.function`` trace: the forward pass and loss are recorded on a
tape, ``tape.gradient`` decides None-ness at trace time exactly as it would eagerly, the forward ops
are turned into a networkx graph (asking each op's gradient function what it passes back), and one
execution returns, per connected variable, whether its gradient is all zeros and all finite.
Under ``UnconnectedGradients.ZERO`` the tape returns ``zeros_like`` for exactly the variables that
are None under NONE and the same tensors for the rest, so one backward pass answers both.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import networkx as nx

from gradcheck.diagnose import TapeVerdict
from gradcheck.graph import GradientProber, build_op_graph
from gradcheck.losses import LossPlan
from gradcheck.problems import SourceProblem, describe_exception


@dataclass
class StepResult:
    """What the step found: one tape verdict per variable, the op graph and its anchors."""

    verdicts: list[TapeVerdict]
    graph: nx.DiGraph
    handles: list[str | None]  #: per variable, its captured-handle node (None: never captured)
    loss_op: str
    loss_value: float


def run_step(model, inputs, variables: list, loss: LossPlan, *, training: bool) -> StepResult:
    """Trace and run one step of ``model`` on ``inputs``; ``variables`` are Keras variables."""
    import tensorflow as tf

    tf_vars = [getattr(v, "value", v) for v in variables]
    layer_names = {layer.name for layer in _sublayers(model)}
    state: dict[str, Any] = {}

    def traced(batch):
        graph = tf.compat.v1.get_default_graph()
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(tf_vars)
            state["stage"] = "forward pass"  # names the culprit if the trace fails
            outputs = _forward(model, batch, training)
            state["stage"] = "loss"
            value = loss.compute(model, batch, outputs)
            state["stage"] = "analysis"
        value = tf.convert_to_tensor(value)
        if value.shape.rank != 0 or not value.dtype.is_floating:
            raise SourceProblem("bad-loss", f"the loss is a {value.dtype.name} tensor of shape "
                                f"{value.shape}, not a float scalar.")
        forward_ops = graph.get_operations()
        grads = tape.gradient(value, tf_vars)
        state["none"] = [g is None for g in grads]
        state["handles"] = handles = _handle_nodes(graph, tf_vars)
        state["graph"] = build_op_graph(
            forward_ops,
            variable_handles={node: var.path for node, var in zip(handles, variables) if node},
            output_ops=_output_ops(model, outputs),
            loss_op=value.op.name, layer_names=layer_names, prober=GradientProber())
        state["loss_op"] = value.op.name
        flags = [_magnitude_and_finite(g) for g in grads if g is not None]
        magnitude = tf.stack([m for m, _ in flags]) if flags else tf.zeros([0], tf.float32)
        finite = tf.stack([f for _, f in flags]) if flags else tf.zeros([0], tf.bool)
        return value, magnitude, finite

    step = tf.function(traced, autograph=False)
    try:
        with _plain_graph_execution(tf):
            value, magnitude, finite = step(inputs)
    except SourceProblem:
        raise
    except Exception as exc:  # the user's model or loss failed: say where; anything else is ours
        stage = state.get("stage")
        if stage == "analysis" and isinstance(exc, tf.errors.OpError):
            stage = "forward pass or loss"  # a runtime error, raised once the trace has run
        shapes = ", ".join(f"{tuple(a.shape)} {a.dtype}" for a in tf.nest.flatten(inputs))
        if stage in ("forward pass", "forward pass or loss"):
            raise SourceProblem("forward-failed", f"the model's {stage} failed on the "
                                f"synthetic inputs [{shapes}]: {describe_exception(exc)}; if the "
                                "model expects other shapes or dtypes, give them with --input "
                                "NAME=DIM,DIM[:DTYPE].") from exc
        if stage == "loss":
            raise SourceProblem("loss-failed", f"the {loss.kind.value} loss failed on the model's "
                                f"outputs for the synthetic inputs [{shapes}]: "
                                f"{describe_exception(exc)}; give a loss that fits with --loss "
                                "module:fn.") from exc
        raise
    zero = iter(m <= 0.0 for m in magnitude.numpy().tolist())  # -inf: an empty variable
    finite = iter(finite.numpy().tolist())
    verdicts = []
    for none in state["none"]:
        if none:
            verdicts.append(TapeVerdict(none=True, zero=True, finite=True))
        else:
            verdicts.append(TapeVerdict(none=False, zero=next(zero), finite=bool(next(finite))))
    return StepResult(verdicts, state["graph"], state["handles"], state["loss_op"],
                      float(value.numpy()))


@contextlib.contextmanager
def _plain_graph_execution(tf):
    """Run the step without Grappler's rewrites, restoring the user's setting afterwards.

    Fused and rearranged kernels change float rounding: a sum that cancels to exactly 0 eagerly
    (a BatchNorm beta feeding another BatchNorm) comes out as 1e-6 noise, and "zero" would then
    depend on the optimizer.  Unoptimized, the traced step is bit-identical to an eager tape, and
    it also skips the optimizer's own start-up cost.
    """
    saved = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options(
            {"disable_meta_optimizer": saved.get("disable_meta_optimizer", False)})


def _forward(model, batch, training: bool):
    try:
        return model(batch, training=training)
    except TypeError as exc:
        if "training" not in str(exc):
            raise
        return model(batch)  # a plain layer whose call() takes no `training`


def _sublayers(model):
    flatten = getattr(model, "_flatten_layers", None)
    return [layer for layer in (flatten(include_self=False, recursive=True) if flatten else [])]


def _handle_nodes(graph, tf_vars) -> list[str | None]:
    """The placeholder op that stands for each variable's resource handle inside the trace."""
    by_id = {}
    for external, internal in graph.captures:
        by_id[id(external)] = internal.op.name
    return [by_id.get(id(v.handle)) for v in tf_vars]


def _output_ops(model, outputs) -> dict[str, str]:
    import keras

    flat = keras.tree.flatten(outputs)
    names = list(getattr(model, "output_names", None) or [])
    if isinstance(outputs, dict):
        names = list(keras.tree.flatten({k: k for k in outputs}))
    result = {}
    for index, tensor in enumerate(flat):
        op = getattr(tensor, "op", None)
        if op is not None:
            result[op.name] = names[index] if index < len(names) else f"output_{index}"
    return result


def _magnitude_and_finite(grad):
    """The gradient's largest |entry|, and is it all finite?  IndexedSlices are summed per row."""
    import tensorflow as tf

    if isinstance(grad, tf.IndexedSlices):
        unique, position = tf.unique(grad.indices)
        values = tf.math.unsorted_segment_sum(grad.values, position, tf.size(unique))
    else:
        values = grad
    magnitude = tf.cast(tf.reduce_max(tf.abs(values)), tf.float32)  # -inf when empty
    return magnitude, tf.reduce_all(tf.math.is_finite(values))

