"""Assertions for a model repository's own test suite::

    from gradcheck.testing import assert_connected

    def test_every_weight_learns(model):
        assert_connected(model, allow=["critic/*=trained by a separate loss"])

The failure message is the explanation ``gradcheck`` prints in a terminal (its text format).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gradcheck.report import Report
from gradcheck.results import AllowRule


class GradientCheckFailed(AssertionError):
    """Some variable fails the gate (or the model could not be analyzed); ``report`` says which."""

    def __init__(self, message: str, report: Report):
        super().__init__(message)
        self.report = report


def assert_connected(model: Any, allow: Iterable[str | dict | AllowRule] = (),
                     **options: Any) -> Report:
    """Check ``model`` like ``gradcheck.check`` and return the ``Report`` if nothing fails the gate.

    ``model`` is a Keras model, a source string (``model.keras``, ``file.py:fn``) or a list of
    them; ``allow`` holds ``[SOURCE::]GLOB[=REASON]`` entries for variables meant not to learn;
    ``options`` are those of ``gradcheck.check`` (``fail_on``, ``batch_size``, ``loss`` …).
    Raises ``GradientCheckFailed`` (an ``AssertionError``) with the text report otherwise.
    """
    __tracebackhide__ = True  # pytest: show the failure at the caller, not in here
    from gradcheck.api import check
    from gradcheck.formats import Format, render

    report = check(model, allow=allow, **options)
    if report.failures or report.errors:
        raise GradientCheckFailed(render(report, Format.TEXT, color=False).rstrip("\n"), report)
    return report
