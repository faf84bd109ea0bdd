"""Status and cause of one trainable variable, read off the labelled op graph.

Pure networkx: the graph's attributes are documented in ``plans.opgraph``.  The tape's answers
come in as plain booleans; where the graph cannot explain them, the tape wins and the result says
so.  The words come from ``diagnose.messages``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import networkx as nx

from gradcheck.diagnose import messages
from gradcheck.plans.base import TapeVerdict
from gradcheck.results import Cause, CauseDetail, CauseKind, Cut, SourceLocation, Status


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
    return along_grad_edges(graph.succ, start)


def reaches_loss(graph: nx.DiGraph, loss: str) -> set[str]:
    """Every node whose gradient the loss sends back: the loss's ancestors along ``grad`` edges.

    One backward search answers "connected?" for all variables at once, so explaining a model
    costs time linear in its ops, not ops × variables.
    """
    return along_grad_edges(graph.pred, loss)


def along_grad_edges(adjacency, start: str) -> set[str]:
    """``start`` and every node reached from it through ``adjacency`` along ``grad`` edges."""
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
        return Cause(CauseKind.UNKNOWN, message=messages.UNKNOWN_CAUSE), False
    reach = nx.descendants(graph, handle)
    if loss not in reach:
        return _detached(graph, reach), True
    return _blocked(graph, handle, loss, grad_reachable(graph, handle), reach), True


def unused_cause(owner: str, layer: LayerFacts) -> Cause:
    """An unread variable: its layer never ran, or ran without reading it (or we cannot tell)."""
    if layer.called is False:
        detail, location = CauseDetail.LAYER_NOT_CALLED, layer.caller_location or layer.location
    elif layer.called:
        detail, location = CauseDetail.WEIGHT_NOT_READ, layer.location
    else:
        detail, location = None, None
    return Cause(CauseKind.UNUSED, layer=owner, detail=detail, location=location,
                 message=messages.unused(owner, layer.called))


def inference_only_cause(cause: Cause, location: SourceLocation | None) -> Cause:
    """``cause`` (unused or detached in training) refined: a training=False step does use it."""
    return replace(cause, detail=CauseDetail.INFERENCE_ONLY, location=location or cause.location,
                   message=messages.inference_only(cause.kind, cause.layer))


def other_branch_cause(cause: Cause, decided_by: str, location: SourceLocation | None) -> Cause:
    """``cause`` refined: the variable is used only on the side of a branch these inputs skip."""
    return replace(cause, kind=CauseKind.UNUSED, detail=CauseDetail.OTHER_BRANCH,
                   location=location or cause.location,
                   message=messages.other_branch(cause.layer, decided_by))


def _add_loss_only(graph: nx.DiGraph, handle: str, cause: Cause) -> Cause | None:
    """A cut-off variable whose gradient would reach an ``add_loss`` term the judged loss omits."""
    if not graph.graph.get("add_loss"):
        return None
    terms = [n for n in grad_reachable(graph, handle) if graph.nodes[n].get("add_loss")]
    if not terms:
        return None
    layers = sorted({graph.nodes[n]["layer"] for n in terms if graph.nodes[n]["layer"]})
    cut = Cut(cause.op_type, cause.op, cause.layer) if cause.op else None
    return replace(cause, detail=CauseDetail.ADD_LOSS_ONLY,
                   message=messages.add_loss_only(layers, cut))


def _detached(graph: nx.DiGraph, reach: set[str]) -> Cause:
    outputs = sorted({graph.nodes[n]["output"] for n in reach if graph.nodes[n].get("output")})
    if outputs:
        return Cause(CauseKind.DETACHED, reaches=tuple(outputs),
                     message=messages.detached_to_outputs(outputs))
    sinks = sorted(n for n in reach if not graph.succ[n])
    layers = sorted({graph.nodes[n]["layer"] for n in sinks if graph.nodes[n]["layer"]})
    shown = layers or sinks
    return Cause(CauseKind.DETACHED, reaches=tuple(shown), message=messages.detached_to_ops(shown))


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
        return Cause(CauseKind.BLOCKED, cuts=cuts, message=messages.BLOCKED_NO_PRIMARY)
    cut = _cut(graph, primary)
    located = [primary] + [n for n in cut_nodes if n != primary]
    location = next((graph.nodes[n]["location"] for n in located if graph.nodes[n].get("location")),
                    None)
    return Cause(CauseKind.BLOCKED, op_type=cut.op_type, op=cut.op, layer=cut.layer, cuts=cuts,
                 message=messages.blocked(cut, cuts), location=location)


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
    order = ({n: i for i, n in enumerate(nx.topological_sort(sub))}
             if nx.is_directed_acyclic_graph(sub) else {})

    def rank(node):
        data = graph.nodes[node]
        kind = 0 if data["type"] in messages.STOP_OPS else (2 if data.get("meta") else 1)
        return (node not in dominators, kind, order.get(node, 0), node)

    return min(cut_nodes, key=rank)


def _cut(graph: nx.DiGraph, node: str) -> Cut:
    data = graph.nodes[node]
    return Cut(op_type=data["type"], op=node, layer=data["layer"])
