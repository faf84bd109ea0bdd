"""HTML for a notebook: what ``Report._repr_html_`` shows in Jupyter.

The same sections, words and order as the Markdown report — the verdict and counts, then the
findings of each source with their causes and remedies, source errors, what to clean up, the
clean sources, and every variable in a collapsed table — as one self-contained ``<div>``.
Names come from model files, which are not trusted: every text passes ``escaping.printable``
(control characters as escapes) and ``html.escape``, so a layer name cannot add markup or script.
Not a ``--format``: a terminal or CI has no use for it.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from gradcheck.diagnose import messages
from gradcheck.formats import escaping, words
from gradcheck.results import ModelReport, VariableResult, exit_code

if TYPE_CHECKING:  # the formats read a Report; report.py shows itself through them
    from gradcheck.report import Report

_FULL_COLUMNS = ("source", "variable", "shape", "NONE", "ZERO", "status", "cause", "gate")
_GATE_COLOURS = {"FAIL": "#c62828", "warn": "#ef6c00"}


def render(report: Report, *, color: bool = False) -> str:
    """Render the report as an HTML fragment; ``color`` is ignored (it is always coloured)."""
    parts = [_title(report)]
    with_findings = [m for m in report.models if m.ok and words.findings(m)]
    if with_findings:
        parts.append("<h4>Findings</h4>")
        parts += [_findings_block(report, model) for model in with_findings]
    if report.errors:
        parts.append("<h4>Sources that could not be analyzed</h4>")
        parts.append(_list(words.source_error_message(m) for m in report.errors))
    cleanup = [words.stale_allow_message(r) for r in report.stale_allows]
    cleanup += [words.fixed_message(e) for e in report.fixed]
    if cleanup:
        parts += ["<h4>To clean up</h4>", _list(cleanup)]
    clean = [m for m in report.models if m.ok and not words.findings(m)]
    if clean:
        parts += ["<h4>Clean</h4>", _list(_clean_line(m) for m in clean)]
    if any(m.variables for m in report.models):
        parts.append(_details(report))
    return '<div class="gradcheck-report">\n' + "\n".join(parts) + "\n</div>\n"


def text(value: str) -> str:
    """``value`` as literal HTML text: control characters escaped, then markup."""
    return html.escape(escaping.printable(value), quote=True)


def _title(report: Report) -> str:
    bad = bool(report.failures or report.errors)
    colour = "#c62828" if bad else "#2e7d32"
    verdict = "fails" if bad else "passes"
    return (f'<h3 style="color:{colour}">gradcheck {verdict}</h3>\n'
            f"<p><b>{text(words.summary_line(report))}</b> "
            f"(exit code {int(exit_code(report))})</p>")


def _findings_block(report: Report, model: ModelReport) -> str:
    found = words.findings(model)
    rows = [words.finding_row(report, v) for v in found]
    explanations = [_explained(report, group, message)
                    for group, message in words.finding_groups(found)]
    notes = [f"note: {text(note)}" for note in model.notes]
    notes += [f"<b>warning</b>: {text(w)}" for w in model.warnings]
    if model.inputs:
        notes.append(f"inputs: {text(words.inputs_line(model))}")
    items = "".join(f"<li>{item}</li>" for item in explanations + notes)
    return (f"<p><b>{text(model.source)}</b>: {text(words.model_description(model))}</p>\n"
            f"{_table(words.FINDING_COLUMNS, rows)}\n<ul>{items}</ul>")



def _explained(report: Report, group: tuple[VariableResult, ...], message: str) -> str:
    first = group[0]
    rule = messages.rule_for(first)
    gate = "FAIL" if report.failing(first) else "warning"
    colour = _GATE_COLOURS["FAIL" if gate == "FAIL" else "warn"]
    return (f'<b style="color:{colour}">{gate}</b> {text(rule.id)} {text(rule.name)}: '
            f"{text(message)}")


def _clean_line(model: ModelReport) -> str:
    notes = "".join(f" (note: {n})" for n in model.notes)
    notes += "".join(f" (warning: {w})" for w in model.warnings)
    return f"{model.source}: ok, {words.clean_message(model)}{notes}"


def _details(report: Report) -> str:
    rows = [(model.source, *_full_row(report, v))
            for model in report.models for v in model.variables]
    summary = f"All {words.plural(len(rows), 'variable')}"
    return f"<details><summary>{summary}</summary>\n{_table(_FULL_COLUMNS, rows)}\n</details>"


def _full_row(report: Report, v: VariableResult) -> tuple[str, ...]:
    under_none, under_zero = words.gradient_cells(v)
    return (v.path, str(tuple(v.shape)), under_none, under_zero, v.status.value,
            words.cause_label(v), words.gate_label(report, v))


def _table(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """A plain table (a notebook styles it); only the gate column is coloured."""
    head = "".join(f"<th>{text(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(cell) for cell in row) + "</tr>\n" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


def _cell(value: str) -> str:
    colour = _GATE_COLOURS.get(value)
    style = f' style="color:{colour}"' if colour else ""
    return f"<td{style}>{text(value)}</td>"


def _list(messages) -> str:
    return "<ul>" + "".join(f"<li>{text(m)}</li>" for m in messages) + "</ul>"
