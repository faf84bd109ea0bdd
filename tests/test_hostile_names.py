"""Names and messages from hostile model files cannot forge, hide or break a report line.

File, layer and variable names come from files that arrive in pull requests; the engine's
messages quote them.  Reports are built by hand (no TensorFlow) with the worst a name can hold:
newlines, carriage returns, ESC sequences, XML-forbidden control characters, bidi overrides,
lone surrogates (a non-UTF-8 file name), Markdown and HTML.
"""

from __future__ import annotations

import ast
import json
import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradcheck.formats import Format, render
from gradcheck.formats.escaping import markdown_text, printable
from gradcheck.report import (
    AllowRule,
    Cause,
    CauseKind,
    LossKind,
    ModelReport,
    Report,
    SourceError,
    Status,
    VariableResult,
)

FAKE_SUMMARY = "0 sources, 0 variables, 0 failing, 0 warnings, 0 errors"
EVIL_SOURCE = f"models/evil\n{FAKE_SUMMARY}\r\x1b[2J\x1b]0;owned\x07.keras"
EVIL_LAYER = "dense\x0b\x01\u202e<b>x</b>|y"
EVIL_PATH = f"{EVIL_LAYER}/kernel\n  dense/bias  (4,)  tensor  nonzero  connected"
EVIL_MESSAGE = f"{EVIL_PATH} is never read\x1b[8m hidden\x1b[0m: use it or drop it."
EVIL_ERROR_SOURCE = "bad\udcff\n::error::forged.keras"
EVIL_STRINGS = (EVIL_SOURCE, EVIL_LAYER, EVIL_PATH, EVIL_MESSAGE, EVIL_ERROR_SOURCE)
OUR_COLOURS = re.compile(r"\033\[(?:31|32|33|0)m")


def _hostile_report() -> Report:
    finding = VariableResult(
        path=EVIL_PATH, shape=(4, 8), layer=EVIL_LAYER, dtype="float32", none=True, zero=True,
        status=Status.UNCONNECTED, cause=Cause(CauseKind.UNUSED, EVIL_MESSAGE, layer=EVIL_LAYER))
    fine = VariableResult(path="ok|\x1b/bias", shape=(8,), layer="ok|\x1b", dtype="float32",
                          none=False, zero=False, status=Status.CONNECTED)
    return Report(
        version="1",
        models=(
            ModelReport(source=EVIL_SOURCE, ok=True, loss=LossKind.COMPILED,
                        loss_detail="out\n\x1b[31m: mse", model_name="m\x1b[2J",
                        variables=(finding, fine), op_count=3, notes=("note\x0c\x85here",)),
            ModelReport(source="clean\x1b[2J.keras", ok=True, loss=LossKind.PROJECTION,
                        model_name="<script>", variables=(fine,), op_count=2),
            ModelReport(source=EVIL_ERROR_SOURCE, ok=False, error=SourceError(
                "corrupt\x01", f"{EVIL_ERROR_SOURCE} is not a Keras archive\x1b[2K\r.")),
        ),
        stale_allows=(AllowRule(pattern="gone\n/*", reason="\x1b[2J"),),
    )


# --- the helpers -----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters='\\"'), max_size=40))
def test_printable_is_printable_and_reads_back_as_the_original(text):
    shown = printable(text)
    assert shown.isprintable()
    assert ast.literal_eval(f'"{shown}"') == text  # Python's own reading of the escapes
    if text.isprintable():
        assert shown == text


@pytest.mark.parametrize("char", ["\n", "\r", "\t", "\x00", "\x0b", "\x1b", "\x7f", "\x85",
                                  "\u2028", "\u202e", "\udcff", "\U000e0001"])
def test_printable_writes_an_escape_as_python_does(char):
    assert printable(char) == char.encode("unicode_escape").decode("ascii")


MARKDOWN_HEAVY = st.text(alphabet="aZ1é_*`[]()<>&|~#-+=.!:/\\ \n\x1b", max_size=30)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=40), MARKDOWN_HEAVY))
def test_markdown_text_renders_as_exactly_the_printable_text(text):
    markdown_it = pytest.importorskip("markdown_it")
    md = markdown_it.MarkdownIt("commonmark").enable("table")
    escaped = markdown_text(text)
    (inline,) = md.parseInline(escaped)
    assert [t.type for t in inline.children] in ([], ["text"])  # no emphasis, link, html, code
    assert "".join(t.content for t in inline.children) == printable(text)
    for prefix in ("- ", "| a |\n|---|\n| "):  # a list item, a table cell: no new block, no cell
        tokens = [t.type for t in md.parse(prefix + escaped) if t.type != "inline"]
        assert tokens in (
            ["bullet_list_open", "list_item_open", "paragraph_open", "paragraph_close",
             "list_item_close", "bullet_list_close"],
            ["bullet_list_open", "list_item_open", "list_item_close", "bullet_list_close"],
            ["table_open", "thead_open", "tr_open", "th_open", "th_close", "tr_close",
             "thead_close", "tbody_open", "tr_open", "td_open", "td_close", "tr_close",
             "tbody_close", "table_close"],
        ), (prefix, escaped)


# --- every format on the hostile report -----------------------------------------------------


@pytest.mark.parametrize("verbose", [False, True])
@pytest.mark.parametrize("color", [False, True])
def test_text_lines_cannot_be_forged(verbose, color):
    out = render(_hostile_report(), Format.TEXT, color=color, verbose=verbose)
    out.encode("utf-8")  # a lone surrogate would fail here, at the terminal
    plain = OUR_COLOURS.sub("", out)
    assert all(line.isprintable() for line in plain.splitlines())  # no ESC, no \r, no \x0b
    assert plain.count("\n") == len(plain.splitlines())  # no other line breaks (\x85, \u2028)
    assert plain.splitlines()[-1] == "3 sources, 3 variables, 1 failing, 0 warnings, 1 error"
    assert FAKE_SUMMARY not in plain.splitlines()
    assert f"{printable(EVIL_SOURCE)}: model 'm\\x1b[2J'" in plain
    assert f"  {printable(EVIL_MESSAGE)}" in plain.splitlines()
    assert f"error: {printable(EVIL_ERROR_SOURCE)} is not a Keras archive\\x1b[2K\\r." in plain
    assert sum(printable(EVIL_PATH) in line for line in plain.splitlines()) == 2  # row, message


def test_markdown_renders_names_as_text():
    markdown_it = pytest.importorskip("markdown_it")
    out = render(_hostile_report(), Format.MARKDOWN)
    assert all(line.isprintable() for line in out.splitlines())
    tokens = markdown_it.MarkdownIt("commonmark").enable("table").parse(out)
    html_blocks = [t.content.strip() for t in tokens if t.type == "html_block"]
    assert html_blocks == ["<details>\n<summary>All 3 variables</summary>", "</details>"]
    inline_kinds = {child.type for t in tokens if t.type == "inline" for child in t.children}
    assert inline_kinds <= {"text", "strong_open", "strong_close"}  # no html, link, code, image
    rows, row, cell = [], [], False
    for t in tokens:  # each table row as the text of its cells
        if t.type == "tr_open":
            row = []
        elif t.type in ("th_open", "td_open"):
            cell = True
        elif t.type == "inline" and cell:
            row.append("".join(child.content for child in t.children))
        elif t.type in ("th_close", "td_close"):
            cell = False
        elif t.type == "tr_close":
            rows.append(row)
    assert [printable(EVIL_PATH), "(4, 8)", "unconnected", "unused", "FAIL"] in rows
    assert [printable(EVIL_SOURCE), printable(EVIL_PATH), "(4, 8)", "None", "zeros",
            "unconnected", "unused", "FAIL"] in rows  # a "|" in a name splits no cell
    text = "".join(child.content for t in tokens if t.type == "inline" for child in t.children)
    for name in (EVIL_SOURCE, EVIL_PATH, EVIL_ERROR_SOURCE, "<script>"):
        assert printable(name) in text


def test_junit_stays_well_formed_and_keeps_the_names_readable():
    out = render(_hostile_report(), Format.JUNIT)
    root = ET.fromstring(out.encode("utf-8"))  # expat refuses \x0b, \x01 even as &#11;
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [printable(m.source)
                                               for m in _hostile_report().models]
    case = suites[0].find("testcase/failure/..")
    assert case.get("name") == printable(EVIL_PATH)
    assert case.find("failure").text == printable(EVIL_MESSAGE)
    assert suites[0].find("system-out").text == printable("note\x0c\x85here")
    assert suites[2].find("testcase/error").get("type") == "corrupt\\x01"


@pytest.mark.parametrize("fmt", [Format.JSON, Format.SARIF])
def test_json_formats_keep_the_exact_names_escaped(fmt):
    out = render(_hostile_report(), fmt)
    assert out.isascii() and "\x1b" not in out  # json.dumps escapes every control character
    data = json.loads(out)
    if fmt is Format.JSON:
        assert data["models"][0]["source"] == EVIL_SOURCE  # the data is exact, not printable()
        assert data["models"][0]["variables"][0]["path"] == EVIL_PATH
