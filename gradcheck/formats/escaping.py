"""What a hostile name can never do to a report: every format's escaping.

File, layer and variable names and the messages that quote them come from model files that
arrive in pull requests.  A newline would fake a report line, an ESC sequence could clear the
terminal or recolour a finding, and XML 1.0 cannot hold most control characters at all.
"""

from __future__ import annotations

import re

from gradcheck.problems import printable

__all__ = ["markdown_text", "printable"]

# Backslash-escaped: emphasis, code, links, HTML and entities, table cells.  An underscore
# between two letters or digits opens no emphasis in CommonMark and is left alone, so that
# ``dense_1/kernel`` reads as itself in the raw Markdown too.
_MARKDOWN_INLINE = re.compile(r"[\\`*_\[\]<>&|~]")


def _markdown_escape(match: re.Match) -> str:
    if match.group() == "_":
        before = match.string[:match.start()].rstrip("_")[-1:]
        after = match.string[match.end():].lstrip("_")[:1]
        if before.isalnum() and after.isalnum():
            return "_"
    return f"\\{match.group()}"


# Escaped at the start of the text, where they would open a heading, a list or a rule.
_MARKDOWN_BLOCK_START = frozenset("#-+=")
_ORDERED_ITEM = re.compile(r"^([0-9]+)([.)])")


def markdown_text(text: str) -> str:
    """``text`` as literal Markdown: it renders as itself, in a paragraph, a list or a table cell.

    Non-printable characters are escaped first (``printable``), then every character that
    Markdown or HTML would interpret is backslash-escaped (CommonMark allows that for any ASCII
    punctuation), including ``|``, which would otherwise split a table cell.
    """
    escaped = _MARKDOWN_INLINE.sub(_markdown_escape, printable(text))
    body = escaped.lstrip(" ")  # up to three spaces may stand before a list marker
    if body[:1] and body[0] in _MARKDOWN_BLOCK_START:
        indent = escaped[:len(escaped) - len(body)]
        return f"{indent}\\{body}"
    return _ORDERED_ITEM.sub(r"\1\\\2", escaped)  # "1." would open an ordered list
