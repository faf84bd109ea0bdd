"""What every output format says the same way: rules, titles, messages, counts.

Formats differ only in layout; the words and the numbers come from here so that
a finding reads the same in the terminal, in a PR annotation and in SARIF.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gradcheck.problems import printable  # noqa: F401  (the formats' escaping)
from gradcheck.report import (
    AllowRule,
    BaselineEntry,
    CauseKind,
    InputUsed,
    ModelReport,
    Report,
    SourceError,
    SourceLocation,
    Status,
    VariableResult,
    exit_code,
)

INFORMATION_URI = "https://github.com/gradcheck/gradcheck"


@dataclass(frozen=True)
class Rule:
    """One kind of finding, with a stable id for SARIF and annotations."""

    id: str  #: stable code, e.g. ``GC003``
    name: str  #: short machine name, e.g. ``blocked``
    short: str  #: one-line description
    full: str  #: what happened
    help: str  #: what to do about it (the remedy)


UNUSED = Rule(
    "GC001",
    "unused",
    "Trainable variable is never read in the training step.",
    "The variable is never read while computing the loss, so it can never learn.",
    "Use the weight in the layer's call(), or stop creating it (or make it non-trainable).",
)
DETACHED = Rule(
    "GC002",
    "detached",
    "Trainable variable is read, but nothing it feeds reaches the loss.",
    "The variable feeds only outputs or ops that the loss never uses, e.g. an output without "
    "a loss.",
    "Give that output a loss (or a non-zero loss weight), or drop the unused head.",
)
BLOCKED = Rule(
    "GC003",
    "blocked",
    "Every path from the trainable variable to the loss is cut by an op with no gradient.",
    "A path to the loss exists, but an op such as StopGradient, ArgMax, Round or a Cast to int "
    "passes no gradient back.",
    "Remove an unintended StopGradient (or allow the finding if the freeze is intended); for "
    "Round/ArgMax/Cast use a straight-through estimator (x + stop_gradient(round(x) - x)) or a "
    "soft relaxation (softmax instead of argmax).",
)
UNKNOWN = Rule(
    "GC004",
    "unknown",
    "The tape finds no gradient, but the op graph finds a path to the loss.",
    "tape.gradient returned None although the traced op graph connects the variable to the loss; "
    "the tape is trusted.",
    "Inspect the layer for ops without registered gradients or for tape-external computation, "
    "and report the model to gradcheck if the cause is unclear.",
)
ZERO = Rule(
    "GC005",
    "zero",
    "The gradient of the trainable variable is exactly zero on the synthetic input.",
    "The variable is connected to the loss, but its gradient is all zeros (dead ReLU, "
    "cancellation, or a zero loss weight).",
    "Check the activations, initializers and loss weights; try --input overrides, or allow the "
    "finding if it is expected.",
)
NONFINITE = Rule(
    "GC006",
    "nonfinite",
    "The gradient of the trainable variable contains NaN or Inf.",
    "The training step is already numerically broken on the synthetic input.",
    "Look for log(0), division by zero or overflow in the loss and layers, and check the input "
    "ranges.",
)
NOT_TRAINED = Rule(
    "GC007",
    "not-trained",
    "The training step never computes or never applies a gradient for the trainable variable.",
    "The model's train_step does not pass the variable to tape.gradient, or does not hand its "
    "gradient to an optimizer, so fit never changes it.",
    "Add it to the variables passed to tape.gradient and to the optimizer (zip each gradient "
    "with its own variable), or make it non-trainable if it is frozen on purpose.",
)
SOURCE_ERROR = Rule(
    "GC100",
    "source-error",
    "gradcheck could not analyze the source.",
    "The model could not be loaded or the training step could not be run.",
    "Fix the problem named in the message (path, custom objects, inputs), or run with --debug.",
)

RULES: tuple[Rule, ...] = (UNUSED, DETACHED, BLOCKED, UNKNOWN, ZERO, NONFINITE, NOT_TRAINED,
                           SOURCE_ERROR)
_BY_CAUSE = {
    CauseKind.UNUSED: UNUSED,
    CauseKind.DETACHED: DETACHED,
    CauseKind.BLOCKED: BLOCKED,
    CauseKind.UNKNOWN: UNKNOWN,
    CauseKind.NOT_TRAINED: NOT_TRAINED,
}
SOURCE_ERROR_TITLE = "gradcheck could not analyze the source"


def rule_for(result: VariableResult) -> Rule:
    """The rule a non-connected variable breaks (an unconnected one without a cause is unknown)."""
    if result.status is Status.ZERO:
        return ZERO
    if result.status is Status.NONFINITE:
        return NONFINITE
    if result.cause is None:
        return UNKNOWN
    return _BY_CAUSE[result.cause.kind]


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
    where = f"at {location_text(location)}: " if location is not None else ""
    if result.cause is not None and result.cause.message:
        return where + result.cause.message
    if result.status is Status.ZERO and result.zero_reason is not None:
        return f"{where}zero gradient: {result.zero_reason.message}"
    rule = rule_for(result)
    return f"{rule.full} {rule.help}"


def finding_location(result: VariableResult) -> SourceLocation | None:
    """The line of user code a finding points at (``cause.location``, ``zero_reason.location``)."""
    if result.cause is not None:
        return result.cause.location
    return result.zero_reason.location if result.zero_reason is not None else None


def location_text(location: SourceLocation) -> str:
    """``models/layers.py:14 (call)``: path and line as editors and CI logs link them."""
    return f"{location.path}:{location.line} ({location.function})"


def gate_note(result: VariableResult) -> str:
    """Why a finding does not fail: ``allowed: <reason>``, ``allowed``, ``baseline`` or ``""``."""
    if result.allowed is not None:
        return f"allowed: {result.allowed}" if result.allowed else "allowed"
    if result.baselined:
        return "baseline"
    return ""


def finding_title(result: VariableResult) -> str:
    """A short title for an annotation: rule id, variable and status."""
    return f"{rule_for(result).id} {result.path} {result.status.value}"


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


# --- what a hostile name can never do to a report ---------------------------------------------
# File, layer and variable names and the messages that quote them come from model files that
# arrive in pull requests.  A newline would fake a report line, an ESC sequence could clear the
# terminal or recolour a finding, and XML 1.0 cannot hold most control characters at all.



# Backslash-escaped: emphasis, code, links, HTML and entities, table cells.  An underscore
# between two letters or digits opens no emphasis in CommonMark and is left alone, so that
# ``dense_1/kernel`` reads as itself in the raw Markdown too.
_MARKDOWN_INLINE = re.compile(r"[\\`*_\[\]<>&|~]")


def _markdown_escape(match: re.Match) -> str:
    if match.group() == "_":
        before = match.string[:match.start()].rstrip("_")[-1:]
        after = match.string[match.end():].lstrip("_")[:1]
        if before.isalnum() and after.isalnum():
            return "_"
    return f"\\{match.group()}"


# Escaped at the start of the text, where they would open a heading, a list or a rule.
_MARKDOWN_BLOCK_START = frozenset("#-+=")
_ORDERED_ITEM = re.compile(r"^([0-9]+)([.)])")


def markdown_text(text: str) -> str:
    """``text`` as literal Markdown: it renders as itself, in a paragraph, a list or a table cell.

    Non-printable characters are escaped first (``printable``), then every character that
    Markdown or HTML would interpret is backslash-escaped (CommonMark allows that for any ASCII
    punctuation), including ``|``, which would otherwise split a table cell.
    """
    escaped = _MARKDOWN_INLINE.sub(_markdown_escape, printable(text))
    body = escaped.lstrip(" ")  # up to three spaces may stand before a list marker
    if body[:1] and body[0] in _MARKDOWN_BLOCK_START:
        indent = escaped[:len(escaped) - len(body)]
        return f"{indent}\\{body}"
    return _ORDERED_ITEM.sub(r"\1\\\2", escaped)  # "1." would open an ordered list


def model_description(model: ModelReport) -> str:
    """How a source was judged: ``model 'toy', loss compiled (out_a: mse), 57 ops``."""
    parts = [f"model '{model.model_name}'"] if model.model_name else []
    if model.loss is not None and model.loss.value in ("train_step", "compute_loss"):
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
