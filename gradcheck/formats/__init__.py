"""Output formats: one module per format, each with ``render(report, *, color=False) -> str``.

``html`` is not a ``Format``: it is what a notebook shows (``Report._repr_html_``).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from gradcheck.formats import github, json, junit, markdown, sarif, text

if TYPE_CHECKING:  # the formats read a Report; report.py shows itself through them
    from gradcheck.report import Report


class Format(str, enum.Enum):
    """The output formats ``--format`` accepts."""

    TEXT = "text"
    JSON = "json"
    GITHUB = "github"
    JUNIT = "junit"
    SARIF = "sarif"
    MARKDOWN = "markdown"


_RENDERERS = {
    Format.TEXT: text.render,
    Format.JSON: json.render,
    Format.GITHUB: github.render,
    Format.JUNIT: junit.render,
    Format.SARIF: sarif.render,
    Format.MARKDOWN: markdown.render,
}


def render(report: Report, fmt: Format, *, color: bool = False, verbose: bool = False) -> str:
    """Render ``report`` in format ``fmt``; ``color`` only affects ``text``.

    ``verbose`` makes ``text`` show every variable; the other formats are always complete.
    """
    fmt = Format(fmt)
    if fmt is Format.TEXT:
        return text.render(report, color=color, verbose=verbose)
    return _RENDERERS[fmt](report, color=color)
