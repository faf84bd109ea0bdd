"""``--graph DIR``: the traced op graph as files a person or a tool can open.

For each source: ``<name>.graphml`` (every op, with gradcheck's findings as node attributes, for
networkx, Gephi, yEd …), ``<name>.dot`` (the same graph for Graphviz), and, when some variable is
unconnected, ``<name>.unconnected.dot`` plus ``<name>.unconnected.svg`` if Graphviz's ``dot`` is on
PATH: only the ops between the unconnected variables and the loss (or the outputs they reach),
cuts in red, the loss in green, variables as boxes — the picture one would draw by hand.

Pure networkx and text: no pydot or pygraphviz.  Graph attributes are those of ``plans.opgraph``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import networkx as nx

from gradcheck.problems import ErrorKind, SourceProblem
from gradcheck.results import Status, VariableResult

#: A run of at least this many plain ops (one input, one output on the path) is drawn as one node.
CHAIN_MIN = 3
#: Past this many nodes the picture groups the ops of each layer into one node; past it again, no
#: SVG is drawn (the .dot stays): Graphviz's layout time grows steeply (about 40 s at 1500 nodes).
PICTURE_MAX_NODES = 400
#: Graphviz gets this long to draw the picture; past it the picture is skipped (the .dot stays).
DOT_TIMEOUT_S = 30

_NODE_STRINGS = ("type", "layer", "variable", "output", "status", "cause", "blocks")
_NODE_FLAGS = ("meta", "loss", "cut", "primary_cut", "unconnected")

_RED, _GREEN = "#c62828", "#2e7d32"


@dataclass(frozen=True)
class _Style:
    """How one kind of node looks in DOT."""

    shape: str = "ellipse"
    color: str = "#607d8b"
    fill: str = "#ffffff"
    penwidth: float = 1.0


_STYLES = {
    "cut": _Style(shape="octagon", color=_RED, fill="#ffcdd2", penwidth=2.5),
    "loss": _Style(shape="doubleoctagon", color=_GREEN, fill="#c8e6c9", penwidth=2.5),
    "unconnected": _Style(shape="box", color="#e65100", fill="#ffe0b2", penwidth=2.0),
    "variable": _Style(shape="box", color="#1565c0", fill="#bbdefb"),
    "output": _Style(shape="house", color="#6a1b9a", fill="#e1bee7", penwidth=1.5),
    "folded": _Style(shape="note", color="#90a4ae", fill="#eceff1"),
    "meta": _Style(color="#b0bec5", fill="#fafafa"),
    "op": _Style(),
}


def write_graph(graph: nx.DiGraph, results: Sequence[VariableResult], loss_op: str,
                out_dir: Path, source: str) -> list[Path]:
    """Write the op graph of one source into ``out_dir`` (created if missing); return the files."""
    marked = mark_findings(graph, results, loss_op, source)
    name = safe_name(source)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        written = [out_dir / f"{name}.graphml", out_dir / f"{name}.dot"]
        nx.write_graphml(marked, written[0])
        written[1].write_text(to_dot(marked, title=f"{source}: op graph"), encoding="utf-8")
        written += _write_picture(marked, out_dir, name, source)
    except OSError as exc:
        raise SourceProblem(ErrorKind.GRAPH_DIR, f"cannot write the op graph to {out_dir}: "
                            f"{exc.strerror or exc}; choose another --graph directory.") from exc
    return written


def safe_name(source: str) -> str:
    """A file name for a source: ``models/a.keras`` -> ``models_a``, ``f.py:build`` -> ``f_build``."""
    text = source.replace("\\", "/")
    stem = PurePosixPath(text)
    if stem.suffix in (".keras", ".h5", ".hdf5"):
        text = str(stem.with_suffix(""))
    text = re.sub(r"\.py:", ":", text)
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return text or "model"


def mark_findings(graph: nx.DiGraph, results: Sequence[VariableResult], loss_op: str,
                  source: str = "") -> nx.DiGraph:
    """A copy of ``graph`` with the findings as node attributes of simple types (GraphML-safe).

    Variable handles get ``status``, ``cause`` and ``unconnected``; cut ops get ``cut``,
    ``primary_cut`` and ``blocks`` (the variables they cut off); every ``None`` becomes ``""``.
    """
    marked = nx.DiGraph(source=source, loss_op=loss_op)
    for node, data in graph.nodes(data=True):
        marked.add_node(node, **_blank_attrs(**data))
    for producer, consumer, data in graph.edges(data=True):
        marked.add_edge(producer, consumer, float=bool(data.get("float")),
                        grad=bool(data.get("grad")))
    if loss_op in marked:
        marked.nodes[loss_op]["loss"] = True
    handles = {data["variable"]: node for node, data in marked.nodes(data=True) if data["variable"]}
    for result in results:
        _mark_result(marked, handles.get(result.path), result)
    return marked


def _mark_result(marked: nx.DiGraph, handle: str | None, result: VariableResult) -> None:
    if handle is None:  # never captured by the step: an op-less node, so the variable still shows
        handle = f"{result.path} (not read in the step)"
        marked.add_node(handle, **_blank_attrs(type="Variable", layer=result.layer,
                                               variable=result.path))
    node = marked.nodes[handle]
    node["status"] = result.status.value
    node["unconnected"] = result.status is Status.UNCONNECTED
    node["cause"] = result.cause.kind.value if result.cause else ""
    if result.cause is None:
        return
    for cut in result.cause.cuts:
        if cut.op in marked:
            node = marked.nodes[cut.op]
            node["cut"] = True
            node["blocks"] = ",".join(filter(None, [node["blocks"], result.path]))
    if result.cause.op in marked:
        marked.nodes[result.cause.op]["cut"] = True
        marked.nodes[result.cause.op]["primary_cut"] = True


def _blank_attrs(**data) -> dict:
    """Every exported attribute, with ``""``/False where ``data`` has none (GraphML wants one type
    per key and no None)."""
    attrs = {key: "" if data.get(key) is None else str(data[key]) for key in _NODE_STRINGS}
    attrs.update({key: bool(data.get(key)) for key in _NODE_FLAGS})
    return attrs


# --- the picture of the unconnected part -----------------------------------------------------


def unconnected_subgraph(marked: nx.DiGraph, max_nodes: int = PICTURE_MAX_NODES) -> nx.DiGraph:
    """The ops on paths from unconnected variables' handles to the loss, or to the outputs (or
    final ops) they reach when they do not reach the loss; long plain chains collapsed, and ops
    grouped by layer when that is still more than ``max_nodes``.  The loss is always included,
    so a detached head shows up next to the loss it never reaches."""
    loss = marked.graph.get("loss_op")
    toward_loss = nx.ancestors(marked, loss) | {loss} if loss in marked else set()
    keep = {loss} if loss in marked else set()
    for handle, data in marked.nodes(data=True):
        if data["unconnected"]:
            keep |= _between(marked, handle, loss, toward_loss)
    sub = _ordered_subgraph(marked, keep)
    picture = collapse_chains(sub.copy())
    if picture.number_of_nodes() > max_nodes:
        picture = collapse_chains(group_by_layer(sub))
    return picture


def _ordered_subgraph(graph: nx.DiGraph, keep: set[str]) -> nx.DiGraph:
    """The subgraph on ``keep``, nodes and edges in ``graph``'s order.

    ``graph.subgraph(keep)`` iterates over the set ``keep``, whose order changes with
    PYTHONHASHSEED; the files written from it must be byte-identical run to run.
    """
    sub = nx.DiGraph(**graph.graph)
    sub.add_nodes_from((node, data) for node, data in graph.nodes(data=True) if node in keep)
    sub.add_edges_from((a, b, data) for a, b, data in graph.edges(data=True)
                       if a in keep and b in keep)
    return sub


def _between(marked: nx.DiGraph, handle: str, loss: str | None, toward_loss: set[str]) -> set[str]:
    reach = nx.descendants(marked, handle) | {handle}
    if loss in reach:
        return reach & toward_loss
    targets = {n for n in reach if marked.nodes[n]["output"]}
    targets = targets or {n for n in reach if not marked.succ[n]}
    toward = set(targets)
    for target in targets:
        toward |= nx.ancestors(marked, target)
    return reach & toward


def _landmark(data: dict) -> bool:
    """Nodes the picture never folds away: variables, cuts, outputs and the loss."""
    return bool(data.get("variable") or data.get("cut") or data.get("loss") or data.get("output"))


def group_by_layer(sub: nx.DiGraph) -> nx.DiGraph:
    """One node per layer (ops outside layers: per name scope); landmarks stay nodes of their
    own.  An edge between groups carries gradient if any of its edges do."""
    def group(node: str) -> str:
        data = sub.nodes[node]
        if _landmark(data):
            return node
        return f"layer {data['layer']}" if data.get("layer") else node.rsplit("/", 1)[0] + "/…"

    groups = {node: group(node) for node in sub}
    members: dict[str, list[str]] = {}
    for node, key in groups.items():
        members.setdefault(key, []).append(node)
    grouped = nx.DiGraph(**sub.graph)
    for key, nodes in members.items():
        if nodes == [key]:
            grouped.add_node(key, **sub.nodes[key])
        else:
            grouped.add_node(key, folded=f"{len(nodes)} ops", **_blank_attrs(
                type=key, layer=sub.nodes[nodes[0]].get("layer")))
    for a, b, data in sub.edges(data=True):
        ga, gb = groups[a], groups[b]
        if ga == gb:
            continue
        if grouped.has_edge(ga, gb):
            edge = grouped.edges[ga, gb]
            edge["grad"], edge["float"] = edge["grad"] or data["grad"], edge["float"] or data["float"]
        else:
            grouped.add_edge(ga, gb, grad=data["grad"], float=data["float"])
    return grouped


def collapse_chains(sub: nx.DiGraph, min_length: int = CHAIN_MIN) -> nx.DiGraph:
    """Replace each run of ``min_length`` or more plain ops (no landmark; one predecessor and one
    successor) by a single node that names its ends and lists the folded op types."""
    def plain(node) -> bool:
        return (not _landmark(sub.nodes[node]) and sub.in_degree(node) == 1
                and sub.out_degree(node) == 1)

    seen: set[str] = set()
    chains = []
    for node in list(sub.nodes):
        if node in seen or not plain(node):
            continue
        chain = [node]
        while plain(prev := next(iter(sub.pred[chain[0]]))) and prev not in chain:
            chain.insert(0, prev)
        while plain(succ := next(iter(sub.succ[chain[-1]]))) and succ not in chain:
            chain.append(succ)
        seen.update(chain)
        if len(chain) >= min_length:
            chains.append(chain)
    for chain in chains:
        _collapse(sub, chain)
    return sub


def _collapse(sub: nx.DiGraph, chain: list[str]) -> None:
    first, last = chain[0], chain[-1]
    before, after = next(iter(sub.pred[first])), next(iter(sub.succ[last]))
    edges = [sub.edges[a, b] for a, b in zip([before] + chain, chain + [after])]
    name = f"{first} … {last}"
    types = " → ".join(sub.nodes[n]["type"] for n in chain)
    sub.add_node(name, folded=types, **_blank_attrs(type=f"{len(chain)} ops",
                                                   layer=sub.nodes[first]["layer"]))
    sub.remove_nodes_from(chain)
    sub.add_edge(before, name, float=edges[0]["float"], grad=all(e["grad"] for e in edges[:-1]))
    sub.add_edge(name, after, float=edges[-1]["float"], grad=edges[-1]["grad"])


def _write_picture(marked: nx.DiGraph, out_dir: Path, name: str, source: str) -> list[Path]:
    dot_file, svg_file = out_dir / f"{name}.unconnected.dot", out_dir / f"{name}.unconnected.svg"
    if not any(data["unconnected"] for _, data in marked.nodes(data=True)):
        for stale in (dot_file, svg_file):  # a picture from an earlier run would mislead
            stale.unlink(missing_ok=True)
        return []
    title = f"{source}: why these variables get no gradient"
    picture = unconnected_subgraph(marked)
    dot_file.write_text(to_dot(picture, title=title), encoding="utf-8")
    svg_file.unlink(missing_ok=True)
    if picture.number_of_nodes() > PICTURE_MAX_NODES:
        return [dot_file]  # too large to lay out in reasonable time
    return [dot_file] + ([svg_file] if render_svg(dot_file, svg_file) else [])


def render_svg(dot_file: Path, svg_file: Path) -> bool:
    """Draw ``dot_file`` with Graphviz if it is installed; False when it is not, or fails."""
    dot = shutil.which("dot")
    if dot is None:
        return False
    try:
        subprocess.run([dot, "-Tsvg", str(dot_file), "-o", str(svg_file)], check=True,
                       capture_output=True, timeout=DOT_TIMEOUT_S)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
        svg_file.unlink(missing_ok=True)
        return False
    return svg_file.is_file()


# --- DOT ---------------------------------------------------------------------------------------


def quote(text: str) -> str:
    """A DOT double-quoted string: backslashes and quotes escaped, newlines as ``\\n``."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\r", "").replace("\n", "\\n") + '"'


def to_dot(marked: nx.DiGraph, *, title: str) -> str:
    """The DOT text of a marked graph: node kind by shape and colour, edges without gradient
    dashed (red where they meet a cut), integer edges dotted."""
    lines = [f"digraph {quote(title)} {{",
             f"  graph [label={quote(title)}, labelloc=t, fontname=Helvetica];",
             '  node [fontname=Helvetica, fontsize=10, style=filled];',
             '  edge [color="#78909c"];']
    lines += [f"  {quote(node)} [{_attrs(_node_attrs(node, data))}];"
              for node, data in marked.nodes(data=True)]
    lines += [f"  {quote(a)} -> {quote(b)} [{_attrs(_edge_attrs(marked, a, b, data))}];"
              for a, b, data in marked.edges(data=True)]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _attrs(attrs: dict) -> str:
    return ", ".join(f"{key}={quote(str(value))}" for key, value in attrs.items())


def _node_attrs(node: str, data: dict) -> dict:
    kind = _kind(data)
    style = _STYLES[kind]
    attrs = {"label": _label(node, data), "shape": style.shape, "color": style.color,
             "fillcolor": style.fill, "penwidth": style.penwidth,
             "tooltip": _tooltip(node, data), "class": kind}
    if kind == "cut":
        attrs["fontcolor"] = _RED
    if data.get("primary_cut"):
        attrs["penwidth"] = 3.5
    return attrs


def _kind(data: dict) -> str:
    if data.get("loss"):
        return "loss"
    if data.get("cut"):
        return "cut"
    if data.get("variable"):
        return "unconnected" if data.get("unconnected") else "variable"
    if data.get("output"):
        return "output"
    if data.get("folded"):
        return "folded"
    return "meta" if data.get("meta") else "op"


def _label(node: str, data: dict) -> str:
    if data.get("variable"):
        status = data.get("status") or "variable"
        cause = f" ({data['cause']})" if data.get("cause") else ""
        return f"{data['variable']}\n{status}{cause}"
    if data.get("folded"):
        return f"{data['type']}\n{data['folded']}"
    lines = [data.get("type", ""), node if data.get("cut") else _short(node)]
    if data.get("cut"):
        lines[0] = f"CUT: {lines[0]}"
    if data.get("loss"):
        lines[0] = f"LOSS: {lines[0]}"
    if data.get("output"):
        lines.append(f"output '{data['output']}'")
    return "\n".join(lines)


def _short(node: str) -> str:
    """The op name without the model's outer scopes (the full name is the tooltip)."""
    return "/".join(node.split("/")[-2:])


def _tooltip(node: str, data: dict) -> str:
    parts = [node, f"type: {data.get('type', '')}"]
    parts += [f"{key}: {data[key]}" for key in ("layer", "blocks") if data.get(key)]
    return "\n".join(parts)


def _edge_attrs(marked: nx.DiGraph, a: str, b: str, data: dict) -> dict:
    if data.get("grad"):
        return {"style": "solid"}
    if not data.get("float"):
        return {"style": "dotted", "color": "#b0bec5"}
    into_cut = marked.nodes[b].get("cut") or marked.nodes[a].get("cut")
    return {"style": "dashed", "color": _RED if into_cut else "#78909c"}

