"""Findings at the boundaries the tape cannot cross, for every plan alike: a value that leaves
TensorFlow (``left-tensorflow``), a weight read before the tape started (``outside-tape``), and
a trainable ``tf.Variable`` the step reads that the model does not track (``untracked``).

They read what ``hooks.boundaries`` saw during the step (``StepRun.departures`` and
``StepRun.reads``) against the op graph; nothing is run again.
"""

from __future__ import annotations

from dataclasses import replace

import networkx as nx

from gradcheck.diagnose import messages
from gradcheck.diagnose.causes import reaches_loss
from gradcheck.diagnose.holders import holders_of, keras_wrapper
from gradcheck.hooks.interception import tf_variable
from gradcheck.hooks.ops import PY_FUNCTION_OPS
from gradcheck.locations import short_text
from gradcheck.results import Cause, CauseDetail, CauseKind, Status, VariableResult

#: Causes a value leaving TensorFlow can explain.
_LEFT_KINDS = (CauseKind.DETACHED, CauseKind.BLOCKED, CauseKind.UNKNOWN)


def handle_id(variable) -> int:
    """``id`` of the resource handle behind a Keras (or TensorFlow) variable."""
    return id(tf_variable(variable).handle)


def refine_boundaries(run, results: list[VariableResult],
                      judged_by: list[int | None]) -> list[VariableResult]:
    """``left-tensorflow`` and ``outside-tape`` for the unconnected variables they explain."""
    candidates = [i for i, r in enumerate(results) if r.cause is not None
                  and r.cause.kind in _LEFT_KINDS and judged_by[i] is not None
                  and r.cause.detail is not CauseDetail.ADD_LOSS_ONLY]
    if not candidates:
        return results
    refined = list(results)
    departures = _Departures(run)
    for index in candidates:
        call = run.calls[judged_by[index]]
        cause = departures.explain(run.handles[index], call.loss_node, results[index].cause)
        if cause is None and results[index].cause.kind is CauseKind.UNKNOWN:
            cause = _outside_tape(run, run.variables[index], call, results[index].cause)
        if cause is not None:
            refined[index] = replace(results[index], cause=cause, graph_agrees=True)
        elif results[index].cause.kind is CauseKind.DETACHED and not results[index].cause.location:
            location = _read_location(run, run.variables[index])
            if location is not None:  # where the weight is read and its value then dropped
                refined[index] = replace(results[index], cause=replace(results[index].cause,
                                                                       location=location))
    return refined


def _read_location(run, variable):
    """The line (user or third-party code) where the step first read ``variable``, if seen."""
    read = run.reads.get(handle_id(variable))
    return next((s.location for s in read.sightings if s.location is not None), None) \
        if read is not None else None


class _Departures:
    """The values that left TensorFlow in the step, as graph nodes in the order they ran."""

    def __init__(self, run):
        self.graph = run.graph
        order = {node: i for i, node in enumerate(self.graph.nodes)}
        found = [(d.node, d.how, d.location) for d in run.departures if d.node in self.graph]
        found += [(node, _py_function_name(data["type"]), data.get("location"))
                  for node, data in self.graph.nodes(data=True) if data["type"] in PY_FUNCTION_OPS]
        self.found = sorted(found, key=lambda item: order[item[0]])
        self._connected: dict[str, set[str]] = {}

    def explain(self, handle: str | None, loss: str, cause: Cause) -> Cause | None:
        """The cause refined to ``left-tensorflow`` if a value computed from ``handle`` left
        TensorFlow on its way to ``loss``, else None."""
        if not self.found or handle is None or handle not in self.graph:
            return None
        reach = nx.descendants(self.graph, handle)
        if loss not in self._connected:
            self._connected[loss] = reaches_loss(self.graph, loss)
        connected = self._connected[loss]
        for node, how, location in self.found:
            if node not in reach:
                continue
            if self.graph.nodes[node]["type"] in PY_FUNCTION_OPS:
                if loss not in nx.descendants(self.graph, node):
                    continue  # a py_function on a side path: not what cut this weight off
                data = self.graph.nodes[node]
                return replace(cause, kind=CauseKind.BLOCKED, op_type=data["type"], op=node,
                               layer=data["layer"], detail=CauseDetail.LEFT_TENSORFLOW,
                               location=location or cause.location,
                               message=messages.left_tensorflow(how, CauseKind.BLOCKED))
            if node in connected:
                continue  # the value that left (a logged loss) also reaches the loss in TF
            kind = CauseKind.DETACHED if cause.kind is CauseKind.UNKNOWN else cause.kind
            return replace(cause, kind=kind, detail=CauseDetail.LEFT_TENSORFLOW,
                           location=location or cause.location,
                           message=messages.left_tensorflow(how, kind))
        return None


def _py_function_name(op_type: str) -> str:
    return "tf.numpy_function" if op_type in ("PyFunc", "PyFuncStateless") else "tf.py_function"


def _outside_tape(run, variable, call, cause: Cause) -> Cause | None:
    """``outside-tape`` when the step read ``variable``, but ``call``'s tape (which watches what
    it reads) never watched it: every read happened while that tape was not recording."""
    key = handle_id(variable)
    read = run.reads.get(key)
    if call.watched is None or key in call.watched or read is None:
        return None
    first = next((s for s in read.sightings if not s.tapes), None) or next(iter(read.sightings),
                                                                            None)
    location = (first.step_line or first.location) if first is not None else None
    return replace(cause, kind=CauseKind.DETACHED, detail=CauseDetail.OUTSIDE_TAPE,
                   location=location or cause.location,
                   message=messages.outside_tape(short_text(call.site)))


def untracked_results(run, model) -> list[VariableResult]:
    """A ``not-trained`` (``untracked``) row for every trainable ``tf.Variable`` the step read
    that is not among the variables it judges nor among the model's own (frozen) variables, and
    that the step's own optimizers were not handed a gradient for."""
    known = {handle_id(v) for v in run.variables} | set(run.trained_others)
    known |= {handle_id(v) for v in getattr(model, "variables", ())}
    strangers = [read for key, read in run.reads.items() if key not in known]
    if not strangers:
        return []
    holders = holders_of(model)
    rows = []
    for read in strangers:
        holder = holders.get(handle_id(read.variable))
        wrapper = holder.keras if holder is not None else keras_wrapper(read.variable)
        if wrapper is not None and not wrapper.trainable:
            continue  # a frozen Keras weight held outside the model: nothing to train
        rows.append(_untracked_row(read, holder, wrapper))
    return rows


def _untracked_row(read, holder, wrapper) -> VariableResult:
    variable = read.variable
    name = str(getattr(variable, "name", "variable")).removesuffix(":0")
    if holder is not None:
        path, layer, text = holder.path, holder.layer, holder.attribute
    else:
        path = getattr(wrapper, "path", None) or name
        layer, text = (path.rsplit("/", 1)[0] if "/" in path else None), None
    location = next((s.location for s in read.sightings if s.location is not None), None)
    if location is None and holder is not None:
        location = holder.call_location
    cause = Cause(CauseKind.NOT_TRAINED, layer=layer, detail=CauseDetail.UNTRACKED,
                  location=location, message=messages.untracked(text, layer))
    return VariableResult(path=path, shape=tuple(int(d) for d in variable.shape),
                          layer=layer or "", dtype=str(variable.dtype.name), none=True, zero=True,
                          status=Status.UNCONNECTED, cause=cause)
