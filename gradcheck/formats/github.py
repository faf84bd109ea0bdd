"""GitHub Actions workflow commands: one annotation per finding, source error and stale rule."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gradcheck.formats import escaping, words
from gradcheck.results import ModelReport

if TYPE_CHECKING:  # the formats read a Report; report.py shows itself through them
    from gradcheck.report import Report

STALE_ALLOW_TITLE = "gradcheck allow rule matched nothing"
FIXED_TITLE = "gradcheck baseline entry is fixed"


def render(report: Report, *, color: bool = False) -> str:
    """Render the report as ``::error``/``::warning``/``::notice`` lines; ``color`` is ignored."""
    lines: list[str] = []
    for model in report.models:
        lines += _model_lines(report, model)
    lines += [
        command("warning", words.stale_allow_message(r), title=STALE_ALLOW_TITLE)
        for r in report.stale_allows
    ]
    lines += [
        command("notice", words.fixed_message(e), file=words.artifact_path(e.source),
                title=FIXED_TITLE)
        for e in report.fixed
    ]
    return "".join(line + "\n" for line in lines)


def _model_lines(report: Report, model: ModelReport) -> list[str]:
    file = words.artifact_path(model.source)
    if not model.ok:
        message = words.source_error_message(model)
        return [command("error", message, file=file, title=words.SOURCE_ERROR_TITLE)]
    lines = [command("warning", text, file=file, title=words.ANALYSIS_WARNING_TITLE)
             for text in words.warning_messages(model)]
    for v in words.findings(model):
        level = "error" if report.failing(v) else "warning"
        lines.append(command(level, words.finding_message(v), **_where(v, file),
                             title=words.finding_title(v)))
    return lines


def _where(v, model_file: str) -> dict[str, str]:
    """Annotate the user's line when the finding has one, else the model file."""
    location = words.annotated_location(v)
    if location is None:
        return {"file": model_file}
    return {"file": location.path, "line": str(location.line)}


def command(name: str, message: str, **properties: str) -> str:
    """One workflow command, e.g. ``::error file=a.keras,title=T::message``, escaped."""
    props = ",".join(f"{key}={escape_property(_printable_lines(value))}"
                     for key, value in properties.items())
    head = f"{name} {props}" if props else name
    return f"::{head}::{escape_data(_printable_lines(message))}"


def _printable_lines(text: str) -> str:
    """Control characters escaped, except line breaks, which the runner's own escapes carry."""
    return "\n".join(escaping.printable(line) for line in text.split("\n"))


def escape_data(text: str) -> str:
    """Escape a command's message the way the Actions runner unescapes it."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """Escape a property value: the message escapes plus ``:`` and ``,``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")
