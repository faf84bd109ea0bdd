"""JUnit XML: a testsuite per source, a testcase per trainable variable.

Names and messages pass through ``escaping.printable``: XML 1.0 cannot hold most control
characters (not even as character references), and a report must stay well-formed whatever a
model file names its layers.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from gradcheck.formats import escaping, words
from gradcheck.results import ModelReport, VariableResult

if TYPE_CHECKING:  # the formats read a Report; report.py shows itself through them
    from gradcheck.report import Report

_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


def render(report: Report, *, color: bool = False) -> str:
    """Render the report as JUnit XML; ``color`` is ignored."""
    root = ET.Element("testsuites", name="gradcheck")
    for model in report.models:
        root.append(_suite(report, model))
    _set_counts(root, *_totals(root))
    ET.indent(root)
    return _DECLARATION + ET.tostring(root, encoding="unicode") + "\n"


def _suite(report: Report, model: ModelReport) -> ET.Element:
    source = escaping.printable(model.source)
    suite = ET.Element("testsuite", name=source)
    if not model.ok:
        message = escaping.printable(words.error_message(model.error))
        case = ET.SubElement(suite, "testcase", classname=source, name="analyze")
        error = ET.SubElement(case, "error", message=message,
                              type=escaping.printable(model.error.type) if model.error else "unknown")
        error.text = message
        _set_counts(suite, tests=1, failures=0, errors=1, skipped=0)
        return suite
    for v in model.variables:
        suite.append(_case(report, model, v))
    remarks = [f"warning: {text}" for text in words.warning_messages(model)] + list(model.notes)
    remarks += [f"inputs: {words.inputs_line(model)}"] if model.inputs else []
    if remarks:
        ET.SubElement(suite, "system-out").text = "\n".join(map(escaping.printable, remarks))
    _set_counts(
        suite,
        tests=len(model.variables),
        failures=sum(report.failing(v) for v in model.variables),
        errors=0,
        skipped=sum(v.allowed is not None for v in model.variables),
    )
    return suite


def _case(report: Report, model: ModelReport, v: VariableResult) -> ET.Element:
    printable = escaping.printable
    case = ET.Element("testcase", classname=printable(model.source), name=printable(v.path))
    if report.failing(v):
        failure = ET.SubElement(case, "failure", message=printable(words.explanation(v)),
                                type=v.status.value)
        failure.text = printable(words.finding_message(v))
    elif v.allowed is not None:
        ET.SubElement(case, "skipped", message=printable(words.gate_note(v)))
    elif report.warning(v):
        ET.SubElement(case, "system-out").text = printable(words.finding_message(v))
    return case


def _totals(root: ET.Element) -> tuple[int, int, int, int]:
    keys = ("tests", "failures", "errors", "skipped")
    return tuple(sum(int(s.get(k)) for s in root) for k in keys)


def _set_counts(element: ET.Element, tests: int, failures: int, errors: int, skipped: int) -> None:
    for key, value in (("tests", tests), ("failures", failures), ("errors", errors),
                       ("skipped", skipped)):
        element.set(key, str(value))
