"""Why a connected variable's gradient is exactly zero, when the op graph shows it.

Pure networkx, like ``diagnose.causes``; the words come from ``diagnose.messages``.
"""

from __future__ import annotations

import networkx as nx

from gradcheck.diagnose import messages
from gradcheck.diagnose.causes import along_grad_edges, grad_reachable, reaches_loss
from gradcheck.results import ZeroKind, ZeroReason

#: Ops whose gradient to one operand is the other operand times the upstream gradient.
PRODUCT_OPS = frozenset({"Mul", "MatMul", "BatchMatMulV2", "BatchMatMulV3", "BatchMatMul",
                         "Einsum", "Conv2D", "Conv1D", "Conv3D", "DepthwiseConv2dNative"})


#: Ops that hand a variable's value on unchanged in the values that matter here (zero stays zero).
_VALUE_PRESERVING = frozenset({"ReadVariableOp", "Identity", "Cast", "Reshape", "Transpose",
                               "ExpandDims", "Squeeze", "ResourceGather", "GatherV2", "Split",
                               "SplitV", "StridedSlice", "Slice", "Unpack", "BroadcastTo", "Tile"})


#: Elementwise ops that map zero to zero: a zero input gives a zero output.
_ZERO_TO_ZERO = frozenset({"Relu", "Relu6", "Elu", "Selu", "LeakyRelu", "Tanh", "Neg", "Sin",
                           "Sinh", "Atan", "Asinh", "Square", "Sqrt", "Abs", "Sign"})


#: Reductions, zero when what they reduce is (a layer norm's mean of all-zero query embeddings).
_REDUCTIONS = frozenset({"Mean", "Sum", "Max", "Min"})


#: Ops that are zero when every operand is (a sum of zero terms, a zero plus a zero bias).
_SUMS = frozenset({"Add", "AddV2", "AddN", "BiasAdd", "Sub", "ConcatV2", "Pack",
                   "SquaredDifference"})


#: Ops that add a shift to their first operand.
_SHIFTS = frozenset({"Add", "AddV2", "BiasAdd"})


#: Ops that subtract the mean of what they are handed (a batch or layer normalization).
_CENTERING = frozenset({"Mean", "FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"})


class ZeroExplainer:
    """Why connected variables' gradients are exactly zero, when the op graph shows it.

    Built once per graph, so explaining many zero variables stays linear in the ops: the loss's
    post-dominator tree (along ``grad`` edges) gives, for any op, the ops every path from it to the
    loss goes through.  On that chain, nearest the variable first: an activation zero on the whole
    batch, a product whose other operand is an all-zero weight or such an activation, a
    subtraction of two values both computed from the variable, or between two ops of the chain,
    products by such zeros that together cut every path.  Before that: a variable that only
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
        self._behind: dict = {}  #: ``_zero_weight_behind``'s answers
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
        return _shift_removed(self.graph, handle) or self._along_chain(handle)

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
            side = _between(self.graph, before, after)
            here = _zero_at(self.graph, after, side, self.zero_variables, self._behind) \
                or _zeroed_on_every_path(self.graph, before, after, side, self.zero_variables,
                                         self._behind)
            reason = here if here is not None else reason
            self._memo[before] = reason
        return self._memo[start]

    def _muted(self, handle: str) -> ZeroReason:
        names = sorted(name for node, name in self._muted_names.items()
                       if node in grad_reachable(self.graph, handle))
        return ZeroReason(ZeroKind.ZERO_LOSS_WEIGHT, message=messages.zero_loss_weight(names))


def _reach_back(graph: nx.DiGraph, targets: list[str]) -> set[str]:
    seen = set(targets)
    for target in targets:
        seen |= along_grad_edges(graph.pred, target)
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


def _zero_at(graph: nx.DiGraph, node: str, side: set[str], zero_variables, memo: dict):
    data = graph.nodes[node]
    if data.get("dead"):
        return _dead(graph, node, "every gradient path goes through")
    if data.get("one_element"):
        return ZeroReason(ZeroKind.ONE_ELEMENT_SOFTMAX, op=node,
                          message=messages.one_element_softmax(data["type"], node))
    producers = list(graph.pred[node])
    if data["type"] in PRODUCT_OPS:
        for producer in producers:
            if producer in side:
                continue
            if graph.nodes[producer].get("dead"):
                return _dead(graph, producer, f"every gradient path is multiplied (at "
                             f"{data['type']} '{node}') by the output of")
            partner = _zero_weight_behind(graph, producer, zero_variables, memo=memo)
            if partner is not None:
                return ZeroReason(ZeroKind.ZERO_PARTNER, op=node,
                                  message=messages.zero_partner(data["type"], node, partner))
    if data["type"] == "Sub" and len(producers) == 2 and all(p in side for p in producers):
        return ZeroReason(ZeroKind.CANCELLATION, op=node, message=messages.cancellation(node))
    return None


def _zeroed_on_every_path(graph: nx.DiGraph, start: str, stop: str, side: set[str],
                          zero_variables, memo: dict) -> ZeroReason | None:
    """Products between ``start`` and its post-dominator ``stop`` that multiply by zeros and
    together cut every path (a layer norm's scale meets its all-zero input twice: once as ``x``,
    once as ``-mean(x)``), though no single one of them is on every path."""
    cuts = {}
    for node in sorted(side - {start, stop}):
        if graph.nodes[node]["type"] not in PRODUCT_OPS:
            continue
        for producer in graph.pred[node]:
            if producer not in side and graph.edges[producer, node].get("float"):
                partner = _zero_weight_behind(graph, producer, zero_variables, memo=memo)
                if partner is not None:
                    cuts[node] = partner
                    break
    if not cuts:
        return None
    stack, seen = [start], {start}
    while stack:
        for consumer, data in graph.succ[stack.pop()].items():
            if data["grad"] and consumer in side and consumer not in seen | cuts.keys():
                if consumer == stop:
                    return None
                seen.add(consumer)
                stack.append(consumer)
    node = next(iter(cuts))
    return ZeroReason(ZeroKind.ZERO_PARTNER, op=node,
                      message=messages.zero_partner(graph.nodes[node]["type"], node, cuts[node]))


def _dead(graph: nx.DiGraph, node: str, lead: str) -> ZeroReason:
    return ZeroReason(ZeroKind.DEAD_ACTIVATION, op=node,
                      message=messages.dead_activation(lead, graph.nodes[node]["type"], node))


def _zero_weight_behind(graph: nx.DiGraph, node: str, zero_variables, depth: int = 32,
                        memo: dict | None = None) -> str | None:
    """The all-zero variable that makes ``node``'s value all zeros, if any: passed on unchanged,
    multiplied in (a zero-initialized kernel), or the only term of a sum (a zero kernel plus a
    zero bias: a zero-initialized output layer), through ops that keep zeros zero."""
    memo = {} if memo is None else memo  # one per explainer: questions share their answers
    key = (node, depth)
    if key not in memo:
        memo[key] = _zero_behind(graph, node, zero_variables, depth, memo)
    return memo[key]


def _zero_behind(graph: nx.DiGraph, node: str, zero_variables, depth: int, memo: dict) -> str | None:
    data = graph.nodes[node]
    if data.get("variable") is not None:
        return data["variable"] if data["variable"] in zero_variables else None
    kind = data["type"]
    producers = [p for p in graph.pred[node] if graph.edges[p, node].get("float")]
    if depth == 0 or not producers:
        return None
    if kind in _VALUE_PRESERVING or kind in _ZERO_TO_ZERO or kind in _REDUCTIONS \
            or kind == "VariableHandle":
        return _zero_weight_behind(graph, producers[0], zero_variables, depth - 1, memo) \
            if len(producers) == 1 or kind in ("Split", "SplitV", "StridedSlice", "Slice") else None
    if kind in PRODUCT_OPS:
        for producer in producers:
            found = _zero_weight_behind(graph, producer, zero_variables, depth - 1, memo)
            if found is not None:
                return found
        return None
    if kind in _SUMS:
        found = [_zero_weight_behind(graph, p, zero_variables, depth - 1, memo) for p in producers]
        return found[0] if all(found) else None
    return None


def _shift_removed(graph: nx.DiGraph, handle: str) -> ZeroReason | None:
    """A variable added as a shift (a bias) whose sum the normalization right after centers
    again (BatchNormalization subtracts the batch mean, so a per-feature shift is lost)."""
    node = _through_preserving(graph, handle)
    shifts = [c for c in graph.succ[node] if graph.nodes[c]["type"] in _SHIFTS] \
        if node is not None else []
    for shift in shifts:
        frontier, seen = [shift], {shift}
        for _ in range(4):  # the normalization is a few value-preserving ops away at most
            following = []
            for current in frontier:
                for consumer in graph.succ[current]:
                    kind = graph.nodes[consumer]["type"]
                    if kind in _CENTERING:
                        return ZeroReason(ZeroKind.SHIFT_REMOVED, op=consumer,
                                          message=messages.shift_removed(shift, kind, consumer))
                    if consumer not in seen and kind in _VALUE_PRESERVING:
                        seen.add(consumer)
                        following.append(consumer)
            frontier = following
    return None


def _through_preserving(graph: nx.DiGraph, node: str) -> str | None:
    """The last node of the value-preserving chain a variable's handle starts (its read)."""
    for _ in range(6):
        consumers = [c for c in graph.succ[node] if graph.nodes[c]["type"] in _VALUE_PRESERVING]
        if len(consumers) != 1 or len(graph.succ[node]) != 1:
            return node
        node = consumers[0]
    return node
