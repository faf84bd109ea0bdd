"""The GitHub Actions job summary: the Markdown report appended to ``$GITHUB_STEP_SUMMARY``.

GitHub sets ``GITHUB_STEP_SUMMARY`` to a file for each step and renders whatever the step
appended to it on the run's summary page.  gradcheck adds its Markdown report there in
addition to its normal output (never to stdout), so a gate that prints ``--format github``
annotations also leaves findings, causes and remedies on the summary page.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the formats read a Report; report.py shows itself through them
    from gradcheck.report import Report


ENV_VAR = "GITHUB_STEP_SUMMARY"


def summary_path(environ: Mapping[str, str]) -> str | None:
    """The job summary file GitHub Actions gave this step, or None outside Actions."""
    return environ.get(ENV_VAR) or None


STEP_LIMIT = 1024 * 1024  #: GitHub drops a step's whole summary when it is larger than 1 MiB


class SummaryTooLarge(Exception):
    """Even the report without its full table does not fit in what is left of the step's 1 MiB."""


def append(report: Report, path: str, limit: int = STEP_LIMIT) -> None:
    """Append the Markdown report to ``path`` in one ``write`` on an ``O_APPEND`` descriptor.

    One write on an append-only descriptor lands whole at the end of the file, so the summary
    is not interleaved with what another process appends at the same time.  GitHub refuses a
    step summary over 1 MiB (and shows none of it), so when the full report would not fit in
    what is left of ``limit``, the table of every variable is left out; when even that does not
    fit, ``SummaryTooLarge`` is raised and nothing is written.  Raises ``OSError`` when the
    file cannot be opened or written.
    """
    from gradcheck.formats import markdown

    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        room = limit - os.fstat(fd).st_size
        for full_table in (True, False):
            data = ("\n" + markdown.render(report, full_table=full_table)).encode("utf-8")
            if len(data) <= room:
                break
        else:
            raise SummaryTooLarge(f"the report needs {len(data)} bytes and the step's summary has "
                                  f"{max(room, 0)} of GitHub's {limit} left")
        written = os.write(fd, data)
        while written < len(data):  # a short write (a full disk, a signal): finish it
            written += os.write(fd, data[written:])
    finally:
        os.close(fd)
