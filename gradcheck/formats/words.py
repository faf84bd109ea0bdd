"""What every output format says the same way: titles, messages, counts.

Formats differ only in layout; the words and the numbers come from here so that
a finding reads the same in the terminal, in a PR annotation and in SARIF.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gradcheck.diagnose import messages
from gradcheck.locations import where_text
from gradcheck.results import (
    AllowRule,
    BaselineEntry,
    CauseKind,
    InputUsed,
    ModelReport,
    SourceError,
    SourceLocation,
    Status,
    VariableResult,
    exit_code,
)

if TYPE_CHECKING:  # the formats read a Report; report.py shows itself through them
    from gradcheck.report import Report

INFORMATION_URI = "https://github.com/gradcheck/gradcheck"


SOURCE_ERROR_TITLE = "gradcheck could not analyze the source"


def cause_label(result: VariableResult) -> str:
    """A few words for the cause column: ``blocked at ArgMax in dense_1``, ``unused``, ``""``;
    the detail or zero reason follows in parentheses: ``unused (layer-not-called)``."""
    cause = result.cause
    if cause is None:
        return f"({result.zero_reason.kind.value})" if result.zero_reason is not None else ""
    detail = f" ({cause.detail.value})" if cause.detail is not None else ""
    if cause.kind is CauseKind.BLOCKED and cause.op_type:
        where = f" in {cause.layer}" if cause.layer else ""
        return f"blocked at {cause.op_type}{where}{detail}"
    return cause.kind.value + detail


def explanation(result: VariableResult) -> str:
    """The finding's sentence, ending with the remedy; led by the user's line when there is one."""
    location = finding_location(result)
    where = f"{where_text(location)}: " if location is not None else ""
    if result.cause is not None and result.cause.message:
        return where + result.cause.message
    if result.status is Status.ZERO and result.zero_reason is not None:
        return f"{where}zero gradient: {result.zero_reason.message}"
    rule = messages.rule_for(result)
    return f"{rule.full} {rule.help}"


def finding_location(result: VariableResult) -> SourceLocation | None:
    """The line of user code a finding points at (``cause.location``, ``zero_reason.location``)."""
    if result.cause is not None:
        return result.cause.location
    return result.zero_reason.location if result.zero_reason is not None else None


def annotated_location(result: VariableResult) -> SourceLocation | None:
    """Where an annotation (SARIF, GitHub) points: the finding's line in the user's own code,
    else the user's own ``tape.gradient`` call that judged the variable (a model's own training
    step).  A line inside an installed package is never the annotated file (the repository does
    not hold it): the message names it, SARIF relates it."""
    location = finding_location(result)
    if location is not None and location.package is None:
        return location
    site = result.gradient_call.site if result.gradient_call is not None else None
    return site if site is not None and site.package is None else None


def gate_note(result: VariableResult) -> str:
    """Why a finding does not fail: ``allowed: <reason>``, ``allowed``, ``baseline`` or ``""``."""
    if result.allowed is not None:
        return f"allowed: {result.allowed}" if result.allowed else "allowed"
    if result.baselined:
        return "baseline"
    return ""


def finding_title(result: VariableResult) -> str:
    """A short title for an annotation: rule id, variable and status."""
    return f"{messages.rule_for(result).id} {result.path} {result.status.value}"


def finding_message(result: VariableResult) -> str:
    """The full one-line message of a finding: variable, explanation, and gate note if any."""
    note = gate_note(result)
    suffix = f" ({note})" if note else ""
    return f"{_named(result.path, explanation(result))}{suffix}"


def error_message(error: SourceError | None) -> str:
    """The one-sentence message of a source error."""
    return error.message if error is not None else "the source could not be analyzed."


def source_error_message(model: ModelReport) -> str:
    """A source error's message, naming the source."""
    return _named(model.source, error_message(model.error))


def _named(name: str, text: str) -> str:
    # Engine messages usually name their subject already; never say it twice.
    return text if name in text else f"{name}: {text}"


def stale_allow_message(rule: AllowRule) -> str:
    """The message for an allow rule that matched nothing."""
    return f"allow rule '{allow_text(rule)}' matched nothing: remove it"


def fixed_message(entry: BaselineEntry) -> str:
    """The message for a baseline entry whose finding is gone."""
    return f"baseline entry {entry.source}::{entry.path} ({entry.status}) is fixed: remove it"


def allow_text(rule: AllowRule) -> str:
    """An allow rule written back in ``[SOURCE::]PATTERN[=REASON]`` syntax."""
    scope = f"{rule.source}::" if rule.source else ""
    reason = f"={rule.reason}" if rule.reason else ""
    return f"{scope}{rule.pattern}{reason}"


_FACTORY = re.compile(r"^(?P<file>.+\.py):[A-Za-z_][A-Za-z0-9_.]*$")


def artifact_path(source: str) -> str:
    """The file a source lives in: ``models/build.py:make`` -> ``models/build.py``."""
    match = _FACTORY.match(source)
    return match.group("file") if match else source


@dataclass(frozen=True)
class Counts:
    """The numbers every format must agree on."""

    sources: int
    variables: int
    failing: int
    warnings: int
    errors: int


def counts(report: Report) -> Counts:
    """Count sources, variables, failing variables, warnings and source errors."""
    return Counts(
        sources=len(report.models),
        variables=sum(len(m.variables) for m in report.models),
        failing=len(report.failures),
        warnings=len(report.warnings),
        errors=len(report.errors),
    )


def summary_line(report: Report) -> str:
    """``3 sources, 12 variables, 2 failing, 1 warning, 1 error``."""
    c = counts(report)
    return ", ".join(
        [
            plural(c.sources, "source"),
            plural(c.variables, "variable"),
            f"{c.failing} failing",
            plural(c.warnings, "warning"),
            plural(c.errors, "error"),
        ]
    )


def findings(model: ModelReport) -> list[VariableResult]:
    """The non-connected variables of one model, in report order."""
    return [v for v in model.variables if v.status is not Status.CONNECTED]


def summary_dict(report: Report) -> dict[str, int]:
    """The summary as a plain dict (json, sarif properties)."""
    c = counts(report)
    return {
        "sources": c.sources,
        "variables": c.variables,
        "failing": c.failing,
        "warnings": c.warnings,
        "errors": c.errors,
        "exit_code": int(exit_code(report)),
    }


def plural(n: int, word: str) -> str:
    """``1 error``, ``2 errors``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def model_description(model: ModelReport) -> str:
    """How a source was judged: ``model 'toy', loss compiled (out_a: mse), 57 ops``."""
    what = "step" if model.loss is not None and model.loss.value == "loop" else "model"
    parts = [f"{what} '{model.model_name}'"] if model.model_name else []
    if model.loss is not None and model.loss.value in ("train_step", "compute_loss", "loop"):
        parts.append(model.loss_detail)  # already says how: "train_step: 2 gradient calls (…)"
    elif model.loss is not None:
        detail = f" ({model.loss_detail})" if model.loss_detail else ""
        parts.append(f"loss {model.loss.value}{detail}")
    parts.append(f"{model.op_count} ops")
    return ", ".join(parts)


def clean_message(model: ModelReport) -> str:
    """What a source with no findings gets said: ``6 variables connected; model …``."""
    count = plural(len(model.variables), "variable") + (" connected" if model.variables else "")
    return f"{count}; {model_description(model)}"


def finding_groups(found: list[VariableResult], *, most: int | None = None
                   ) -> list[tuple[tuple[VariableResult, ...], str]]:
    """Findings that share an explanation and gate note, in report order, each with its message.

    A layer's kernel and bias usually fail for one reason; the reason is said once, after the
    names of all the variables it applies to (the first ``most`` of them, and how many more).
    """
    groups: dict[tuple[str, str], list[VariableResult]] = {}
    for v in found:
        groups.setdefault((explanation(v), gate_note(v)), []).append(v)
    said = []
    for (text, note), group in groups.items():
        if len(group) == 1:
            said.append(((group[0],), finding_message(group[0])))
        else:
            suffix = f" ({note})" if note else ""
            names = [v.path for v in group]
            if most is not None and len(names) > most:
                names = names[:most] + [f"… ({len(group) - most} more)"]
            said.append((tuple(group), f"{', '.join(names)}: {text}{suffix}"))
    return said


#: The columns of a findings table (markdown, HTML): one ``finding_row`` per finding.
FINDING_COLUMNS = ("variable", "shape", "status", "cause", "gate")


def finding_row(report: Report, result: VariableResult) -> tuple[str, ...]:
    """One finding's cells, unescaped, in ``FINDING_COLUMNS`` order."""
    return (result.path, str(tuple(result.shape)), result.status.value, cause_label(result),
            gate_label(report, result))


def gate_label(report: Report, result: VariableResult) -> str:
    """The gate column: ``FAIL``, ``allowed: <reason>``, ``baseline``, ``warn`` or ``""``."""
    if report.failing(result):
        return "FAIL"
    return gate_note(result) or ("warn" if report.warning(result) else "")


def gradient_cells(result: VariableResult) -> tuple[str, str]:
    """The NONE and ZERO columns: ``None``/``tensor`` and ``zeros``/``nonzero``/``nonfinite``."""
    under_none = "None" if result.none else "tensor"
    if result.zero:
        return under_none, "zeros"
    return under_none, "nonfinite" if result.status is Status.NONFINITE else "nonzero"

ANALYSIS_WARNING_TITLE = "gradcheck judged the model by a weaker loss"


def input_text(used: InputUsed) -> str:
    """``token_ids (2, 8) int32 in [1, 31]``: one input as the step ran on it."""
    values = f" in [{used.low}, {used.high}]" if used.low is not None else ""
    return f"{used.name} {tuple(used.shape)} {used.dtype}{values}"


def inputs_line(model: ModelReport) -> str:
    """Every input the step ran on, by name, shape, dtype and value range ("" if unknown)."""
    return ", ".join(input_text(used) for used in model.inputs)


def warning_messages(model: ModelReport) -> list[str]:
    """The model's analysis warnings, each naming the source (every format shows them)."""
    return [_named(model.source, warning) for warning in model.warnings]
