"""``--shard K/N``: a stable part of the sources, so N CI jobs together check each source once.

A source belongs to part ``sha256(source) mod N + 1``: the hash of the source string as given,
not its position, so the parts do not depend on the order in which a shell globbed the files,
and every job of a matrix agrees on them without talking to the others.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/3"`` -> ``(2, 3)``; ``ValueError`` unless 1 <= K <= N."""
    match = _SHARD.match(text)
    if match is None:
        raise ValueError(f"takes K/N, such as 1/3, got '{text}'.")
    part, parts = int(match.group(1)), int(match.group(2))
    if not 1 <= part <= parts:
        raise ValueError(f"K/N needs 1 <= K <= N, got '{text}'.")
    return part, parts


def part_of(source: str, parts: int) -> int:
    """The part (1..``parts``) that ``source`` belongs to."""
    digest = hashlib.sha256(source.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % parts + 1


def select(sources: Sequence[str], part: int, parts: int) -> list[str]:
    """The sources of part ``part`` of ``parts``, in the order given."""
    return [source for source in sources if part_of(source, parts) == part]
