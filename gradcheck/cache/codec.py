"""A ``ModelReport`` as JSON data and back, exactly: the cache's entry format.

Every field of the report's frozen dataclasses is written under its own name, enums by value,
tuples as lists, and read back by the field's declared type, so ``decode(encode(r)) == r`` and a
report from the cache renders byte for byte as the one the analysis produced (an ``int`` stays
an ``int``, a ``float`` a ``float``).  Anything that does not fit the declared types raises
``ValueError``: a cache entry from another schema is a miss, never a half-read report.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from typing import Any

from gradcheck.results import ModelReport

_SCALARS = (str, int, float, bool)


def encode(value: Any) -> Any:
    """``value`` (a report dataclass, enum, tuple or scalar) as plain JSON data."""
    if dataclasses.is_dataclass(value):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [encode(item) for item in value]
    if value is None or isinstance(value, _SCALARS):
        return value
    raise TypeError(f"cannot encode {type(value).__name__} in a cache entry")


def decode_model(data: Any) -> ModelReport:
    """The ``ModelReport`` that ``encode`` wrote as ``data``; ``ValueError`` if it does not fit."""
    return _decode(ModelReport, data)


def _decode(kind: Any, data: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(kind)
        if data is None and type(None) in options:
            return None
        for option in options:
            if option is not type(None):
                return _decode(option, data)
    if origin is tuple:
        item = typing.get_args(kind)[0]
        if not isinstance(data, list):
            raise ValueError(f"expected a list, got {type(data).__name__}")
        return tuple(_decode(item, element) for element in data)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind(data)
    if dataclasses.is_dataclass(kind):
        return _decode_dataclass(kind, data)
    if kind is float and isinstance(data, (int, float)) and not isinstance(data, bool):
        return data  # JSON keeps 1 and 1.0 apart; the report keeps whichever it had
    if kind in _SCALARS and type(data) is kind:
        return data
    raise ValueError(f"expected {getattr(kind, '__name__', kind)}, got {type(data).__name__}")


def _decode_dataclass(kind: type, data: Any) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"expected an object for {kind.__name__}")
    hints = _hints(kind)
    names = {f.name for f in dataclasses.fields(kind)}
    if set(data) != names:
        raise ValueError(f"{kind.__name__} fields differ: {sorted(set(data) ^ names)}")
    return kind(**{name: _decode(hints[name], data[name]) for name in names})


@functools.cache
def _hints(kind: type) -> dict[str, Any]:
    return typing.get_type_hints(kind)
