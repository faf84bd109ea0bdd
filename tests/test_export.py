"""``--graph DIR``: GraphML, DOT and the SVG of the unconnected part.

Hand-built graphs (no TensorFlow) pin the marking, the subgraph and the DOT text; the sample models
check the files end to end.  Graphviz is optional: SVG checks skip cleanly without ``dot``.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import networkx as nx
import pytest

from gradcheck import export
from gradcheck.problems import SourceProblem
from gradcheck.report import Cause, CauseKind, Cut, Status, VariableResult

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz 'dot' is not on PATH")


# --- hand-built graphs ---------------------------------------------------------------------------


def _op(graph: nx.DiGraph, name: str, op_type: str, **attrs) -> None:
    graph.add_node(name, type=op_type, layer=attrs.pop("layer", None), meta=False, **attrs)


def blocked_graph() -> nx.DiGraph:
    """enc/kernel -> Read -> MatMul -> Relu -> StopGradient -> head -> Sub -> Square -> Mean -> loss.

    The head's own kernel is connected; one op name carries a quote and a backslash."""
    graph = nx.DiGraph()
    _op(graph, "enc/kernel/resource", "Placeholder", variable="enc/kernel")
    _op(graph, "head/kernel/resource", "Placeholder", variable="head/kernel")
    _op(graph, "x", "Placeholder")
    _op(graph, "enc/Read", "ReadVariableOp", layer="enc")
    _op(graph, "enc/MatMul", "MatMul", layer="enc")
    _op(graph, 'enc/Relu"odd\\name', "Relu", layer="enc")
    _op(graph, "StopGradient", "StopGradient")
    _op(graph, "head/Read", "ReadVariableOp", layer="head")
    _op(graph, "head/MatMul", "MatMul", layer="head", output="head")
    for name, op_type in [("loss/Sub", "Sub"), ("loss/Square", "Square"), ("loss/Mean", "Mean"),
                          ("loss/value", "Identity")]:
        _op(graph, name, op_type)
    chain = ["enc/kernel/resource", "enc/Read", "enc/MatMul", 'enc/Relu"odd\\name', "StopGradient",
             "head/MatMul", "loss/Sub", "loss/Square", "loss/Mean", "loss/value"]
    for producer, consumer in itertools.pairwise(chain):
        graph.add_edge(producer, consumer, float=True, grad=consumer != "StopGradient")
    graph.add_edge("x", "enc/MatMul", float=True, grad=True)
    graph.add_edge("head/kernel/resource", "head/Read", float=True, grad=True)
    graph.add_edge("head/Read", "head/MatMul", float=True, grad=True)
    graph.nodes["loss/value"]["loss"] = True
    return graph


def _result(path: str, status: Status, cause: Cause | None = None) -> VariableResult:
    return VariableResult(path=path, shape=(2, 2), layer=path.split("/")[0], dtype="float32",
                          none=status is Status.UNCONNECTED, zero=status is Status.UNCONNECTED,
                          status=status, cause=cause)


def blocked_results() -> list[VariableResult]:
    cut = Cut("StopGradient", "StopGradient", None)
    cause = Cause(CauseKind.BLOCKED, "cut at StopGradient", op_type="StopGradient",
                  op="StopGradient", cuts=(cut,))
    return [_result("enc/kernel", Status.UNCONNECTED, cause),
            _result("head/kernel", Status.CONNECTED),
            _result("enc/gate", Status.UNCONNECTED,
                    Cause(CauseKind.UNUSED, "never read", layer="enc"))]


def test_marked_graph_has_findings_as_simple_attributes_and_round_trips_graphml(tmp_path):
    marked = export.mark_findings(blocked_graph(), blocked_results(), "loss/value", "m.keras")
    path = tmp_path / "m.graphml"
    nx.write_graphml(marked, path)
    back = nx.read_graphml(path)
    assert back.graph["loss_op"] == "loss/value" and back.graph["source"] == "m.keras"
    assert back.nodes["loss/value"]["loss"] is True
    cut = back.nodes["StopGradient"]
    assert cut["cut"] is True and cut["primary_cut"] is True and cut["blocks"] == "enc/kernel"
    handle = back.nodes["enc/kernel/resource"]
    assert (handle["status"], handle["cause"], handle["unconnected"]) == ("unconnected", "blocked", True)
    assert back.nodes["head/kernel/resource"]["status"] == "connected"
    assert back.nodes["x"]["layer"] == "" and back.nodes["x"]["variable"] == ""
    unused = back.nodes["enc/gate (not read in the step)"]  # never captured: a node of its own
    assert (unused["variable"], unused["cause"]) == ("enc/gate", "unused")
    assert back.edges["enc/Relu\"odd\\name", "StopGradient"]["grad"] is False


def test_unconnected_subgraph_keeps_only_paths_from_unconnected_handles_to_the_loss():
    marked = export.mark_findings(blocked_graph(), blocked_results(), "loss/value")
    sub = export.unconnected_subgraph(marked)
    assert "x" not in sub and "head/kernel/resource" not in sub and "head/Read" not in sub
    assert {"enc/kernel/resource", "StopGradient", "head/MatMul", "loss/value",
            "enc/gate (not read in the step)"} <= set(sub)
    chains = {data["folded"] for _, data in sub.nodes(data=True) if data.get("folded")}
    assert chains == {"ReadVariableOp → MatMul → Relu", "Sub → Square → Mean"}
    assert nx.has_path(sub, "enc/kernel/resource", "loss/value")


def test_a_large_picture_groups_ops_by_layer():
    marked = export.mark_findings(blocked_graph(), blocked_results(), "loss/value")
    sub = export.unconnected_subgraph(marked, max_nodes=3)
    assert set(sub) == {"enc/kernel/resource", "layer enc", "StopGradient", "head/MatMul",
                        "loss/…", "loss/value", "enc/gate (not read in the step)"}
    assert sub.nodes["layer enc"]["folded"] == "3 ops"
    assert not sub.edges["layer enc", "StopGradient"]["grad"]
    assert nx.has_path(sub, "enc/kernel/resource", "loss/value")


def test_detached_variable_is_drawn_to_the_output_it_reaches():
    graph = blocked_graph()
    _op(graph, "critic/kernel/resource", "Placeholder", variable="critic/kernel")
    _op(graph, "critic/MatMul", "MatMul", layer="critic", output="critic")
    _op(graph, "critic/Shape", "Shape", layer="critic")
    graph.add_edge("critic/kernel/resource", "critic/MatMul", float=True, grad=True)
    graph.add_edge("critic/MatMul", "critic/Shape", float=True, grad=False)
    results = [_result("critic/kernel", Status.UNCONNECTED,
                       Cause(CauseKind.DETACHED, "feeds output 'critic'", reaches=("critic",))),
               _result("enc/kernel", Status.CONNECTED)]
    sub = export.unconnected_subgraph(export.mark_findings(graph, results, "loss/value"))
    assert set(sub) == {"critic/kernel/resource", "critic/MatMul", "loss/value"}


def test_collapse_leaves_short_runs_alone():
    graph = nx.DiGraph()
    for name in "abcd":
        graph.add_node(name, **export._blank_attrs(type=name.upper()))
    graph.add_edges_from(zip("abc", "bcd"), float=True, grad=True)
    graph.nodes["a"]["variable"], graph.nodes["d"]["loss"] = "v", True
    assert set(export.collapse_chains(graph.copy(), min_length=3)) == set("abcd")
    collapsed = export.collapse_chains(graph.copy(), min_length=2)
    assert set(collapsed) == {"a", "b … c", "d"}


def test_quote_escapes_quotes_backslashes_and_newlines():
    assert export.quote('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'


@pytest.mark.parametrize("source, name", [
    ("models/actor.keras", "models_actor"),
    ("./legacy.h5", "legacy"),
    ("sample_models/factories.py:actor_critic", "sample_models_factories_actor_critic"),
    ("pkg.models:build", "pkg.models_build"),
    ("<model>", "model"),
])
def test_safe_name(source, name):
    assert export.safe_name(source) == name


def test_write_graph_without_graphviz_writes_the_dot_and_drops_a_stale_svg(tmp_path, monkeypatch):
    monkeypatch.setattr(export.shutil, "which", lambda _: None)
    out = tmp_path / "new" / "dir"
    out.mkdir(parents=True)
    (out / "m.unconnected.svg").write_text("<svg>old</svg>")
    written = export.write_graph(blocked_graph(), blocked_results(), "loss/value", out, "m.keras")
    assert [p.name for p in written] == ["m.graphml", "m.dot", "m.unconnected.dot"]
    assert not (out / "m.unconnected.svg").exists()


def test_write_graph_with_nothing_unconnected_draws_no_picture(tmp_path):
    results = [_result("enc/kernel", Status.CONNECTED), _result("head/kernel", Status.CONNECTED)]
    (tmp_path / "m.unconnected.dot").write_text("digraph {}")
    written = export.write_graph(blocked_graph(), results, "loss/value", tmp_path, "m.keras")
    assert [p.name for p in written] == ["m.graphml", "m.dot"]
    assert not (tmp_path / "m.unconnected.dot").exists()


def test_an_unwritable_graph_dir_is_a_source_problem(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(SourceProblem, match="cannot write the op graph") as info:
        export.write_graph(blocked_graph(), blocked_results(), "loss/value",
                           tmp_path / "file" / "sub", "m.keras")
    assert info.value.kind == "graph-dir"


@needs_dot
def test_graphviz_accepts_both_dot_files_with_odd_names(tmp_path):
    export.write_graph(blocked_graph(), blocked_results(), "loss/value", tmp_path, "m.keras")
    for name in ("m.dot", "m.unconnected.dot"):
        subprocess.run(["dot", "-Tcanon", str(tmp_path / name)], check=True, capture_output=True)
    svg = (tmp_path / "m.unconnected.svg").read_text()
    assert 'enc/Relu&quot;odd\\name' in svg or 'enc/Relu"odd\\name' in svg


# --- the sample models ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """Analyze every sample once with ``graph_dir`` set: (graph dir, {sample stem: ModelReport})."""
    pytest.importorskip("tensorflow")
    from gradcheck.api import Options, analyze_sources

    out = tmp_path_factory.mktemp("graphs") / "not" / "yet"
    names = ["clean", "two_heads", "frozen_encoder", "argmax_lookup", "rounded_and_cast",
             "unused_weight"]
    options = Options(custom_objects=(str(SAMPLES / "custom_layers.py"),), graph_dir=str(out))
    sources = [f"sample_models/{name}.keras" for name in names]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        reports = analyze_sources(sources, options)
    assert all(r.ok for r in reports), [r.error for r in reports]
    return out, dict(zip(names, reports))


def _files(out: Path, name: str) -> dict[str, Path]:
    stem = f"sample_models_{name}"
    return {kind: out / f"{stem}{kind}" for kind in
            (".graphml", ".dot", ".unconnected.dot", ".unconnected.svg")}


def _cut_ops(report) -> set[str]:
    return {cut.op for v in report.variables if v.cause for cut in v.cause.cuts}


@pytest.mark.parametrize("name", ["frozen_encoder", "argmax_lookup", "rounded_and_cast"])
def test_sample_graphml_marks_the_loss_the_cuts_and_the_variables(exported, name):
    out, reports = exported
    files = _files(out, name)
    assert files[".graphml"].is_file() and files[".dot"].is_file()
    graph = nx.read_graphml(files[".graphml"])
    report = reports[name]
    assert graph.number_of_nodes() >= report.op_count
    assert [n for n, d in graph.nodes(data=True) if d["loss"]] == [graph.graph["loss_op"]]
    cuts = _cut_ops(report)
    assert cuts and {n for n, d in graph.nodes(data=True) if d["cut"]} == cuts
    primaries = {v.cause.op for v in report.variables if v.cause}
    assert {n for n, d in graph.nodes(data=True) if d["primary_cut"]} == primaries
    marked = {d["variable"]: d["status"] for _, d in graph.nodes(data=True) if d["variable"]}
    assert marked == {v.path: v.status.value for v in report.variables}
    dot_text = files[".dot"].read_text()
    for op in cuts:
        assert f'"{op}" [label="CUT: ' in dot_text
    assert all(f'"{op}"' in files[".unconnected.dot"].read_text() for op in cuts)


def test_detached_sample_picture_ends_at_the_output_without_a_loss(exported):
    out, _ = exported
    text = _files(out, "two_heads")[".unconnected.dot"].read_text()
    assert "critic/kernel\\nunconnected (detached)" in text
    assert "output 'critic'" in text and "output 'actor'" not in text
    assert "actor/kernel" not in text and "torso/kernel" not in text


def test_clean_sample_has_no_cut_and_no_picture(exported):
    out, _ = exported
    files = _files(out, "clean")
    graph = nx.read_graphml(files[".graphml"])
    assert not any(d["cut"] or d["unconnected"] for _, d in graph.nodes(data=True))
    assert not files[".unconnected.dot"].exists() and not files[".unconnected.svg"].exists()


@needs_dot
@pytest.mark.parametrize("name", ["frozen_encoder", "argmax_lookup", "rounded_and_cast",
                                  "two_heads", "unused_weight"])
def test_sample_svg_is_drawn_and_names_the_cut(exported, name):
    out, reports = exported
    svg = _files(out, name)[".unconnected.svg"]
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    text = svg.read_text()
    assert all(op in text for op in _cut_ops(reports[name]))
    unconnected = [v.path for v in reports[name].variables if v.status is Status.UNCONNECTED]
    assert unconnected and all(path in text for path in unconnected)


def test_cli_graph_flag_end_to_end(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow")
    from typer.testing import CliRunner

    from gradcheck.cli import app

    monkeypatch.chdir(ROOT)
    out = tmp_path / "graphs"
    result = CliRunner().invoke(app, ["sample_models/frozen_encoder.keras", "--graph", str(out),
                                      "--color", "never"])
    assert result.exit_code == 1, result.output
    assert "StopGradient" in result.output
    names = sorted(p.name for p in out.iterdir())
    expected = ["sample_models_frozen_encoder.dot", "sample_models_frozen_encoder.graphml",
                "sample_models_frozen_encoder.unconnected.dot"]
    assert names == sorted(expected + (["sample_models_frozen_encoder.unconnected.svg"]
                                       if HAS_DOT else []))
