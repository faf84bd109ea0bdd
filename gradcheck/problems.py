"""The one exception the engine raises for a source it cannot analyze."""

from __future__ import annotations


class SourceProblem(Exception):
    """A problem with one source that the user can fix; becomes a ``SourceError`` in the report.

    ``kind`` is a short stable identifier (``missing``, ``corrupt``, ``custom-object`` …) and the
    message is one sentence that names the problem and the remedy.
    """

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message
