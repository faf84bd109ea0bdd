"""Replacing one attribute of a class or module for the length of a ``with`` block, exactly.

An attribute a class inherits is restored by deleting the replacement (setting the inherited
value back would leave a copy in the subclass's own ``__dict__``); one it defines itself is set
back to the very object it was.
"""

from __future__ import annotations

import contextlib

_ABSENT = object()


@contextlib.contextmanager
def replaced(owner, name: str, value):
    """``owner.name`` is ``value`` inside the block, and exactly as before after it."""
    own = vars(owner).get(name, _ABSENT)
    setattr(owner, name, value)
    try:
        yield
    finally:
        if own is _ABSENT:
            delattr(owner, name)
        else:
            setattr(owner, name, own)
