"""Every object of a model's config JSON with where it sits, in the words of the model.

A refusal must say where a crafted value is: "``activation`` of Dense 'hidden'" points at the
layer a user knows, "``config.layers[2].config.activation``" does not.  The walk is iterative (a
crafted file may nest deeply) and keeps one parent link per object, so a place is spelled only
when a refusal needs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Place:
    """A dict of the config, its key in its parent, and the parent's place."""

    node: dict
    key: str | int | None = None
    parent: Place | None = None

    def describe(self) -> str:
        """``activation of Dense 'hidden'``, ``compile_config.loss of Functional 'base'``."""
        keys: list[str | int] = []
        place: Place | None = self
        while place is not None and place.parent is not None:
            keys.append(place.key)
            place = place.parent
            owner = _object_name(place.node)
            if owner is not None:
                return f"`{_dotted(reversed(keys))}` of {owner}"
        return f"`{_dotted(reversed(keys))}`" if keys else "the top of the config"


def walk_places(config: Any) -> Iterator[Place]:
    """Every dict in ``config`` (depth first, in document order) with its place."""
    stack: list[tuple[Any, str | int | None, Place | None]] = [(config, None, None)]
    while stack:
        node, key, parent = stack.pop()
        if isinstance(node, dict):
            place = Place(node, key, parent)
            yield place
            stack.extend((value, name, place) for name, value in reversed(list(node.items())))
        elif isinstance(node, list):
            holder = parent if key is None else Place({}, key, parent)  # a list adds its key
            stack.extend((value, index, holder) for index, value in reversed(list(enumerate(node))))


def _object_name(node: dict) -> str | None:
    """``Dense 'hidden'`` for a serialized Keras object with a name, else None."""
    class_name, inner = node.get("class_name"), node.get("config")
    if not isinstance(class_name, str) or class_name.startswith("__") or not isinstance(inner, dict):
        return None
    name = inner.get("name")
    return f"{class_name} '{name}'" if isinstance(name, str) else class_name


def _dotted(keys) -> str:
    text = ""
    for key in keys:
        if key == "config" and not text:
            continue  # every object's fields sit under "config": say "activation", not "config.activation"
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text or "config"
