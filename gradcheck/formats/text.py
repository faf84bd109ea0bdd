"""Human-readable report, like a linter's: findings first, one line per clean source, a count.

By default a source with no findings gets one line (how it was judged), a source with
findings gets the table rows of its findings with their causes and remedies, a source that
could not be analyzed gets its error; ``verbose`` shows every variable of every source.
Nothing here depends on time or on the machine, so the report is byte-identical run to run.
Every name and message passes through ``escaping.printable``: a hostile name is shown escaped.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from gradcheck.diagnose import messages
from gradcheck.formats import escaping, words
from gradcheck.results import ModelReport, VariableResult

if TYPE_CHECKING:  # the formats read a Report; report.py shows itself through them
    from gradcheck.report import Report

_RED, _YELLOW, _GREEN, _RESET = "\033[31m", "\033[33m", "\033[32m", "\033[0m"
_COLUMNS = ("variable", "shape", "NONE", "ZERO", "status", "cause", "gate")
#: Names listed before one explanation shared by many variables; the table above has every row.
GROUP_NAMES_SHOWN = 8


def render(report: Report, *, color: bool = False, verbose: bool = False) -> str:
    """Render the report for a terminal; ANSI colours only when ``color`` is true.

    ``verbose`` shows every variable of every source, not only the findings.
    """
    paint = _painter(color)
    blocks = [_model_block(report, model, paint, verbose) for model in report.models]
    tail = [words.stale_allow_message(rule) for rule in report.stale_allows]
    tail += [words.fixed_message(entry) for entry in report.fixed]
    tail = [escaping.printable(line) for line in tail]
    bad = report.failures or report.errors
    tail.append(paint(words.summary_line(report), _RED if bad else _GREEN))
    return _join_blocks(blocks + ["\n".join(tail)]) + "\n"


def _join_blocks(blocks: list[str]) -> str:
    """One-line blocks (clean sources, errors) stack like a linter's lines; others get air."""
    out = blocks[0]
    for before, block in zip(blocks, blocks[1:]):
        tight = "\n" not in before and "\n" not in block
        out += ("\n" if tight else "\n\n") + block
    return out


def _painter(color: bool):
    def paint(text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if color and text else text

    return paint


def _model_block(report: Report, model: ModelReport, paint, verbose: bool) -> str:
    source = escaping.printable(model.source)
    if not model.ok:
        message = escaping.printable(words.error_message(model.error))
        if message.startswith(source):  # the engine's sentences name their source
            return f"{paint('error', _RED)}: {message}"
        return f"{source}: {paint('error', _RED)}: {message}"
    found = words.findings(model)
    notes = [f"  note: {escaping.printable(note)}" for note in model.notes]
    notes += [paint(f"  warning: {escaping.printable(text)}", _YELLOW) for text in model.warnings]
    if model.inputs and (verbose or notes or found):  # the batch behind a finding or a note
        notes.append(f"  inputs: {escaping.printable(words.inputs_line(model))}")
    if not found and not verbose:
        clean = escaping.printable(words.clean_message(model))
        return "\n".join([f"{source}: {paint('ok', _GREEN)}, {clean}", *notes])
    lines = [f"{source}: {escaping.printable(words.model_description(model))}"]
    shown = model.variables if verbose else found
    if shown:
        lines += _table(report, shown, paint)
    lines += _cause_summary(found, most=None if verbose else GROUP_NAMES_SHOWN)
    lines += _grouped_findings(found, most=None if verbose else GROUP_NAMES_SHOWN)
    return "\n".join(lines + notes)


def _table(report: Report, variables, paint) -> list[str]:
    rows = [_COLUMNS] + [_row(report, v) for v in variables]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]

    def line(row) -> str:
        return "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()

    out = [line(rows[0])]
    for v, row in zip(variables, rows[1:]):
        out.append(paint(line(row), _row_color(report, v)))
    return out


def _row(report: Report, v: VariableResult) -> tuple[str, ...]:
    under_none, under_zero = words.gradient_cells(v)
    cells = (v.path, str(tuple(v.shape)), under_none, under_zero, v.status.value,
             words.cause_label(v), words.gate_label(report, v))
    return tuple(escaping.printable(cell) for cell in cells)


def _row_color(report: Report, v: VariableResult) -> str:
    if report.failing(v):
        return _RED
    if report.warning(v):
        return _YELLOW
    return _GREEN


def _cause_summary(found: list[VariableResult], most: int | None) -> list[str]:
    """One line per kind of finding, naming the layers it affects (the first ``most``)."""
    by_kind: dict[str, list[VariableResult]] = defaultdict(list)
    for v in found:
        by_kind[messages.rule_for(v).name].append(v)
    lines = []
    for kind, group in by_kind.items():
        names = list(dict.fromkeys(v.layer for v in group))
        if most is not None and len(names) > most:
            names = names[:most] + [f"… ({len(names) - most} more)"]
        layers = ", ".join(names)
        line = f"  {kind}: {words.plural(len(group), 'variable')} in {layers}"
        lines.append(escaping.printable(line))
    return lines


def _grouped_findings(found: list[VariableResult], most: int | None) -> list[str]:
    """Each explanation once, after the variables it applies to (a layer's kernel and bias)."""
    return [f"  {escaping.printable(message)}"
            for _, message in words.finding_groups(found, most=most)]
