"""One run of somebody else's training step, recorded and intercepted: a model's own
``train_step`` or the user's own loop step.

The step runs once, eagerly (``hooks.eager``: the bodies of ``tf.function``s run op by op under
the op recorder), with every ``tape.gradient`` call and every optimizer apply intercepted
(``hooks.interception``): nothing is applied, and everything the step may change is restored
(``plans.state``).  What it showed comes back in ``StepRun`` terms: the op graph, the gradient
calls (with their ZERO requests), what each optimizer was handed, what the step changed itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gradcheck.hooks.boundaries import ValuesLeaving, VariableReads
from gradcheck.hooks.eager import FunctionsRunEagerly
from gradcheck.hooks.interception import StepInterceptor
from gradcheck.hooks.layers import BranchRecorder, LayerCalls
from gradcheck.hooks.ops import OpRecorder
from gradcheck.plans.base import AppliedGradient, GradientCall
from gradcheck.plans.opgraph import build_op_graph, variable_nodes
from gradcheck.plans.recorded import output_tensors, tape_verdict
from gradcheck.plans.state import PreservedState


class Recorded:
    """What one run of the step showed, in ``StepRun`` terms."""

    def __init__(self, variables, graph, handles, calls, applied, assigned, called, branches,
                 unjudged=(), boundaries=None):
        self.variables, self.graph, self.handles, self.calls = variables, graph, handles, calls
        self.applied, self.assigned, self.called_layers = applied, assigned, called
        self.branches = branches
        self.unjudged = list(unjudged)  #: variables the step asked for or applied, not judged
        #: ``hooks.boundaries``' variable reads and values leaving TensorFlow, and the handles of
        #: variables an optimizer was handed a gradient for without their being judged
        self.reads, self.departures, self.trained_others = boundaries or ({}, [], frozenset())


def run_intercepted(step: Callable[[], Any], owner, variables: list, *, seed: int | None,
                    name_optimizer: Callable[[Any], str], layer_names: set[str],
                    named_inputs: dict | None = None) -> Recorded:
    """Run ``step()`` once, eagerly and recorded; ``owner``'s state (``plans.state``) is left
    unchanged.  ``variables`` are the ones judged (Keras variables or ``NamedVariable``s);
    ``seed`` None: the RNGs as they are (restored after).  When ``owner`` is a model, what its own
    call returned in the step names the outputs in the op graph."""
    import keras
    import tensorflow as tf

    names = variable_nodes(variables)
    tf_vars = [getattr(v, "value", v) for v in variables]
    nodes = {id(v.handle): (v.handle, node) for v, node in zip(tf_vars, names)}
    with PreservedState(owner) as preserved:
        if seed is not None:
            keras.utils.set_random_seed(seed)
        with FunctionsRunEagerly(), OpRecorder(nodes, named_inputs) as recorder, \
                LayerCalls(owner) as layer_calls, BranchRecorder(recorder) as branches, \
                VariableReads() as reads, ValuesLeaving(recorder) as leaving, \
                StepInterceptor(variables, tape_verdict, name_optimizer) as seen:
            step()
        assigned = preserved.changed(variables)
    record = seen.record
    targets = [call.target for call in record.calls]
    predictions = layer_calls.outputs
    graph, first_node = build_op_graph(
        recorder, handles={node: var.path for node, var in zip(names, variables)},
        outputs=output_tensors(owner, predictions) if predictions is not None else {},
        loss=targets[0] if targets else tf.constant(0.0), layer_names=layer_names)
    calls = []
    for number, (call, target) in enumerate(zip(record.calls, targets)):
        node = recorder.producer_of(target) if number else first_node
        if node is None:
            node = f"loss:{number}"
            graph.add_node(node, type="Const", layer=None, meta=False)
        graph.nodes[node]["loss"] = True
        by_hand = call.optimizer is None and bool(assigned & set(call.results))
        calls.append(GradientCall(
            node, call.results, call.site, call.optimizer, by_hand,
            watched=reads.add_watched(call.watched), zero_requested=call.zero_requested,
            filled=frozenset(call.filled), raises=call.raises,
            not_watched=frozenset(call.not_watched)))
    record.produced.clear()
    record.filled.clear()
    applied = {index: [AppliedGradient(h.optimizer, h.result, h.call, h.filled) for h in handed]
               for index, handed in record.handed.items()}
    handles = [node if graph.succ[node] else None for node in names]
    return Recorded(variables, graph, handles, calls, applied, assigned,
                    frozenset(layer_calls.called), branches.branches, record.unjudged.values(),
                    (reads.reads, leaving.departures, frozenset(record.handed_others)))


def replay_intercepted(step: Callable[[], Any], owner, variables: list, *, seed: int | None,
                       name_optimizer: Callable[[Any], str]):
    """The step again, exactly as recorded but recording nothing: nothing applied, all restored."""
    import keras

    with PreservedState(owner):
        if seed is not None:
            keras.utils.set_random_seed(seed)
        with FunctionsRunEagerly(), StepInterceptor(variables, lambda grad: None, name_optimizer):
            return step()
