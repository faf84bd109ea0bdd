"""Output formats on hand-built reports: contracts, escaping, and agreement on counts."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest
from hand_reports import (
    BLOCKED_MESSAGE,
    BROKEN,
    EXPECTED_FAILING,
    EXPECTED_WARNINGS,
    FACTORY,
    TOY,
)

from gradcheck.formats import Format, github, markdown, render
from gradcheck.report import ModelReport, Report, SourceError

ANSI = re.compile(r"\033\[[0-9;]*m")


# --- every format agrees on the counts -------------------------------------------------------


def _text_counts(out: str) -> tuple[int, int, int]:
    line = ANSI.sub("", out).strip().splitlines()[-1]
    m = re.fullmatch(r"\d+ sources?, \d+ variables?, (\d+) failing, (\d+) warnings?, (\d+) errors?",
                     line)
    assert m, line
    return tuple(int(g) for g in m.groups())


def _json_counts(out: str) -> tuple[int, int, int]:
    data = json.loads(out)
    variables = [v for m in data["models"] for v in m["variables"]]
    failing = sum(v["failing"] for v in variables)
    warnings = sum(not v["failing"] and v["status"] != "connected" for v in variables)
    errors = sum(not m["ok"] for m in data["models"])
    summary = data["summary"]
    assert (summary["failing"], summary["warnings"], summary["errors"]) == (
        failing, warnings, errors)
    return failing, warnings, errors


def _github_counts(out: str) -> tuple[int, int, int]:
    lines = out.splitlines()
    errors = [ln for ln in lines if ln.startswith("::error ")]
    source_errors = [ln for ln in errors if "title=gradcheck could not analyze the source" in ln]
    warnings = [ln for ln in lines if ln.startswith("::warning ")
                and f"title={github.escape_property(github.STALE_ALLOW_TITLE)}" not in ln]
    return len(errors) - len(source_errors), len(warnings), len(source_errors)


def _junit_counts(out: str) -> tuple[int, int, int]:
    root = ET.fromstring(out)
    cases = root.findall("./testsuite/testcase")
    warnings = sum(c.find("skipped") is not None or c.find("system-out") is not None
                   for c in cases)
    return int(root.get("failures")), warnings, int(root.get("errors"))


def _markdown_counts(out: str) -> tuple[int, int, int]:
    """Counted from what a reader sees: the full table's gate cells and the error list."""
    rows = [[cell.strip() for cell in line.strip("|").split(" | ")]
            for line in out.split("<details>")[-1].splitlines() if line.startswith("| ")][1:]
    failing = sum(row[-1] == "FAIL" for row in rows)
    warnings = sum(row[5] != "connected" and row[-1] != "FAIL" for row in rows)
    errors = 0
    if markdown.ERRORS_HEADING in out:
        block = out.split(markdown.ERRORS_HEADING)[1].split("\n\n")[1]
        errors = sum(line.startswith("- ") for line in block.splitlines())
    return failing, warnings, errors


def _sarif_counts(out: str) -> tuple[int, int, int]:
    results = json.loads(out)["runs"][0]["results"]
    errors = sum(r["ruleId"] == "GC100" for r in results)
    failing = sum(r["level"] == "error" and r["ruleId"] != "GC100" for r in results)
    warnings = sum(r["level"] == "warning" for r in results)
    return failing, warnings, errors


COUNTERS = {
    Format.TEXT: _text_counts,
    Format.JSON: _json_counts,
    Format.GITHUB: _github_counts,
    Format.JUNIT: _junit_counts,
    Format.SARIF: _sarif_counts,
    Format.MARKDOWN: _markdown_counts,
}


def test_hand_report_counts(hand_report):
    assert {v.path for _, v in hand_report.failures} == EXPECTED_FAILING
    assert {v.path for _, v in hand_report.warnings} == EXPECTED_WARNINGS
    assert [m.source for m in hand_report.errors] == [BROKEN]


@pytest.mark.parametrize("fmt", list(Format))
@pytest.mark.parametrize("which", ["hand", "empty", "clean"])
def test_every_format_agrees_on_counts(fmt, which, hand_report):
    report = {
        "hand": hand_report,
        "empty": Report(version="1", models=()),
        "clean": replace(hand_report, models=hand_report.models[2:], stale_allows=(), fixed=()),
    }[which]
    expected = (len(report.failures), len(report.warnings), len(report.errors))
    assert COUNTERS[fmt](render(report, fmt)) == expected


def test_render_accepts_the_format_value(hand_report):
    assert render(hand_report, "json") == render(hand_report, Format.JSON)


# --- json ------------------------------------------------------------------------------------


def _json(report) -> dict:
    return json.loads(render(report, Format.JSON))


def _variable(data: dict, source: str, path: str) -> dict:
    model = next(m for m in data["models"] if m["source"] == source)
    return next(v for v in model["variables"] if v["path"] == path)


def test_json_top_level_and_model_contract(hand_report):
    data = _json(hand_report)
    assert list(data)[:2] == ["version", "models"]
    assert data["version"] == "9.9.9"
    toy, broken, factory = data["models"]
    assert {"source", "ok", "error", "loss", "variables"} <= set(toy)
    assert (toy["source"], toy["ok"], toy["error"], toy["loss"]) == (TOY, True, None, "compiled")
    assert toy["model_name"] == "toy" and toy["op_count"] == 57
    assert broken["ok"] is False and broken["variables"] == []
    assert broken["error"] == {
        "type": "corrupt",
        "message": "models/broken.keras is not a Keras archive: re-save it with model.save().",
    }
    assert factory["loss"] == "projection" and factory["notes"] == ["no trainable variables"]
    assert data["summary"] == {"sources": 3, "variables": 10, "failing": 4, "warnings": 4,
                               "errors": 1, "exit_code": 3}
    assert data["stale_allows"][0]["pattern"] == "gone/*"
    assert data["fixed"] == [{"source": TOY, "path": "old/kernel", "status": "unconnected"}]


def test_json_variables(hand_report):
    data = _json(hand_report)
    dense = _variable(data, TOY, "dense/kernel")
    assert dense["shape"] == [4, 8] and dense["layer"] == "dense"
    assert (dense["none"], dense["zero"], dense["status"], dense["cause"]) == (
        False, False, "connected", None)
    quant = _variable(data, TOY, "quant/kernel")
    assert quant["none"] is True and quant["zero"] is True and quant["failing"] is True
    assert quant["cause"]["kind"] == "blocked"
    assert (quant["cause"]["op_type"], quant["cause"]["op"], quant["cause"]["layer"]) == (
        "ArgMax", "toy/quant/ArgMax", "quant")
    assert quant["cause"]["cuts"] == [
        {"op_type": "ArgMax", "op": "toy/quant/ArgMax", "layer": "quant"},
        {"op_type": "Cast", "op": "toy/quant/Cast", "layer": "quant"},
    ]
    assert quant["cause"]["message"] == BLOCKED_MESSAGE
    assert _variable(data, TOY, "head_b/kernel")["cause"]["reaches"] == ["out_b"]
    assert _variable(data, TOY, "mystery/kernel")["graph_agrees"] is False
    frozen = _variable(data, TOY, "frozen/kernel")
    assert frozen["allowed"] == {"reason": "frozen on purpose"} and frozen["failing"] is False
    legacy = _variable(data, TOY, "legacy/kernel")
    assert legacy["baselined"] is True and legacy["allowed"] is None and legacy["failing"] is False


def test_json_is_deterministic(hand_report):
    out = render(hand_report, Format.JSON)
    assert out == render(hand_report, Format.JSON)
    assert out.endswith("}\n") and out.startswith('{\n  "version"')


# --- github ----------------------------------------------------------------------------------


def test_github_escaping():
    assert github.escape_data("50%, a: b\r\nc") == "50%25, a: b%0D%0Ac"
    assert github.escape_property("a,b:c\nd%") == "a%2Cb%3Ac%0Ad%25"


def _github_line(out: str, needle: str) -> str:
    (line,) = [ln for ln in out.splitlines() if needle in ln]
    return line


def test_github_annotations(hand_report):
    out = render(hand_report, Format.GITHUB)
    quant = _github_line(out, "quant/kernel")
    assert quant.startswith(f"::error file={TOY},title=GC003 quant/kernel unconnected::")
    assert quant.endswith("::" + BLOCKED_MESSAGE)  # data keeps , and :
    assert _github_line(out, "relu_dead/kernel").startswith("::warning ")
    assert _github_line(out, "frozen/kernel").startswith("::warning ")
    assert "allowed: frozen on purpose" in _github_line(out, "frozen/kernel")
    broken = _github_line(out, BROKEN)
    assert broken.startswith(
        f"::error file={BROKEN},title=gradcheck could not analyze the source::")
    stale = _github_line(out, "gone/*")
    assert stale.startswith("::warning ") and stale.endswith("matched nothing: remove it")


def test_github_escapes_messages_and_factory_files(hand_report):
    toy = hand_report.models[0]
    odd = replace(toy.variables[2], cause=replace(toy.variables[2].cause,
                                                  message="100% unused,\nreally: fix it"))
    report = replace(hand_report, models=(
        replace(toy, variables=(odd,)),
        ModelReport(source=FACTORY, ok=False, error=SourceError("factory", "no, really: broken")),
    ), stale_allows=(), fixed=())
    lines = render(report, Format.GITHUB).splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("::extra/kernel: 100%25 unused,%0Areally: fix it")
    assert lines[1].startswith("::error file=models/build.py,title=")


# --- junit -----------------------------------------------------------------------------------


def test_junit_structure(hand_report):
    root = ET.fromstring(render(hand_report, Format.JUNIT))
    assert root.tag == "testsuites"
    assert [s.get("name") for s in root] == [TOY, BROKEN, FACTORY]
    toy, broken, factory = root
    assert {k: toy.get(k) for k in ("tests", "failures", "errors", "skipped")} == {
        "tests": "10", "failures": "4", "errors": "0", "skipped": "1"}
    quant = toy.find("testcase[@name='quant/kernel']")
    assert quant.get("classname") == TOY
    failure = quant.find("failure")
    assert failure.get("type") == "unconnected" and failure.get("message") == BLOCKED_MESSAGE
    assert toy.find("testcase[@name='frozen/kernel']/skipped").get("message") == (
        "allowed: frozen on purpose")
    assert "zero" in toy.find("testcase[@name='relu_dead/kernel']/system-out").text.lower()
    assert list(toy.find("testcase[@name='dense/kernel']")) == []
    (case,) = broken.findall("testcase")
    assert case.find("error").get("type") == "corrupt" and broken.get("errors") == "1"
    assert factory.get("tests") == "0" and factory.find("system-out").text == (
        "no trainable variables")


def test_junit_skips_exactly_the_allowed(hand_report):
    toy = hand_report.models[0]
    variables = tuple(replace(v, allowed="ok") if v.path == "head_b/kernel" else v
                      for v in toy.variables)
    report = replace(hand_report, models=(replace(toy, variables=variables),))
    suite = ET.fromstring(render(report, Format.JUNIT)).find("testsuite")
    assert (suite.get("skipped"), suite.get("failures")) == ("2", "3")
    assert len(suite.findall("testcase/skipped")) == 2


def test_junit_escapes_markup(hand_report):
    toy = hand_report.models[0]
    odd = replace(toy.variables[2], cause=replace(toy.variables[2].cause,
                                                  message='a <b> & "c" ]]>'))
    report = replace(hand_report, models=(replace(toy, variables=(odd,)),))
    root = ET.fromstring(render(report, Format.JUNIT))
    assert root.find(".//failure").get("message") == 'a <b> & "c" ]]>'


# --- sarif -----------------------------------------------------------------------------------


def test_sarif_log(hand_report):
    log = json.loads(render(hand_report, Format.SARIF))
    assert log["$schema"] == "https://json.schemastore.org/sarif-2.1.0.json"
    assert log["version"] == "2.1.0"
    driver = log["runs"][0]["tool"]["driver"]
    assert (driver["name"], driver["version"]) == ("gradcheck", "9.9.9")
    assert driver["informationUri"].startswith("https://")
    rules = driver["rules"]
    assert [r["id"] for r in rules] == ["GC001", "GC002", "GC003", "GC004", "GC005", "GC006",
                                        "GC007", "GC100"]
    for rule in rules:
        assert rule["help"]["text"] and rule["shortDescription"]["text"]
        assert rule["help"]["text"] in rule["fullDescription"]["text"]


def _sarif_results(report) -> dict[str, dict]:
    results = json.loads(render(report, Format.SARIF))["runs"][0]["results"]
    by_name = {}
    for r in results:
        location = r["locations"][0]
        names = [ll["name"] for ll in location.get("logicalLocations", [])]
        by_name[names[0] if names else location["physicalLocation"]["artifactLocation"]["uri"]] = r
    return by_name


def test_sarif_results(hand_report):
    results = _sarif_results(hand_report)
    expected = {
        "extra/kernel": ("GC001", "error"),
        "head_b/kernel": ("GC002", "error"),
        "quant/kernel": ("GC003", "error"),
        "mystery/kernel": ("GC004", "error"),
        "relu_dead/kernel": ("GC005", "warning"),
        "nan/kernel": ("GC006", "warning"),
        "frozen/kernel": ("GC003", "warning"),
        "legacy/kernel": ("GC001", "warning"),
        BROKEN: ("GC100", "error"),
    }
    assert {k: (r["ruleId"], r["level"]) for k, r in results.items()} == expected
    quant = results["quant/kernel"]
    assert quant["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == TOY
    assert BLOCKED_MESSAGE in quant["message"]["text"]
    assert results["frozen/kernel"]["suppressions"][0]["justification"] == (
        "allowed: frozen on purpose")
    assert "suppressions" not in quant


def test_sarif_uses_the_file_of_a_factory_source(hand_report):
    report = replace(hand_report, models=(
        ModelReport(source=FACTORY, ok=False, error=SourceError("factory", "boom.")),))
    (result,) = _sarif_results(report).values()
    assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == (
        "models/build.py")


# --- text ------------------------------------------------------------------------------------


def _block(out: str, source: str) -> list[str]:
    block = next(b for b in out.split("\n\n") if b.startswith(source))
    return block.splitlines()


def test_text_model_block_verbose(hand_report):
    out = render(hand_report, Format.TEXT, verbose=True)
    header, columns, *rest = _block(out, TOY)
    assert header == f"{TOY}: model 'toy', loss compiled (out_a: mse; out_b: no loss), 57 ops"
    assert columns.split() == ["variable", "shape", "NONE", "ZERO", "status", "cause", "gate"]
    rows = {line.split()[0]: line for line in rest[:10]}
    assert rows["dense/kernel"].split()[-3:] == ["tensor", "nonzero", "connected"]
    assert rows["quant/kernel"].split()[3:6] == ["None", "zeros", "unconnected"]
    assert "blocked at ArgMax in quant" in rows["quant/kernel"]
    assert rows["frozen/kernel"].endswith("allowed: frozen on purpose")
    assert rows["legacy/kernel"].endswith("baseline")
    assert rows["quant/kernel"].endswith("FAIL") and rows["relu_dead/kernel"].endswith("warn")
    assert rows["dense/bias"].split()[1] == "(8,)"
    assert "nonfinite" in rows["nan/kernel"]
    # columns line up: every cell of the table starts where its header does
    starts = [columns.index(name) for name in ("shape", "NONE", "ZERO", "status")]
    for line in rows.values():
        for start in starts:
            assert line[start - 2:start] == "  " and line[start] != " ", line
    assert "  unused: 2 variables in extra, legacy" in rest
    assert "  blocked: 2 variables in quant, frozen" in rest
    assert f"  {BLOCKED_MESSAGE}" in rest  # the path is not repeated
    assert not [line for line in rest[10:] if "dense/" in line]  # connected: no message
    assert "  relu_dead/kernel: The variable is connected" in "\n".join(rest)


def test_text_tail(hand_report):
    out = render(hand_report, Format.TEXT)
    assert "error: models/broken.keras is not a Keras archive" in out
    assert f"{BROKEN}: error: {BROKEN}" not in out  # the source is named once
    assert "  note: no trainable variables" in _block(out, FACTORY)
    assert "allow rule '*.keras::gone/*=old head' matched nothing: remove it" in out
    assert "old/kernel" in out and "fixed" in out
    assert out.splitlines()[-1] == "3 sources, 10 variables, 4 failing, 4 warnings, 1 error"


@pytest.mark.parametrize("verbose", [False, True])
def test_text_colour_only_when_asked(hand_report, verbose):
    plain = render(hand_report, Format.TEXT, verbose=verbose)
    coloured = render(hand_report, Format.TEXT, color=True, verbose=verbose)
    assert "\033[" not in plain
    assert ANSI.sub("", coloured) == plain
    lines = coloured.splitlines()
    assert any(ln.startswith("\033[31m") and "quant/kernel" in ln for ln in lines)
    assert any(ln.startswith("\033[33m") and "relu_dead/kernel" in ln for ln in lines)
    assert any(ln.startswith("\033[32m") and "dense/kernel" in ln for ln in lines) is verbose


def test_text_says_a_shared_explanation_once_for_all_its_variables():
    from gradcheck.report import Cause, CauseKind, Status, VariableResult

    message = "read, but it only feeds output 'critic', which the loss does not use; drop the head."
    cause = Cause(CauseKind.DETACHED, message=message, reaches=("critic",))
    variables = tuple(
        VariableResult(path=f"critic/{name}", shape=(2,), layer="critic", dtype="float32",
                       none=True, zero=True, status=Status.UNCONNECTED, cause=cause)
        for name in ("kernel", "bias"))
    report = Report(version="0", models=(ModelReport(source="m.keras", ok=True,
                                                     variables=variables),))
    out = render(report, Format.TEXT)
    assert out.count(message) == 1
    assert f"  critic/kernel, critic/bias: {message}" in out.splitlines()


def _rows(lines: list[str]) -> dict[str, str]:
    """The table rows of a block, by variable (lines after the column header, before the summary)."""
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["variable", "shape"])
    rows = {}
    for line in lines[header + 1:]:
        if len(line.split()) < 5 or ":" in line.split()[0]:
            break
        rows[line.split()[0]] = line
    return rows


def test_text_default_shows_only_the_rows_that_matter(hand_report):
    concise = render(hand_report, Format.TEXT)
    verbose = render(hand_report, Format.TEXT, verbose=True)
    rows, every = _rows(_block(concise, TOY)), _rows(_block(verbose, TOY))
    assert set(rows) == EXPECTED_FAILING | EXPECTED_WARNINGS  # failing, warnings, allowed, baseline
    assert set(every) == {v.path for v in hand_report.models[0].variables}
    assert {path: row.split() for path, row in rows.items()} == {
        path: every[path].split() for path in rows}  # the same cells as in the full table

    def explanations(out: str) -> list[str]:
        block = _block(out, TOY)
        return block[2 + len(_rows(block)):]

    assert explanations(concise) == explanations(verbose) != []
    concise_blocks, verbose_blocks = concise.split("\n\n"), verbose.split("\n\n")
    assert concise_blocks[1] == verbose_blocks[1] == (  # a source error: the same one line
        "error: models/broken.keras is not a Keras archive: re-save it with model.save().")
    assert concise_blocks[-1] == verbose_blocks[-1]  # stale allows, fixed entries, the count


def _clean_model(source: str, n: int) -> ModelReport:
    from gradcheck.report import LossKind, Status, VariableResult

    variables = tuple(VariableResult(path=f"d{i}/kernel", shape=(2, 2), layer=f"d{i}",
                                     dtype="float32", none=False, zero=False,
                                     status=Status.CONNECTED) for i in range(n))
    return ModelReport(source=source, ok=True, loss=LossKind.COMPILED, loss_detail="y: mse",
                       model_name="m", variables=variables, op_count=9)


def test_text_clean_sources_get_one_line_each(hand_report):
    clean = (_clean_model("a.keras", 3), _clean_model("b.keras", 1))
    report = replace(hand_report, models=(*clean, *hand_report.models))
    out = render(report, Format.TEXT)
    lines = out.splitlines()
    assert lines[:2] == [
        "a.keras: ok, 3 variables connected; model 'm', loss compiled (y: mse), 9 ops",
        "b.keras: ok, 1 variable connected; model 'm', loss compiled (y: mse), 9 ops"]
    assert lines[2] == "" and lines[3].startswith(f"{TOY}: model 'toy'")  # findings stand apart
    assert "d0/kernel" not in out
    verbose = render(report, Format.TEXT, verbose=True)
    assert "  d0/kernel  (2, 2)  tensor  nonzero  connected" in verbose.splitlines()
    assert _text_counts(out) == _text_counts(verbose)


def test_text_report_is_the_same_for_the_same_report(hand_report):
    assert render(hand_report, Format.TEXT) == render(replace(hand_report), Format.TEXT)


# --- markdown --------------------------------------------------------------------------------


def _html(out: str) -> str:
    markdown_it = pytest.importorskip("markdown_it")  # rich's own dependency
    return markdown_it.MarkdownIt("commonmark").enable("table").render(out)


def test_markdown_puts_findings_first_and_the_full_table_last(hand_report):
    out = render(hand_report, Format.MARKDOWN)
    findings, details = out.index("### Findings"), out.index("<details>")
    assert out.index(markdown.escaping.markdown_text(BLOCKED_MESSAGE)) < details
    assert findings < out.index(markdown.ERRORS_HEADING) < out.index("### Clean") < details
    assert out.rstrip().endswith("</details>")
    html = _html(out)
    finding_table, full_table = html.split("<table>")[1:]
    assert finding_table.count("<tr>") == 1 + len(EXPECTED_FAILING | EXPECTED_WARNINGS)
    assert full_table.count("<tr>") == 1 + len(hand_report.models[0].variables)
    assert "<td>dense/kernel</td>" in full_table and "dense/kernel" not in finding_table
    assert "<td>blocked at ArgMax in quant</td>" in finding_table
    assert f"<strong>FAIL</strong> GC003 blocked: {BLOCKED_MESSAGE}</li>" in html
    assert "<li>models/broken.keras is not a Keras archive" in html
    assert "<li>allow rule '*.keras::gone/*=old head' matched nothing: remove it</li>" in html
    assert "<li>baseline entry models/toy.keras::old/kernel (unconnected) is fixed" in html


def test_markdown_clean_run_says_it_passes():
    report = Report(version="1", models=(_clean_model("a.keras", 2),))
    out = render(report, Format.MARKDOWN)
    assert out.startswith("## gradcheck passes\n")
    assert "### Findings" not in out and markdown.ERRORS_HEADING not in out
    assert "- a.keras: ok, 2 variables connected; model 'm', loss compiled (y: mse), 9 ops" in out


def test_a_long_shared_explanation_names_the_first_variables_and_how_many_more():
    from hand_reports import _var

    from gradcheck.report import Cause, CauseKind, Status

    cause = Cause(CauseKind.UNUSED, layer="deep", message="never read in the step.")
    variables = tuple(_var(f"layer{i}/kernel", Status.UNCONNECTED, cause) for i in range(11))
    report = Report(version="0", models=(ModelReport(source="m.keras", ok=True,
                                                     variables=variables),))
    short = render(report, Format.TEXT)
    assert "layer7/kernel, … (3 more): never read in the step." in short
    assert "layer8/kernel," not in short.split("never read")[0].splitlines()[-1]
    assert short.count("FAIL") == 11  # every failing row is still in the table
    full = render(report, Format.TEXT, verbose=True)
    assert "layer9/kernel, layer10/kernel: never read in the step." in full
