"""The GitHub Actions job summary: the Markdown report appended to ``$GITHUB_STEP_SUMMARY``.

GitHub sets ``GITHUB_STEP_SUMMARY`` to a file for each step and renders whatever the step
appended to it on the run's summary page.  gradcheck adds its Markdown report there in
addition to its normal output (never to stdout), so a gate that prints ``--format github``
annotations also leaves findings, causes and remedies on the summary page.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from gradcheck.report import Report

ENV_VAR = "GITHUB_STEP_SUMMARY"


def summary_path(environ: Mapping[str, str]) -> str | None:
    """The job summary file GitHub Actions gave this step, or None outside Actions."""
    return environ.get(ENV_VAR) or None


def append(report: Report, path: str) -> None:
    """Append the Markdown report to ``path`` in one ``write`` on an ``O_APPEND`` descriptor.

    One write on an append-only descriptor lands whole at the end of the file, so the summary
    is not interleaved with what another process appends at the same time (for the sizes a
    report has).  Raises ``OSError`` when the file cannot be opened or written.
    """
    from gradcheck.formats import Format, render

    data = ("\n" + render(report, Format.MARKDOWN)).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        while written < len(data):  # a short write (a full disk, a signal): finish it
            written += os.write(fd, data[written:])
    finally:
        os.close(fd)
