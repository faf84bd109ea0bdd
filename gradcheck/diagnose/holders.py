"""Which attribute of which layer holds a variable Keras does not track.

Keras 3 tracks what ``Layer.__setattr__`` hands its ``Tracker``: Keras variables, layers, metrics
and seed generators (``keras/src/utils/tracking.py``); a ``tf.Variable`` or a ``tf.Module``
assigned to a layer is stored as a plain attribute, so ``model.trainable_variables`` never holds
its variables and ``fit`` never trains them.  This module walks every layer's attributes — into
lists, tuples, dicts and ``tf.Module`` trees (``tf.Module._flatten``, the walk TensorFlow's own
``trainable_variables`` uses) — to name the attribute that holds such a variable.  It reads
attributes only; no model code runs.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

from gradcheck.layers import layers_of
from gradcheck.locations import function_location

#: Keras' own bookkeeping attributes: what they hold is tracked (or not a variable).
_KERAS_INTERNALS = frozenset({
    "_tracker", "_trainable_variables", "_non_trainable_variables", "_layers", "_metrics",
    "_seed_generators", "_losses", "_loss_ids", "_inbound_nodes", "_outbound_nodes",
    "_functional", "_operations", "_inputs_struct", "_outputs_struct", "_nodes", "_nodes_by_depth",
    "_self_unconditional_checkpoint_dependencies", "_self_unconditional_dependency_names",
    "_self_unconditional_deferred_dependencies", "_self_saveable_object_factories",
    "optimizer", "compiled_loss", "compiled_metrics", "_compile_config", "_compile_metrics",
    "_compile_loss", "_loss_tracker", "_metrics_result"})

#: How deep into nested lists and dicts an attribute is followed.
_MAX_DEPTH = 4


@dataclass(frozen=True)
class Holder:
    """Where a variable the model does not track lives."""

    path: str  #: the row's path: the layer's path and the attribute path, ``ell/scale/w``
    layer: str  #: the layer's path
    attribute: str  #: as the user wrote it, ``self.scale.w``
    keras: object | None = None  #: the Keras variable it backs, if any (its ``trainable`` counts)
    call_location: object = None  #: ``SourceLocation`` of the holding layer's ``call()``, if named


def holders_of(model) -> dict[int, Holder]:
    """``id(handle)`` -> ``Holder`` of every variable found in the layers' plain attributes."""
    found: dict[int, Holder] = {}
    for layer in layers_of(model, include_self=True):
        layer_path = str(getattr(layer, "path", None) or getattr(layer, "name", "model"))
        call = getattr(type(layer), "call", None)
        call_location = function_location(call) if call is not None else None
        for attr, value in list(vars(layer).items()):
            if attr in _KERAS_INTERNALS or _is_layer(value):
                continue
            for parts, variable, keras in _variables_in(value, [attr], 0):
                key = id(variable.handle)
                if key not in found:
                    found[key] = Holder(f"{layer_path}/{'/'.join(parts)}", layer_path,
                                        "self." + ".".join(parts), keras, call_location)
    return found


def untracked_trainable(model) -> bool:
    """Does some layer hold a trainable variable the model does not track?"""
    known = {id(getattr(v, "value", v).handle) for v in getattr(model, "variables", ())}
    return any(key not in known and (holder.keras.trainable if holder.keras is not None else True)
               for key, holder in holders_of(model).items())


def _variables_in(value, parts: list[str], depth: int):
    """(attribute path, tf.Variable, Keras variable or None) of every variable inside ``value``."""
    import keras
    import tensorflow as tf

    if isinstance(value, keras.Variable):
        yield parts, value.value, value
    elif isinstance(value, tf.Variable):
        if getattr(value, "trainable", False):
            yield parts, value, None
    elif isinstance(value, tf.Module) and not _is_layer(value):
        for path, variable in value._flatten(
                predicate=lambda v: isinstance(v, (tf.Variable, keras.Variable)), with_path=True):
            names = [str(p) for p in path]
            if isinstance(variable, keras.Variable):
                yield parts + names, variable.value, variable
            elif variable.trainable:
                yield parts + names, variable, None
    elif depth < _MAX_DEPTH and isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _variables_in(item, parts[:-1] + [f"{parts[-1]}[{i}]"], depth + 1)
    elif depth < _MAX_DEPTH and isinstance(value, dict):
        for key, item in list(value.items()):
            yield from _variables_in(item, parts[:-1] + [f"{parts[-1]}[{key!r}]"], depth + 1)


def _is_layer(value) -> bool:
    import keras

    return isinstance(value, keras.layers.Layer)


def keras_wrapper(variable):
    """The Keras variable whose value ``variable`` is, found among the objects referring to it
    (a Keras weight held outside the model, e.g. a teacher in a closure), or None."""
    import keras

    for referrer in gc.get_referrers(variable):
        if isinstance(referrer, dict) and referrer.get("_value") is variable:
            for owner in gc.get_referrers(referrer):
                if isinstance(owner, keras.Variable) and owner.value is variable:
                    return owner
    return None
