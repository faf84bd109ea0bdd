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


def largest_parts(model, variables: list, selected) -> list[tuple[object, int]]:
    """The largest parts of ``model`` — sub-models, layers with layers of their own — whose every
    variable among ``variables`` is ``selected`` (a set of variable indices), each with how many
    it has; a layer held by two parents is one part."""
    index = {id(getattr(v, "value", v)): i for i, v in enumerate(variables)}
    found, stack, seen = [], list(reversed(layers_of(model, recursive=False))), set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        own = [index[key] for key in (id(getattr(v, "value", v))
                                      for v in getattr(layer, "trainable_variables", []))
               if key in index]
        children = layers_of(layer, recursive=False)
        if own and children and all(i in selected for i in own):
            found.append((layer, len(own)))
            continue  # its own parts are in it
        stack.extend(reversed(children))
    return found
