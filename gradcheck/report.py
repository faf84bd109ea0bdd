"""The ``Report`` of one run: every source's results, gated, and how it shows itself.

``gradcheck.check`` and the CLI return it; the formats render it.  It shows itself as the text
report (``str``, IPython) and as HTML or Markdown in a notebook, through the formats (imported
lazily: no TensorFlow).  Its parts are plain data in ``gradcheck.results`` (also importable from
here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gradcheck.results import (  # the report's parts, importable from here too
    AllowRule,
    BaselineEntry,
    Cause,
    CauseDetail,
    CauseKind,
    Cut,
    ExitCode,
    GradientCallSite,
    InputUsed,
    LossKind,
    ModelReport,
    SourceError,
    SourceLocation,
    Status,
    VariableResult,
    ZeroKind,
    ZeroReason,
    exit_code,
)

__all__ = [
    "Report", "Status", "CauseKind", "LossKind", "Cut", "SourceLocation", "CauseDetail",
    "ZeroKind", "ZeroReason", "Cause", "GradientCallSite", "VariableResult", "SourceError",
    "InputUsed", "ModelReport", "AllowRule", "BaselineEntry", "ExitCode", "exit_code",
]


@dataclass(frozen=True)
class Report:
    """Everything one run found."""

    version: str
    models: tuple[ModelReport, ...]
    fail_on: frozenset[Status] = field(default_factory=lambda: frozenset({Status.UNCONNECTED}))
    stale_allows: tuple[AllowRule, ...] = ()  #: allow rules that matched no variable
    fixed: tuple[BaselineEntry, ...] = ()  #: baseline entries no longer found

    def failing(self, result: VariableResult) -> bool:
        """True when this variable fails the gate."""
        return result.status in self.fail_on and result.allowed is None and not result.baselined

    def warning(self, result: VariableResult) -> bool:
        """True when this variable is not connected but does not fail the gate."""
        return result.status is not Status.CONNECTED and not self.failing(result)

    @property
    def failures(self) -> list[tuple[ModelReport, VariableResult]]:
        return [(m, v) for m in self.models for v in m.variables if self.failing(v)]

    @property
    def warnings(self) -> list[tuple[ModelReport, VariableResult]]:
        return [(m, v) for m in self.models for v in m.variables if self.warning(v)]

    @property
    def errors(self) -> list[ModelReport]:
        return [m for m in self.models if not m.ok]

    # --- how a notebook or a print() shows it (formats are imported lazily: no TensorFlow) ---

    def __str__(self) -> str:
        """The text report, as ``gradcheck`` prints it (uncoloured, findings only)."""
        from gradcheck.formats import text

        return text.render(self)

    def _repr_html_(self) -> str:
        """Jupyter: findings first, with causes and remedies; every variable collapsed below."""
        from gradcheck.formats import html

        return html.render(self)

    def _repr_markdown_(self) -> str:
        """Jupyter, where HTML is not shown: the Markdown report (as in a job summary)."""
        from gradcheck.formats import markdown

        return markdown.render(self)

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        """IPython's terminal: the text report instead of the dataclass dump."""
        printer.text(str(self))
