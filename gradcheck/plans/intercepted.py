"""Somebody else's training step, recorded and intercepted: a model's own ``train_step`` or the
user's own loop step.

The step runs eagerly (``hooks.eager``: the bodies of ``tf.function``s run op by op under the op
recorder), with every ``tape.gradient`` call and every optimizer apply intercepted
(``hooks.interception``), the variables it reads and the values that leave TensorFlow watched
(``hooks.boundaries``), and everything it may change restored (``plans.state``).  ``Recording``
is that set of hooks for one recorded run (``plans.steps`` runs several steps with it, updates
applied to a snapshot); ``replay_intercepted`` runs a step again, nothing applied.  What a run
showed comes back in ``StepRun`` terms: the op graph, the gradient calls (with their ZERO requests and
watched variables), what each optimizer was handed, what the step changed itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from gradcheck.hooks.boundaries import ValuesLeaving, VariableReads
from gradcheck.hooks.eager import FunctionsRunEagerly
from gradcheck.hooks.interception import StepInterceptor
from gradcheck.hooks.layers import BranchRecorder, LayerCalls
from gradcheck.hooks.ops import OpRecorder
from gradcheck.plans.base import GradientCall
from gradcheck.plans.opgraph import build_op_graph, variable_nodes
from gradcheck.plans.recorded import output_tensors, tape_verdict
from gradcheck.plans.state import PreservedState


class Recorded:
    """What a run of the step showed, in ``StepRun`` terms."""

    def __init__(self, variables, graph, handles, calls, applied, assigned, called, branches,
                 unjudged=(), boundaries=None):
        self.variables, self.graph, self.handles, self.calls = variables, graph, handles, calls
        self.applied, self.assigned, self.called_layers = applied, assigned, called
        self.branches = branches
        self.unjudged = list(unjudged)  #: variables the step asked for or applied, not judged
        #: ``hooks.boundaries``' variable reads and values leaving TensorFlow, and the handles of
        #: variables an optimizer was handed a gradient for without their being judged
        self.reads, self.departures, self.trained_others = boundaries or ({}, [], frozenset())


class Recording:
    """The hooks of one recorded run of a step, entered together (a context manager).

    ``owner`` is the model whose own call names the outputs in the op graph (anything else
    names none); ``interception`` goes to ``StepInterceptor`` (``apply=True`` and its callbacks
    for steps really applied).  After the run: ``recorder``, ``layer_calls``, ``branches``,
    ``reads``, ``leaving`` and ``seen`` (the interceptor, whose ``record`` holds the calls).
    """

    def __init__(self, owner, variables: list, name_optimizer: Callable[[Any], str],
                 named_inputs: dict | None = None, **interception):
        self.names = variable_nodes(variables)
        tf_vars = [getattr(v, "value", v) for v in variables]
        self.recorder = OpRecorder({id(v.handle): (v.handle, node)
                                    for v, node in zip(tf_vars, self.names)}, named_inputs)
        self._owner, self._variables = owner, variables
        self._name, self._interception = name_optimizer, interception
        self._stack = contextlib.ExitStack()

    def __enter__(self):
        enter = self._stack.enter_context
        enter(FunctionsRunEagerly())
        enter(self.recorder)
        self.layer_calls = enter(LayerCalls(self._owner))
        self.branches = enter(BranchRecorder(self.recorder))
        self.reads = enter(VariableReads())
        self.leaving = enter(ValuesLeaving(self.recorder))
        self.seen = enter(StepInterceptor(self._variables, tape_verdict, self._name,
                                          **self._interception))
        return self

    def __exit__(self, *exc):
        return self._stack.__exit__(*exc)

    def anchored(self, variables: list, calls: list, assigned: set[int],
                 layer_names: set[str]) -> tuple:
        """The op graph of the recorded run, each of ``calls`` (the record's own, or merged over
        several steps, in the record's order first) anchored at its target's producer; returns
        (graph, ``GradientCall``s, handles)."""
        import tensorflow as tf

        targets = [call.target for call in self.seen.record.calls]
        predictions = self.layer_calls.outputs
        graph, first_node = build_op_graph(
            self.recorder, handles={node: var.path for node, var in zip(self.names, variables)},
            outputs=output_tensors(self._owner, predictions) if predictions is not None else {},
            loss=targets[0] if targets else tf.constant(0.0), layer_names=layer_names)
        anchored = []
        for number, call in enumerate(calls):
            node = None
            if number < len(targets):
                node = self.recorder.producer_of(targets[number]) if number else first_node
            if node is None:
                node = f"loss:{number}"
                graph.add_node(node, type="Const", layer=None, meta=False)
            graph.nodes[node]["loss"] = True
            anchored.append(GradientCall(
                node, call.results, call.site, call.optimizer,
                by_hand=call.optimizer is None and bool(assigned & set(call.results)),
                watched=self.reads.add_watched(call.watched), zero_requested=call.zero_requested,
                filled=frozenset(call.filled), raises=call.raises,
                not_watched=frozenset(call.not_watched)))
        handles = [node if graph.succ[node] else None for node in self.names]
        return graph, anchored, handles

    def boundaries(self) -> tuple:
        """What ``Recorded`` keeps of the reads, the departures and the variables trained that
        are not judged."""
        return (self.reads.reads, self.leaving.departures,
                frozenset(self.seen.record.handed_others))


def replay_intercepted(step: Callable[[], Any], owner, variables: list, *, seed: int | None,
                       name_optimizer: Callable[[Any], str]):
    """The step again, exactly as recorded but recording nothing: nothing applied, all restored."""
    import keras

    with PreservedState(owner):
        if seed is not None:
            keras.utils.set_random_seed(seed)
        with FunctionsRunEagerly(), StepInterceptor(variables, lambda grad: None, name_optimizer):
            return step()
