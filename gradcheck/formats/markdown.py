"""GitHub-flavoured Markdown for a pull request comment or a GitHub Actions job summary.

Findings come first, each source's rows with their causes and remedies; then source errors,
stale allow rules and fixed baseline entries; then the clean sources, one line each; the full
per-variable table last, collapsed in ``<details>``.  Every name and message passes through
``escaping.markdown_text``, so nothing in a model file can add markup, HTML or a table cell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gradcheck.diagnose import messages
from gradcheck.formats import escaping, words
from gradcheck.results import ModelReport, VariableResult, exit_code

if TYPE_CHECKING:  # the formats read a Report; report.py shows itself through them
    from gradcheck.report import Report

_FULL_COLUMNS = ("source", "variable", "shape", "NONE", "ZERO", "status", "cause", "gate")
ERRORS_HEADING = "### Sources that could not be analyzed"
TABLE_LEFT_OUT = ("*The table of every variable is left out: it is too large for a job summary. "
                  "`--format markdown` or `--format json` prints it.*")


def render(report: Report, *, color: bool = False, full_table: bool = True) -> str:
    """Render the report as Markdown; ``color`` is ignored.

    ``full_table=False`` leaves out the table of every variable (for a size-limited summary);
    the findings, errors and clean sources are always there.
    """
    sections = [_title(report)]
    with_findings = [m for m in report.models if m.ok and words.findings(m)]
    if with_findings:
        sections.append("### Findings")
        sections += [_findings_block(report, model) for model in with_findings]
    if report.errors:
        sections.append(ERRORS_HEADING)
        sections.append(_bullets(words.source_error_message(m) for m in report.errors))
    cleanup = [words.stale_allow_message(r) for r in report.stale_allows]
    cleanup += [words.fixed_message(e) for e in report.fixed]
    if cleanup:
        sections += ["### To clean up", _bullets(cleanup)]
    clean = [m for m in report.models if m.ok and not words.findings(m)]
    if clean:
        sections += ["### Clean", "\n".join(_clean_line(m) for m in clean)]
    if any(m.variables for m in report.models):
        sections.append(_details(report) if full_table else TABLE_LEFT_OUT)
    return "\n\n".join(sections) + "\n"


def _title(report: Report) -> str:
    verdict = "fails" if report.failures or report.errors else "passes"
    return (f"## gradcheck {verdict}\n\n**{escaping.markdown_text(words.summary_line(report))}**"
            f" (exit code {int(exit_code(report))})")


def _findings_block(report: Report, model: ModelReport) -> str:
    found = words.findings(model)
    head = (f"**{escaping.markdown_text(model.source)}**: "
            f"{escaping.markdown_text(words.model_description(model))}")
    rows = [words.finding_row(report, v) for v in found]
    explanations = [_explained(report, group, message)
                    for group, message in words.finding_groups(found)]
    notes = [f"- note: {escaping.markdown_text(note)}" for note in model.notes]
    notes += [f"- **warning**: {escaping.markdown_text(text)}" for text in model.warnings]
    return "\n\n".join([head, _table(words.FINDING_COLUMNS, rows), "\n".join(explanations + notes)])



def _explained(report: Report, group: tuple[VariableResult, ...], message: str) -> str:
    first = group[0]
    rule = messages.rule_for(first)
    gate = "FAIL" if report.failing(first) else "warning"
    return f"- **{gate}** {rule.id} {rule.name}: {escaping.markdown_text(message)}"


def _clean_line(model: ModelReport) -> str:
    notes = "".join(f" (note: {escaping.markdown_text(n)})" for n in model.notes)
    notes += "".join(f" (**warning**: {escaping.markdown_text(w)})" for w in model.warnings)
    return (f"- {escaping.markdown_text(model.source)}: ok, "
            f"{escaping.markdown_text(words.clean_message(model))}{notes}")


def _details(report: Report) -> str:
    rows = [(model.source, *_full_row(report, v))
            for model in report.models for v in model.variables]
    summary = f"All {words.plural(len(rows), 'variable')}"
    return (f"<details>\n<summary>{summary}</summary>\n\n"
            f"{_table(_FULL_COLUMNS, rows)}\n\n</details>")


def _full_row(report: Report, v: VariableResult) -> tuple[str, ...]:
    under_none, under_zero = words.gradient_cells(v)
    return (v.path, str(tuple(v.shape)), under_none, under_zero, v.status.value,
            words.cause_label(v), words.gate_label(report, v))


def _table(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = [_table_line(columns), "|" + "---|" * len(columns)]
    lines += [_table_line(tuple(escaping.markdown_text(cell) for cell in row)) for row in rows]
    return "\n".join(lines)


def _table_line(cells: tuple[str, ...]) -> str:
    return "| " + " | ".join(cells) + " |"


def _bullets(messages) -> str:
    return "\n".join(f"- {escaping.markdown_text(message)}" for message in messages)
