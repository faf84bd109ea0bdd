"""Human-readable report: a table per source, cause summaries, remedies, a final count."""

from __future__ import annotations

from collections import defaultdict

from gradcheck.formats import _common
from gradcheck.report import ModelReport, Report, Status, VariableResult

_RED, _YELLOW, _GREEN, _RESET = "\033[31m", "\033[33m", "\033[32m", "\033[0m"
_COLUMNS = ("variable", "shape", "NONE", "ZERO", "status", "cause", "gate")


def render(report: Report, *, color: bool = False) -> str:
    """Render the report for a terminal; ANSI colours only when ``color`` is true."""
    paint = _painter(color)
    blocks = [_model_block(report, model, paint) for model in report.models]
    tail = [_common.stale_allow_message(rule) for rule in report.stale_allows]
    tail += [_common.fixed_message(entry) for entry in report.fixed]
    bad = report.failures or report.errors
    tail.append(paint(_common.summary_line(report), _RED if bad else _GREEN))
    return "\n\n".join(blocks + ["\n".join(tail)]) + "\n"


def _painter(color: bool):
    def paint(text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if color and text else text

    return paint


def _model_block(report: Report, model: ModelReport, paint) -> str:
    if not model.ok:
        message = _common.error_message(model.error)
        if message.startswith(model.source):  # the engine's sentences name their source
            return f"{paint('error', _RED)}: {message}"
        return f"{model.source}: {paint('error', _RED)}: {message}"
    lines = [_header(model)]
    if model.variables:
        lines += _table(report, model.variables, paint)
    lines += _cause_summary(model)
    lines += _grouped_findings(model)
    lines += [f"  note: {note}" for note in model.notes]
    return "\n".join(lines)


def _header(model: ModelReport) -> str:
    parts = [f"model '{model.model_name}'"] if model.model_name else []
    if model.loss is not None and model.loss.value in ("train_step", "compute_loss"):
        parts.append(model.loss_detail)  # already says how: "train_step: 2 gradient calls (…)"
    elif model.loss is not None:
        detail = f" ({model.loss_detail})" if model.loss_detail else ""
        parts.append(f"loss {model.loss.value}{detail}")
    parts.append(f"{model.op_count} ops")
    return f"{model.source}: " + ", ".join(parts)


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
    under_none = "None" if v.none else "tensor"
    if v.zero:
        under_zero = "zeros"
    elif v.status is Status.NONFINITE:
        under_zero = "nonfinite"
    else:
        under_zero = "nonzero"
    return (v.path, str(tuple(v.shape)), under_none, under_zero, v.status.value,
            _common.cause_label(v), _gate_cell(report, v))


def _gate_cell(report: Report, v: VariableResult) -> str:
    if report.failing(v):
        return "FAIL"
    return _common.gate_note(v) or ("warn" if report.warning(v) else "")


def _row_color(report: Report, v: VariableResult) -> str:
    if report.failing(v):
        return _RED
    if report.warning(v):
        return _YELLOW
    return _GREEN


def _cause_summary(model: ModelReport) -> list[str]:
    """One line per kind of finding, naming the layers it affects."""
    by_kind: dict[str, list[VariableResult]] = defaultdict(list)
    for v in _common.findings(model):
        by_kind[_common.rule_for(v).name].append(v)
    lines = []
    for kind, found in by_kind.items():
        layers = ", ".join(dict.fromkeys(v.layer for v in found))
        lines.append(f"  {kind}: {_common.plural(len(found), 'variable')} in {layers}")
    return lines


def _grouped_findings(model: ModelReport) -> list[str]:
    """Each explanation once, after the variables it applies to (a layer's kernel and bias)."""
    groups: dict[tuple[str, str], list[VariableResult]] = defaultdict(list)
    for v in _common.findings(model):
        groups[(_common.explanation(v), _common.gate_note(v))].append(v)
    lines = []
    for (text, note), found in groups.items():
        if len(found) == 1:
            lines.append(f"  {_common.finding_message(found[0])}")
        else:
            suffix = f" ({note})" if note else ""
            lines.append(f"  {', '.join(v.path for v in found)}: {text}{suffix}")
    return lines
