"""Status and cause of every trainable variable, read off the labelled op graph.

Pure networkx: the graph's attributes are documented in ``gradcheck.graph``.  The tape's answers
come in as plain booleans; where the graph cannot explain them, the tape wins and the result says so.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import networkx as nx

from gradcheck.report import (
    Cause,
    CauseDetail,
    CauseKind,
    Cut,
    SourceLocation,
    Status,
    ZeroKind,
    ZeroReason,
)

#: Ops that exist to stop gradient: they win the primary-cut choice when no cut dominates.
STOP_OPS = frozenset({"StopGradient", "PreventGradient"})


@dataclass(frozen=True)
class TapeVerdict:
    """What ``tape.gradient`` returned for one variable."""

    none: bool  #: None under UnconnectedGradients.NONE
    zero: bool  #: all zeros under UnconnectedGradients.ZERO (True whenever ``none``)
    finite: bool  #: no NaN/Inf in the gradient


@dataclass(frozen=True)
class LayerFacts:
    """What the Keras side of the step knows about the layer that owns a variable."""

    called: bool | None = None  #: its ``__call__`` ran in the step (None: cannot tell)
    location: SourceLocation | None = None  #: its ``call()``, if user code
    caller_location: SourceLocation | None = None  #: the nearest enclosing user-code ``call()``


def status_of(tape: TapeVerdict) -> Status:
    """The verdict table of DESIGN.md."""
    if tape.none:
        return Status.UNCONNECTED
    if not tape.finite:
        return Status.NONFINITE
    if tape.zero:
        return Status.ZERO
    return Status.CONNECTED


def grad_reachable(graph: nx.DiGraph, start: str) -> set[str]:
    """Ops whose gradient can flow back to ``start``: reachable forward along ``grad`` edges."""
    return _along_grad_edges(graph.succ, start)


def reaches_loss(graph: nx.DiGraph, loss: str) -> set[str]:
    """Every node whose gradient the loss sends back: the loss's ancestors along ``grad`` edges.

    One backward search answers "connected?" for all variables at once, so explaining a model
    costs time linear in its ops, not ops × variables.
    """
    return _along_grad_edges(graph.pred, loss)


def _along_grad_edges(adjacency, start: str) -> set[str]:
    seen = {start}
    stack = [start]
    while stack:
        for neighbour, data in adjacency[stack.pop()].items():
            if data["grad"] and neighbour not in seen:
                seen.add(neighbour)
                stack.append(neighbour)
    return seen


def explain(graph: nx.DiGraph, handle: str | None, loss: str, *, owner: str, tape_none: bool,
            connected: set[str] | None = None,
            layer: LayerFacts | None = None) -> tuple[Cause | None, bool]:
    """The cause for one variable (None if connected) and whether the graph agrees with the tape.

    ``handle`` is the variable's handle node, or None if the step never read it; ``connected``
    is ``reaches_loss(graph, loss)``, computed once per graph by the caller (else here);
    ``layer`` tells whether the owning layer ran and where its ``call()`` is.
    """
    if handle is None or handle not in graph or not graph.succ[handle]:
        cause = unused_cause(owner, layer or LayerFacts())
        return (cause if tape_none else None), tape_none
    cause, agrees = _explain_read(graph, handle, loss, tape_none, connected)
    if cause is not None and cause.kind is not CauseKind.UNKNOWN:
        cause = _add_loss_only(graph, handle, cause) or cause
    return cause, agrees


def _explain_read(graph, handle, loss, tape_none, connected) -> tuple[Cause | None, bool]:
    if connected is None:
        connected = reaches_loss(graph, loss)
    graph_connected = handle in connected
    if not tape_none:
        return None, graph_connected
    if graph_connected:
        return _unknown(), False
    reach = nx.descendants(graph, handle)
    if loss not in reach:
        return _detached(graph, reach), True
    return _blocked(graph, handle, loss, grad_reachable(graph, handle), reach), True


def unused_cause(owner: str, layer: LayerFacts) -> Cause:
    """An unread variable: its layer never ran, or ran without reading it (or we cannot tell)."""
    if layer.called is False:
        return Cause(CauseKind.UNUSED, layer=owner, detail=CauseDetail.LAYER_NOT_CALLED,
                     location=layer.caller_location or layer.location, message=(
                         f"never read in the step: layer '{owner}' is never called on these "
                         f"inputs; {DETAIL_REMEDY[CauseDetail.LAYER_NOT_CALLED]}"))
    if layer.called:
        return Cause(CauseKind.UNUSED, layer=owner, detail=CauseDetail.WEIGHT_NOT_READ,
                     location=layer.location, message=(
                         f"never read in the step: layer '{owner}' runs, but its call() does not "
                         f"use this weight; {DETAIL_REMEDY[CauseDetail.WEIGHT_NOT_READ]}"))
    return Cause(CauseKind.UNUSED, layer=owner, message=(
        f"never read in the step: layer '{owner}' creates it but the step does not use it; "
        "use the weight in call() or stop creating it."))


#: The remedy that fits each detail: how the user fixes it, or says it is intended.
DETAIL_REMEDY = {
    CauseDetail.LAYER_NOT_CALLED: (
        "call the layer in the training step (a sub-model the loss skips, a teacher or an "
        "unused block is never trained), make its weights non-trainable if it is frozen on "
        "purpose, or allow this finding."),
    CauseDetail.WEIGHT_NOT_READ: "use the weight in call(), or stop creating it.",
    CauseDetail.INFERENCE_ONLY: (
        "expected if the weight is meant for inference only (make it non-trainable, or allow "
        "this finding); otherwise use it under training=True too."),
    CauseDetail.OTHER_BRANCH: (
        "expected if that branch is trained by other inputs (allow this finding, or check with "
        "--input values that take it); otherwise make the branch reachable in training."),
    CauseDetail.ADD_LOSS_ONLY: (
        "include model.losses in the loss (e.g. loss + sum(model.losses)), or make the weight "
        "non-trainable if it is meant to stay fixed."),
}


def inference_only_cause(cause: Cause, location: SourceLocation | None) -> Cause:
    """``cause`` (unused or detached in training) refined: a training=False step does use it."""
    what = "never read" if cause.kind is CauseKind.UNUSED else "read, but cut off from the loss"
    where = f" in layer '{cause.layer}'" if cause.layer else ""
    return replace(cause, detail=CauseDetail.INFERENCE_ONLY, location=location or cause.location,
                   message=(f"{what}{where} with training=True; only a training=False step uses it "
                            f"(an inference-only path); {DETAIL_REMEDY[CauseDetail.INFERENCE_ONLY]}"))


def other_branch_cause(cause: Cause, decided_by: str, location: SourceLocation | None) -> Cause:
    """``cause`` refined: the variable is used only on the side of a branch these inputs skip."""
    where = f"layer '{cause.layer}'" if cause.layer else "it"
    return replace(cause, kind=CauseKind.UNUSED, detail=CauseDetail.OTHER_BRANCH,
                   location=location or cause.location, message=(
                       f"never read in the step: {where} is used only on the other side of a "
                       f"branch decided by {decided_by}, which these inputs did not take; "
                       f"{DETAIL_REMEDY[CauseDetail.OTHER_BRANCH]}"))


def _add_loss_only(graph: nx.DiGraph, handle: str, cause: Cause) -> Cause | None:
    """A cut-off variable whose gradient would reach an ``add_loss`` term the judged loss omits."""
    if not graph.graph.get("add_loss"):
        return None
    terms = [n for n in grad_reachable(graph, handle) if graph.nodes[n].get("add_loss")]
    if not terms:
        return None
    layers = sorted({graph.nodes[n]["layer"] for n in terms if graph.nodes[n]["layer"]})
    named = f" of layer {', '.join(repr(layer) for layer in layers)}" if layers else ""
    cut = f" (the path to the judged loss is cut at {cause.op_type} '{cause.op}')" if cause.op else ""
    return replace(cause, detail=CauseDetail.ADD_LOSS_ONLY, message=(
        f"its only path to a loss goes through the add_loss term{named}, which the judged loss "
        f"leaves out{cut}; {DETAIL_REMEDY[CauseDetail.ADD_LOSS_ONLY]}"))


def _unknown() -> Cause:
    return Cause(CauseKind.UNKNOWN, message=(
        "tape.gradient returns None, but the op graph shows a path to the loss (probably through "
        "a function or control-flow op whose body does not use it); the tape's verdict stands — "
        "check how the layer uses this weight inside that op."))


def _detached(graph: nx.DiGraph, reach: set[str]) -> Cause:
    outputs = sorted({graph.nodes[n]["output"] for n in reach if graph.nodes[n].get("output")})
    if outputs:
        names = ", ".join(f"'{o}'" for o in outputs)
        plural = "s" if len(outputs) > 1 else ""
        return Cause(CauseKind.DETACHED, reaches=tuple(outputs), message=(
            f"read, but it only feeds output{plural} {names}, which the loss does not use; give "
            f"that output a loss (or a non-zero loss weight), or drop the head."))
    sinks = sorted(n for n in reach if not graph.succ[n])
    layers = sorted({graph.nodes[n]["layer"] for n in sinks if graph.nodes[n]["layer"]})
    shown = layers or sinks
    where = ", ".join(f"'{s}'" for s in shown[:5]) + (" …" if len(shown) > 5 else "")
    return Cause(CauseKind.DETACHED, reaches=tuple(shown), message=(
        f"read, but its value never reaches the loss (it ends in {where}); use the result in the "
        "model's output, or remove the computation."))


def cuts_of(graph: nx.DiGraph, side: set[str], toward_loss: set[str]) -> list[str]:
    """Ops where gradient from the loss stops on its way back to the variable's side.

    An edge P -> C leaving ``side`` without gradient is cut at C when C refuses a floating input
    (StopGradient, ArgMax, Round, a Cast to int …) and at P when P hands on only integers.
    """
    found = set()
    for producer in side:
        for consumer, data in graph.succ[producer].items():
            if data["grad"] or consumer not in toward_loss:
                continue
            found.add(consumer if data["float"] else producer)
    return sorted(found)


def _blocked(graph: nx.DiGraph, handle: str, loss: str, side: set[str], reach: set[str]) -> Cause:
    toward_loss = (nx.ancestors(graph, loss) | {loss}) & (reach | {handle})
    cut_nodes = cuts_of(graph, side, toward_loss)
    primary = _primary_cut(graph, handle, loss, toward_loss, cut_nodes)
    cuts = tuple(_cut(graph, n) for n in cut_nodes)
    if primary is None:
        return Cause(CauseKind.BLOCKED, cuts=cuts, message=(
            "every path to the loss is cut by an op with no gradient; see the cuts listed."))
    cut = _cut(graph, primary)
    located = [primary] + [n for n in cut_nodes if n != primary]
    location = next((graph.nodes[n]["location"] for n in located if graph.nodes[n].get("location")),
                    None)
    return Cause(CauseKind.BLOCKED, op_type=cut.op_type, op=cut.op, layer=cut.layer, cuts=cuts,
                 message=_blocked_message(cut, cuts), location=location)


def _primary_cut(graph, handle, loss, toward_loss, cut_nodes) -> str | None:
    """The cut every path goes through (a dominator of the loss), else the most telling one."""
    if not cut_nodes:
        return None
    sub = graph.subgraph(toward_loss)
    dominators = set()
    if loss in sub and handle in sub:
        idom = nx.immediate_dominators(sub, handle)
        node = loss
        while node in idom and idom[node] != node:
            node = idom[node]
            dominators.add(node)
    order = {n: i for i, n in enumerate(nx.topological_sort(sub))} if nx.is_directed_acyclic_graph(sub) else {}

    def rank(node):
        data = graph.nodes[node]
        kind = 0 if data["type"] in STOP_OPS else (2 if data.get("meta") else 1)
        return (node not in dominators, kind, order.get(node, 0), node)

    return min(cut_nodes, key=rank)


def _cut(graph: nx.DiGraph, node: str) -> Cut:
    data = graph.nodes[node]
    return Cut(op_type=data["type"], op=node, layer=data["layer"])


def _blocked_message(cut: Cut, cuts: tuple[Cut, ...]) -> str:
    where = f"{cut.op_type} op '{cut.op}'" + (f" in layer '{cut.layer}'" if cut.layer else "")
    others = [c for c in cuts if c.op != cut.op]
    shown = ", ".join(f"{c.op_type} '{c.op}'" for c in others[:3])
    more = f" (also cut at {shown}{' …' if len(others) > 3 else ''})" if others else ""
    return f"every path to the loss is cut at {where}{more}; {remedy(cut.op_type)}"


def remedy(op_type: str) -> str:
    """What to do about a gradient cut by an op of this type."""
    if op_type in STOP_OPS:
        return "remove the stop_gradient, or allow this finding if the freeze is intended."
    if op_type in ("ArgMax", "ArgMin", "TopKV2", "TopK"):
        return ("use a soft relaxation (e.g. softmax weights instead of argmax indices) or a "
                "straight-through estimator.")
    if op_type in ("Round", "Floor", "Ceil", "Rint", "Cast", "Sign"):
        return ("use a straight-through estimator, x + stop_gradient(round(x) - x), or keep the "
                "value floating.")
    return ("replace it with a differentiable op, or use a straight-through estimator, "
            "x + stop_gradient(f(x) - x).")


#: Ops whose gradient to one operand is the other operand times the upstream gradient.
PRODUCT_OPS = frozenset({"Mul", "MatMul", "BatchMatMulV2", "BatchMatMulV3", "BatchMatMul",
                         "Einsum", "Conv2D", "Conv1D", "Conv3D", "DepthwiseConv2dNative"})

#: Ops that hand a variable's value on unchanged in the values that matter here (zero stays zero).
_VALUE_PRESERVING = frozenset({"ReadVariableOp", "Identity", "Cast", "Reshape", "Transpose",
                               "ExpandDims", "Squeeze", "ResourceGather", "GatherV2"})


class ZeroExplainer:
    """Why connected variables' gradients are exactly zero, when the op graph shows it.

    Built once per graph, so explaining many zero variables stays linear in the ops: the loss's
    post-dominator tree (along ``grad`` edges) gives, for any op, the ops every path from it to the
    loss goes through.  On that chain, nearest the variable first: an activation zero on the whole
    batch, a product whose other operand is an all-zero weight or such an activation, a
    subtraction of two values both computed from the variable.  Before that: a variable that only
    feeds outputs whose loss weight is 0.
    """

    def __init__(self, graph: nx.DiGraph, loss: str, *, zero_variables,
                 loss_weights: dict[str, float] | None = None, connected: set[str] | None = None):
        """``zero_variables`` answers ``path in zero_variables`` (is that variable all zeros?);
        ``connected`` is ``reaches_loss(graph, loss)`` if the caller has it."""
        self.graph, self.loss, self.zero_variables = graph, loss, zero_variables
        connected = reaches_loss(graph, loss) if connected is None else connected
        toward = nx.DiGraph()
        toward.add_node(loss)
        toward.add_edges_from((consumer, producer) for producer, consumer, data in graph.edges(data=True)
                              if data["grad"] and producer in connected and consumer in connected)
        self._post_dominator = nx.immediate_dominators(toward, loss)
        self._memo: dict[str, ZeroReason | None] = {}
        weights = loss_weights or {}
        outputs = {data["output"]: node for node, data in graph.nodes(data=True) if data.get("output")}
        muted = [node for name, node in outputs.items() if weights.get(name) == 0]
        weighted = [node for name, node in outputs.items() if weights.get(name) != 0]
        self._feeds_muted = _reach_back(graph, muted) if muted else set()
        self._feeds_weighted = _reach_back(graph, weighted) if muted else set()
        self._muted_names = {node: name for name, node in outputs.items() if node in muted}

    def reason(self, handle: str | None) -> ZeroReason | None:
        """The zero reason of the variable whose handle node is ``handle``, or None."""
        if handle is None or handle not in self.graph:
            return None
        if handle in self._feeds_muted and handle not in self._feeds_weighted:
            return self._muted(handle)
        return self._along_chain(handle)

    def _along_chain(self, start: str) -> ZeroReason | None:
        """The first reason on the post-dominator chain from ``start``; chains of different
        variables share their tails, so each link is checked once per graph."""
        pending = []
        node = start
        while node not in self._memo:
            following = self._post_dominator.get(node, node)
            if following == node:
                self._memo[node] = None
                break
            pending.append((node, following))
            node = following
        reason = self._memo[node]
        for before, after in reversed(pending):
            here = _zero_at(self.graph, after, _between(self.graph, before, after), self.zero_variables)
            reason = here if here is not None else reason
            self._memo[before] = reason
        return self._memo[start]

    def _muted(self, handle: str) -> ZeroReason:
        names = sorted(name for node, name in self._muted_names.items()
                       if node in grad_reachable(self.graph, handle))
        shown = ", ".join(f"'{name}'" for name in names)
        return ZeroReason(ZeroKind.ZERO_LOSS_WEIGHT, message=(
            f"it only feeds output{'s' if len(names) > 1 else ''} {shown}, whose loss weight is 0; "
            "give that output a non-zero loss weight, or allow this finding if the head is "
            "switched off on purpose."))


def _reach_back(graph: nx.DiGraph, targets: list[str]) -> set[str]:
    seen = set(targets)
    for target in targets:
        seen |= _along_grad_edges(graph.pred, target)
    return seen


def _between(graph: nx.DiGraph, start: str, stop: str) -> set[str]:
    """Ops on gradient paths from ``start`` up to (not past) its post-dominator ``stop``."""
    seen = {start}
    stack = [start]
    while stack:
        node = stack.pop()
        if node == stop:
            continue
        for consumer, data in graph.succ[node].items():
            if data["grad"] and consumer not in seen:
                seen.add(consumer)
                stack.append(consumer)
    return seen


def _zero_at(graph: nx.DiGraph, node: str, side: set[str], zero_variables):
    data = graph.nodes[node]
    if data.get("dead"):
        return _dead(graph, node, "every gradient path goes through")
    producers = list(graph.pred[node])
    if data["type"] in PRODUCT_OPS:
        for producer in producers:
            if producer in side:
                continue
            if graph.nodes[producer].get("dead"):
                return _dead(graph, producer, f"every gradient path is multiplied (at "
                             f"{data['type']} '{node}') by the output of")
            partner = _zero_weight_behind(graph, producer, zero_variables)
            if partner is not None:
                return ZeroReason(ZeroKind.ZERO_PARTNER, op=node, message=(
                    f"every gradient path is multiplied (at {data['type']} '{node}') by the "
                    f"weight '{partner}', which is all zeros (e.g. LoRA's B or a zero-initialized "
                    "kernel); expected at initialization — the gradient turns non-zero once that "
                    "weight moves, so allow this finding if the zeros are intended."))
    if data["type"] == "Sub" and len(producers) == 2 and all(p in side for p in producers):
        return ZeroReason(ZeroKind.CANCELLATION, op=node, message=(
            f"both operands of Sub '{node}' are computed from this weight, and their gradients "
            "cancel exactly (a shared weight subtracted from itself); compute the two sides from "
            "different weights or inputs, or drop the difference."))
    return None


def _dead(graph: nx.DiGraph, node: str, lead: str) -> ZeroReason:
    return ZeroReason(ZeroKind.DEAD_ACTIVATION, op=node, message=(
        f"{lead} {graph.nodes[node]['type']} '{node}', which is zero on every element of the "
        "batch (a dead activation); check the initializers and input scale, try other --input "
        "values, or use a leaky activation."))


def _zero_weight_behind(graph: nx.DiGraph, node: str, zero_variables) -> str | None:
    """The all-zero variable whose value ``node`` passes on unchanged, if any."""
    for _ in range(8):
        data = graph.nodes[node]
        if data.get("variable") is not None:
            return data["variable"] if data["variable"] in zero_variables else None
        if data["type"] not in _VALUE_PRESERVING and data["type"] != "VariableHandle":
            return None
        producers = list(graph.pred[node])
        if len(producers) != 1:
            return None
        node = producers[0]
    return None
