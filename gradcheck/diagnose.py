"""Status and cause of every trainable variable, read off the labelled op graph.

Pure networkx: the graph's attributes are documented in ``gradcheck.graph``.  The tape's answers
come in as plain booleans; where the graph cannot explain them, the tape wins and the result says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from gradcheck.report import Cause, CauseKind, Cut, Status

#: Ops that exist to stop gradient: they win the primary-cut choice when no cut dominates.
STOP_OPS = frozenset({"StopGradient", "PreventGradient"})


@dataclass(frozen=True)
class TapeVerdict:
    """What ``tape.gradient`` returned for one variable."""

    none: bool  #: None under UnconnectedGradients.NONE
    zero: bool  #: all zeros under UnconnectedGradients.ZERO (True whenever ``none``)
    finite: bool  #: no NaN/Inf in the gradient


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
            connected: set[str] | None = None) -> tuple[Cause | None, bool]:
    """The cause for one variable (None if connected) and whether the graph agrees with the tape.

    ``handle`` is the variable's handle node, or None if the step never read it; ``connected``
    is ``reaches_loss(graph, loss)``, computed once per graph by the caller (else here).
    """
    if handle is None or handle not in graph or not graph.succ[handle]:
        cause = _unused(owner)
        return (cause if tape_none else None), tape_none
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


def _unused(owner: str) -> Cause:
    return Cause(CauseKind.UNUSED, layer=owner, message=(
        f"never read in the step: layer '{owner}' creates it but its call() does not use it; "
        "use the weight in call() or stop creating it."))


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
    return Cause(CauseKind.BLOCKED, op_type=cut.op_type, op=cut.op, layer=cut.layer, cuts=cuts,
                 message=_blocked_message(cut, cuts))


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
