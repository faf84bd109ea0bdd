"""The layers of a Keras model, walked one way: Keras' own ``_flatten_layers`` (tracking order).

No TensorFlow import: the objects come in.  A plain ``tf.Module`` or anything else without
layers has none (only itself, when ``include_self``).
"""

from __future__ import annotations


def layers_of(model, *, include_self: bool = False, recursive: bool = True) -> list:
    """The layers inside ``model`` (recursively, or only its direct children), in the order Keras
    tracks them, optionally with ``model`` first."""
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is None:
        return [model] if include_self else []
    return list(flatten(include_self=include_self, recursive=recursive))
