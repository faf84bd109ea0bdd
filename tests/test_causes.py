"""Causes a user can act on: the detail, the remedy, the user's line, and why a gradient is zero.

Each pattern is a small custom layer in ``tests/cause_models/``; the expected line is found by
its marker comment.  Verdicts are still compared with an eager tape, and the zero reasons with
what the model was built to do.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
from tape_truth import assert_matches_tape

ROOT = Path(__file__).resolve().parents[1]
MODELS = Path(__file__).resolve().parent / "cause_models"
sys.path.insert(0, str(MODELS))

pytest.importorskip("tensorflow")

ADD_LOSS_LOSS = "add_loss_only.py:loss_without_add_loss"


def marker_line(module: str, marker: str) -> int:
    """The 1-based line of ``# marker: <marker>`` in a cause model file."""
    lines = (MODELS / f"{module}.py").read_text().splitlines()
    hits = [i + 1 for i, text in enumerate(lines) if f"# marker: {marker}" in text]
    assert len(hits) == 1, (module, marker)
    return hits[0]


def model_path(module: str) -> str:
    return (MODELS / f"{module}.py").relative_to(ROOT).as_posix()


@pytest.fixture(scope="session")
def cause_reports():
    """Each cause model built once and analyzed once: name -> (model, ModelReport)."""
    from gradcheck.api import Options, analyze_model, quiet_tensorflow

    quiet_tensorflow()
    options = {"add_loss_only": {"loss": str(MODELS / ADD_LOSS_LOSS)}}
    reports = {}
    for name in ("layer_not_called", "weight_not_read", "inference_only", "other_branch",
                 "add_loss_only", "rounded"):
        model = importlib.import_module(name).build()
        reports[name] = (model, analyze_model(model, Options(**options.get(name, {}))))
    return reports


def findings(report) -> dict:
    return {v.path: v for v in report.variables if v.status.value != "connected"}


@pytest.mark.parametrize(("name", "kind", "detail", "paths"), [
    ("layer_not_called", "unused", "layer-not-called", {"block/skipped/kernel", "block/skipped/bias"}),
    ("weight_not_read", "unused", "weight-not-read", {"forgetful/shift"}),
    ("inference_only", "unused", "inference-only", {"calibration/temperature"}),
    ("other_branch", "unused", "other-branch", {"gated/fallback/kernel", "gated/fallback/bias"}),
    ("add_loss_only", "blocked", "add-loss-only", {"quantizer/codebook"}),
])
def test_each_detail_names_the_cause_its_remedy_and_the_line(cause_reports, name, kind, detail,
                                                              paths):
    from gradcheck.diagnose.messages import DETAIL_REMEDY
    from gradcheck.report import CauseDetail

    found = findings(cause_reports[name][1])
    assert set(found) == paths
    for v in found.values():
        assert v.status.value == "unconnected"
        assert (v.cause.kind.value, v.cause.detail.value) == (kind, detail)
        assert v.cause.message.endswith(DETAIL_REMEDY[CauseDetail(detail)])
        location = v.cause.location
        assert (location.path, location.line) == (model_path(name), marker_line(name, detail))


def test_every_detail_has_its_own_remedy():
    from gradcheck.diagnose.messages import DETAIL_REMEDY
    from gradcheck.report import CauseDetail

    assert set(DETAIL_REMEDY) == set(CauseDetail)
    assert len(set(DETAIL_REMEDY.values())) == len(CauseDetail)


def test_other_branch_says_which_input_decides(cause_reports):
    message = findings(cause_reports["other_branch"][1])["gated/fallback/kernel"].cause.message
    assert "input 'features'" in message


def test_a_cut_in_a_custom_layer_points_at_its_line(cause_reports):
    for v in findings(cause_reports["rounded"][1]).values():
        assert (v.cause.kind.value, v.cause.op_type) == ("blocked", "Round")
        assert (v.cause.location.path, v.cause.location.line, v.cause.location.function) == (
            model_path("rounded"), marker_line("rounded", "round"), "call")


@pytest.mark.parametrize("name", ["layer_not_called", "weight_not_read", "inference_only",
                                  "other_branch", "rounded"])
def test_verdicts_still_equal_the_eager_tape(cause_reports, name):
    model, report = cause_reports[name]
    assert_matches_tape(report, model)


def test_add_loss_only_verdict_equals_the_tape_on_the_judged_loss(cause_reports):
    import tensorflow as tf

    from gradcheck.plans.inputs import signature
    from gradcheck.plans.synthetic import make_inputs

    model, report = cause_reports["add_loss_only"]
    loss_fn = importlib.import_module("add_loss_only").loss_without_add_loss
    index_tree, specs = signature(model, [])
    inputs = make_inputs(model, index_tree, specs, batch_size=2, seed=0)
    with tf.GradientTape() as tape:
        loss = loss_fn(model, inputs, model(inputs, training=True))
    grads = tape.gradient(loss, [v.value for v in model.trainable_variables])
    assert [g is None for g in grads] == [v.none for v in report.variables]


def _rounded_report(cause_reports, source: str):
    from dataclasses import replace

    from gradcheck import gate

    report = cause_reports["rounded"][1]
    return gate.apply([replace(report, source=source)], version="0", allow=(), baseline=None,
                      fail_on=frozenset({report.variables[0].status}))


def test_github_annotation_points_at_the_cut_line(cause_reports):
    from gradcheck.formats import Format, render

    out = render(_rounded_report(cause_reports, "models/rounded.keras"), Format.GITHUB)
    line = next(text for text in out.splitlines() if "dense/kernel" in text)
    expected = f"::error file={model_path('rounded')},line={marker_line('rounded', 'round')},"
    assert line.startswith(expected)


def test_sarif_result_points_at_the_cut_line_and_relates_the_model(cause_reports):
    from gradcheck.formats import Format, render

    log = json.loads(render(_rounded_report(cause_reports, "models/rounded.keras"), Format.SARIF))
    result = next(r for r in log["runs"][0]["results"]
                  if r["locations"][0]["logicalLocations"][0]["name"] == "dense/kernel")
    physical = result["locations"][0]["physicalLocation"]
    assert physical["artifactLocation"]["uri"] == model_path("rounded")
    assert physical["region"]["startLine"] == marker_line("rounded", "round")
    related = result["relatedLocations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert related == "models/rounded.keras"


def test_json_text_and_junit_carry_detail_and_location(cause_reports):
    from gradcheck.formats import Format, render

    report = _rounded_report(cause_reports, "models/rounded.keras")
    where = f"{model_path('rounded')}:{marker_line('rounded', 'round')}"
    cause = json.loads(render(report, Format.JSON))["models"][0]["variables"][0]["cause"]
    assert cause["location"] == {"path": model_path("rounded"),
                                 "line": marker_line("rounded", "round"), "function": "call",
                                 "package": None}
    assert cause["detail"] is None and cause["kind"] == "blocked"
    assert where in render(report, Format.TEXT)
    assert where in render(report, Format.JUNIT)


def test_an_existing_baseline_and_allow_rule_still_match(tmp_path, cause_reports):
    """A baseline and an allow rule written before details existed match the refined findings."""
    from gradcheck import gate
    from gradcheck.report import AllowRule, Status

    _, report = cause_reports["layer_not_called"]
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"gradcheck_baseline": 1, "findings": [
        {"source": "<model>", "path": "block/skipped/bias", "status": "unconnected"},
        {"source": "<model>", "path": "block/skipped/kernel", "status": "unconnected"},
    ]}))
    gated = gate.apply([report], version="0", fail_on=frozenset({Status.UNCONNECTED}),
                       allow=(), baseline=gate.read_baseline(baseline))
    assert not gated.failures and not gated.fixed
    assert all(v.baselined for v in gated.models[0].variables if v.status.value != "connected")
    allowed = gate.apply([report], version="0", fail_on=frozenset({Status.UNCONNECTED}),
                         allow=[AllowRule("block/skipped/*")], baseline=None)
    assert not allowed.failures and not allowed.stale_allows


# --- zero reasons ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def zero_reports():
    from gradcheck.api import Options, analyze_model, quiet_tensorflow

    quiet_tensorflow()
    zero_models = importlib.import_module("zero_models")
    reports = {}
    for name in ("lora", "dead_relu", "zero_loss_weight", "cancellation", "zero_gate",
                 "one_class_cross_entropy", "zero_queries"):
        model = getattr(zero_models, name)()
        reports[name] = (model, analyze_model(model, Options()))
    model = importlib.import_module("function_branch").build()
    reports["function_branch"] = (model, analyze_model(model, Options()))
    return reports


@pytest.mark.parametrize(("name", "expected"), [
    ("lora", {"lora/lora_a": "zero-partner"}),
    ("dead_relu", {"dead/kernel": "dead-activation", "dead/bias": "dead-activation",
                   "head/kernel": "dead-activation"}),
    ("zero_loss_weight", {"aux/kernel": "zero-loss-weight", "aux/bias": "zero-loss-weight"}),
    ("cancellation", {"shared/kernel": "cancellation", "shared/bias": "cancellation"}),
    ("function_branch", {"branchy/fallback": "other-branch"}),
    ("zero_gate", {"hidden/kernel": "zero-partner", "hidden/bias": "zero-partner",
                   "gate_input/kernel": "zero-partner", "gate_input/bias": "zero-partner",
                   "out/kernel": "zero-partner"}),
    ("one_class_cross_entropy", {"presence/kernel": "one-element-softmax",
                                 "presence/bias": "one-element-softmax"}),
    ("zero_queries", {"norm/gamma": "zero-partner", "proj/kernel": "zero-partner"}),
])
def test_zero_reasons(zero_reports, name, expected):
    model, report = zero_reports[name]
    assert_matches_tape(report, model)
    found = findings(report)
    assert {path: v.status.value for path, v in found.items()} == dict.fromkeys(expected, "zero")
    assert {path: v.zero_reason.kind.value for path, v in found.items()} == expected


def test_a_tf_cond_branch_not_taken_in_a_tf_function_points_at_the_cond(zero_reports):
    reason = findings(zero_reports["function_branch"][1])["branchy/fallback"].zero_reason
    assert "input 'features'" in reason.message
    assert (reason.location.path, reason.location.line) == (
        model_path("function_branch"), marker_line("function_branch", "tf.cond"))


def test_zero_reason_names_the_zero_partner_and_reaches_every_format(zero_reports):
    from gradcheck import gate
    from gradcheck.formats import Format, render
    from gradcheck.report import Status

    _, report = zero_reports["lora"]
    reason = findings(report)["lora/lora_a"].zero_reason
    assert "'lora/lora_b'" in reason.message
    gated = gate.apply([report], version="0", fail_on=frozenset({Status.ZERO}), allow=(),
                       baseline=None)
    data = json.loads(render(gated, Format.JSON))["models"][0]["variables"][0]
    assert data["zero_reason"] == {"kind": "zero-partner", "op": reason.op,
                                   "message": reason.message, "location": None}
    for fmt in (Format.TEXT, Format.GITHUB, Format.JUNIT, Format.SARIF):
        assert "lora/lora_b" in render(gated, fmt), fmt


# --- locations ------------------------------------------------------------------------------


def test_location_is_relative_to_the_repository_root(tmp_path, monkeypatch):
    from gradcheck.locations import relative_path

    (tmp_path / "repo" / "pkg").mkdir(parents=True)
    (tmp_path / "repo" / "pyproject.toml").write_text("")
    source = tmp_path / "repo" / "pkg" / "layers.py"
    source.write_text("")
    monkeypatch.chdir(tmp_path)
    assert relative_path(str(source)) == "pkg/layers.py"
    loose = tmp_path / "loose" / "model.py"
    loose.parent.mkdir()
    loose.write_text("")
    assert relative_path(str(loose)) == "loose/model.py"  # no root above it: the cwd


def test_library_code_has_no_location():
    import keras

    from gradcheck.locations import function_location

    assert function_location(keras.layers.Dense.call) is None
    here = function_location(marker_line)
    assert here is not None and here.path == "tests/test_causes.py" and here.function == "marker_line"


def test_a_cut_written_in_a_factory_points_at_the_factory_line():
    """In a functional model the argmax runs as a graph node; its line is where the factory built it."""
    from gradcheck import check

    report = check(f"{MODELS / 'factory_cut.py'}:build")
    for v in findings(report.models[0]).values():
        assert (v.cause.kind.value, v.cause.op_type) == ("blocked", "ArgMax")
        assert (v.cause.location.path, v.cause.location.line, v.cause.location.function) == (
            model_path("factory_cut"), marker_line("factory_cut", "argmax"), "build")


def test_the_cause_column_names_the_detail_and_the_zero_reason(cause_reports, zero_reports):
    from gradcheck import gate
    from gradcheck.formats import Format, render
    from gradcheck.report import Status

    reports = [cause_reports["layer_not_called"][1], zero_reports["lora"][1]]
    gated = gate.apply(reports, version="0", allow=(), baseline=None,
                       fail_on=frozenset({Status.UNCONNECTED, Status.ZERO}))
    text = render(gated, Format.TEXT)
    assert "unused (layer-not-called)" in text and "(zero-partner)" in text


def test_a_layer_skipped_inside_a_traced_tf_function_is_still_told_not_called():
    """Under a tf.function the step runs no Python for the layers inside; one eager-functions
    forward tells a skipped layer from a weight its layer does not read."""
    from gradcheck.api import Options, analyze_model

    model = importlib.import_module("function_branch").traced()
    report = analyze_model(model, Options())
    assert_matches_tape(report, model)
    found = findings(report)
    assert set(found) == {"traced/skipped/kernel", "traced/skipped/bias"}
    for v in found.values():
        assert (v.cause.kind.value, v.cause.detail.value) == ("unused", "layer-not-called")
        assert (v.cause.location.path, v.cause.location.line) == (
            model_path("function_branch"), marker_line("function_branch", "traced-call"))


def test_a_python_if_on_a_tensor_is_flipped_to_find_the_other_branch():
    from gradcheck.api import Options, analyze_model
    from gradcheck.diagnose.messages import DETAIL_REMEDY
    from gradcheck.report import CauseDetail

    model = importlib.import_module("python_branch").build()
    report = analyze_model(model, Options())
    assert_matches_tape(report, model)
    found = findings(report)
    assert set(found) == {"routed/negative/kernel", "routed/negative/bias"}
    for v in found.values():
        assert (v.cause.kind.value, v.cause.detail.value) == ("unused", "other-branch")
        assert "input 'features'" in v.cause.message
        assert v.cause.message.endswith(DETAIL_REMEDY[CauseDetail.OTHER_BRANCH])
        assert (v.cause.location.path, v.cause.location.line) == (
            model_path("python_branch"), marker_line("python_branch", "python-if"))


def test_sam_no_mask_embed_is_read_only_on_the_branch_for_inputs_without_a_mask():
    """keras-hub's SAM prompt encoder reads ``no_mask_embed`` only when no mask prompt is given;
    with a mask it is not unused code to delete but the other side of a ``keras.ops.cond``."""
    pytest.importorskip("keras_hub")
    import keras
    from keras_hub.src.models.sam.sam_prompt_encoder import SAMPromptEncoder

    from gradcheck.api import Options, analyze_model

    encoder = SAMPromptEncoder(hidden_size=8, image_embedding_size=(4, 4),
                               input_image_size=(16, 16), mask_in_channels=4, name="prompts")
    inputs = {"points": keras.Input((2, 2), name="points"), "labels": keras.Input((2,), name="labels"),
              "boxes": keras.Input((1, 2, 2), name="boxes"),
              "masks": keras.Input((1, 16, 16, 1), name="masks")}
    model = keras.Model(inputs, encoder(**inputs)["prompt_dense_embeddings"], name="sam_prompts")
    report = analyze_model(model, Options())
    assert_matches_tape(report, model)
    no_mask = {v.path: v for v in report.variables}["prompts/no_mask_embed/embeddings"]
    assert (no_mask.cause.kind.value, no_mask.cause.detail.value) == ("unused", "other-branch")
    assert no_mask.cause.location is None  # the cond is keras-hub's code, not the user's


def _hand_graph(ops: list[tuple[str, str, list[str]]], variables: dict[str, str]):
    """A step's op graph by hand: (node, op type, producers); every edge carries gradient."""
    import networkx as nx

    graph = nx.DiGraph()
    for node, path in variables.items():
        graph.add_node(node, type="VariableHandle", layer=None, meta=False, variable=path)
    for node, kind, producers in ops:
        graph.add_node(node, type=kind, layer=None, meta=False)
        for producer in producers:
            graph.add_edge(producer, node, grad=True, float=True)
    return graph


def test_a_softmax_over_one_element_and_a_shift_a_normalization_removes_are_zero_reasons():
    from gradcheck.diagnose.zero import ZeroExplainer

    softmax = _hand_graph([("read", "ReadVariableOp", ["v:score"]), ("x", "Placeholder", []),
                           ("score", "MatMul", ["x", "read"]), ("softmax", "Softmax", ["score"]),
                           ("loss", "Sum", ["softmax"])], {"v:score": "score/kernel"})
    softmax.nodes["softmax"]["one_element"] = True
    reason = ZeroExplainer(softmax, "loss", zero_variables=set()).reason("v:score")
    assert reason.kind.value == "one-element-softmax" and reason.op == "softmax"
    shifted = _hand_graph([("read", "ReadVariableOp", ["v:bias"]), ("x", "Placeholder", []),
                           ("biased", "BiasAdd", ["x", "read"]), ("mean", "Mean", ["biased"]),
                           ("centered", "Sub", ["biased", "mean"]), ("loss", "Sum", ["centered"])],
                          {"v:bias": "dense/bias"})
    reason = ZeroExplainer(shifted, "loss", zero_variables=set()).reason("v:bias")
    assert reason.kind.value == "shift-removed" and reason.op == "mean"
    assert "use_bias=False" in reason.message
