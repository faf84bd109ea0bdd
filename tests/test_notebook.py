"""A ``Report`` in a notebook: HTML (findings first, causes and remedies, names escaped),
Markdown, and ``str(report)`` as the text report; none of it imports TensorFlow."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace

from gradcheck.formats import markdown, text, words
from gradcheck.report import Cause, CauseKind, ModelReport, Report, Status, VariableResult

HOSTILE = '<script>alert("x")</script>\x1b[2J'


def _hostile_report() -> Report:
    variable = VariableResult(
        path=f"{HOSTILE}/kernel", shape=(2, 2), layer=HOSTILE, dtype="float32", none=True,
        zero=True, status=Status.UNCONNECTED,
        cause=Cause(CauseKind.UNUSED, f"never read in the step: layer '{HOSTILE}' runs, but its "
                    "call() does not use this weight; use the weight in call(), or stop "
                    "creating it.", layer=HOSTILE))
    model = ModelReport(source=f"{HOSTILE}.keras", ok=True, model_name=HOSTILE,
                        variables=(variable,), op_count=3)
    return Report(version="0", models=(model,))


def test_html_puts_findings_first_with_causes_and_remedies(hand_report):
    html = hand_report._repr_html_()
    order = [html.index(h) for h in ("gradcheck fails", "<h4>Findings</h4>",
                                     "<h4>Sources that could not be analyzed</h4>",
                                     "<h4>To clean up</h4>", "<h4>Clean</h4>", "<details>")]
    assert order == sorted(order)
    findings = html[html.index("<h4>Findings</h4>"):html.index("<h4>Sources that")]
    for _, variable in hand_report.failures:
        assert variable.path in findings
    assert "straight-through estimator" in findings  # the remedy of the ArgMax cut
    assert "4 failing, 4 warnings, 1 error" in html and "(exit code 3)" in html
    with_findings = [m for m in hand_report.models if m.ok and words.findings(m)]
    rows = sum(len(words.findings(m)) for m in with_findings)  # each finding once up top
    rows += sum(len(m.variables) for m in hand_report.models)  # every variable in <details>
    assert html.count("<tr>") == rows + len(with_findings) + 1  # and a header per table


def test_names_from_a_model_file_cannot_add_markup():
    html = _hostile_report()._repr_html_()
    assert "<script" not in html and "\x1b" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;\\x1b[2J/kernel" in html
    tags = set(re.findall(r"</?([a-z0-9]+)", html))
    assert tags <= {"div", "h3", "h4", "p", "b", "table", "thead", "tbody", "tr", "th", "td",
                    "ul", "li", "details", "summary"}


def test_str_and_markdown_are_the_reports_the_cli_prints(hand_report):
    assert str(hand_report) == text.render(hand_report)
    assert hand_report._repr_markdown_() == markdown.render(hand_report)

    class Printer:
        said = ""

        def text(self, value):
            self.said += value

    printer = Printer()
    hand_report._repr_pretty_(printer, cycle=False)
    assert printer.said == text.render(hand_report)


def test_a_clean_report_passes_in_green(hand_report):
    clean = replace(hand_report, models=(hand_report.models[2],), stale_allows=(), fixed=())
    html = clean._repr_html_()
    assert "gradcheck passes" in html and "<h4>Findings</h4>" not in html


def test_showing_a_report_imports_no_tensorflow():
    script = ("import sys\n"
              "from gradcheck.report import Report, ModelReport\n"
              "r = Report(version='0', models=(ModelReport(source='m.keras', ok=True),))\n"
              "r._repr_html_(); r._repr_markdown_(); str(r)\n"
              "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'}))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True)
    assert run.stdout.strip() == "[]"
