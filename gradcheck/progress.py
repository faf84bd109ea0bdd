"""Progress on stderr while sources are analyzed; never on stdout, which holds the report.

On a terminal, a live line per running source (which source, which stage, elapsed seconds),
drawn by rich and erased when the run ends.  Off a terminal (CI logs, pre-commit), one plain
line per finished source with its verdict and time, or ``(cached)`` when the result cache held
it; on a terminal, ``-v`` prints those cached lines too.  ``--quiet`` turns all of it off.
"""

from __future__ import annotations

import time

from gradcheck.problems import printable
from gradcheck.results import ModelReport, Status
from gradcheck.runner import Event


def verdict(report: ModelReport) -> str:
    """A few words for a finished source: ``ok``, ``2 unconnected, 1 zero``, ``error: corrupt``."""
    if not report.ok:
        return f"error ({report.error.type if report.error else 'unknown'})"
    counts: dict[str, int] = {}
    for variable in report.variables:
        if variable.status is not Status.CONNECTED:
            counts[variable.status.value] = counts.get(variable.status.value, 0) + 1
    found = ", ".join(f"{n} {status}" for status, n in counts.items())
    return found or f"ok, {len(report.variables)} variables"


class Progress:
    """Receives the runner's events and shows them; use as a context manager."""

    def __init__(self, total: int, *, live: bool, verbose: bool = False):
        from rich.console import Console

        self.total = total
        self.live = live
        self.verbose = verbose
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.running: dict[int, tuple[str, str, float]] = {}  #: index -> (source, stage, since)
        self.finished = 0
        self._display = None
        self._spinners: dict[int, object] = {}

    def __enter__(self):
        if self.live:
            from rich.live import Live

            self._display = Live(self, console=self.console, refresh_per_second=8,
                                 transient=True, redirect_stdout=False, redirect_stderr=False)
            self._display.__enter__()
        return self

    def __exit__(self, *exc):
        if self._display is not None:
            self._display.__exit__(*exc)
        return False

    def __call__(self, event: Event) -> None:
        if event.kind == "done":
            self.running.pop(event.index, None)
            self.finished += 1
            if not self.live or (event.cached and self.verbose):
                self._line(event)
            return
        since = self.running.get(event.index, (None, None, time.monotonic()))[2]
        self.running[event.index] = (event.source, event.stage, since)

    def _line(self, event: Event) -> None:
        took = "cached" if event.cached else f"{event.seconds:.1f} s"
        text = (f"gradcheck: [{self.finished}/{self.total}] {printable(event.source)}: "
                f"{verdict(event.report)} ({took})")
        self.console.print(text, markup=False, highlight=False)

    def __rich__(self):
        from rich.spinner import Spinner
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 1))
        now = time.monotonic()
        for index, (source, stage, since) in sorted(self.running.items()):
            spinner = self._spinners.setdefault(index, Spinner("dots"))
            label = f"[{index + 1}/{self.total}] {printable(source)}: {stage} ({now - since:.1f} s)"
            grid.add_row(spinner, Text(label))
        return grid
