"""Output formats: one module per format, each with ``render(report, *, color=False) -> str``."""

from __future__ import annotations

import enum

from gradcheck.formats import github, json, junit, sarif, text
from gradcheck.report import Report


class Format(str, enum.Enum):
    """The output formats ``--format`` accepts."""

    TEXT = "text"
    JSON = "json"
    GITHUB = "github"
    JUNIT = "junit"
    SARIF = "sarif"


_RENDERERS = {
    Format.TEXT: text.render,
    Format.JSON: json.render,
    Format.GITHUB: github.render,
    Format.JUNIT: junit.render,
    Format.SARIF: sarif.render,
}


def render(report: Report, fmt: Format, *, color: bool = False) -> str:
    """Render ``report`` in format ``fmt``; ``color`` only affects ``text``."""
    return _RENDERERS[Format(fmt)](report, color=color)
