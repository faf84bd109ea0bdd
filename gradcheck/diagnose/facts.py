"""What the Keras side knows about a variable: the layer that owns it, whether that layer ran in
the step, and where its ``call()`` and its caller's are in user code.

These facts make an ``unused`` cause precise (``layer-not-called``, ``weight-not-read``).
"""

from __future__ import annotations

import functools

from gradcheck.diagnose.causes import LayerFacts
from gradcheck.hooks.ops import CUSTOM_GRADIENT
from gradcheck.layers import layers_of
from gradcheck.locations import function_location


def opaque_scopes(graph) -> set[str | None]:
    """The layer scopes of the function calls the step ran as single ops (None: outside layers)."""
    return {data["layer"] for _, data in graph.nodes(data=True)
            if data.get("call") and data["type"] != CUSTOM_GRADIENT}


def layer_facts(model, variables: list, called_layers: frozenset[int],
                opaque: set[str | None] = frozenset()) -> list[LayerFacts]:
    """Per variable: did its owning layer run in the step, where is its call(), and its caller's.

    A layer called inside an already traced tf.function runs no Python, so it is not seen
    calling: under an ``opaque`` scope (``opaque_scopes``), "not seen" means "cannot tell".
    """
    owners, parents = ownership(model)
    facts = []
    for variable in variables:
        layer = owners.get(id(variable))
        if layer is None:
            facts.append(LayerFacts())
            continue
        called = id(layer) in called_layers
        owner = owner_of(variable.path)
        if not called and any(scope is None or owner == scope or owner.startswith(scope + "/")
                              for scope in opaque):
            called = None
        caller = next((p for p in _ancestors(layer, parents) if id(p) in called_layers
                       and _call_location(p) is not None), None)
        facts.append(LayerFacts(called=called, location=_call_location(layer),
                                caller_location=_call_location(caller) if caller else None))
    return facts


def ownership(model) -> tuple[dict[int, object], dict[int, object]]:
    """``id(variable)`` -> the layer that created it; ``id(layer)`` -> a layer that contains it."""
    owners: dict[int, object] = {}
    parents: dict[int, object] = {}
    stack = [model]
    seen = {id(model)}
    while stack:
        layer = stack.pop()
        own = list(getattr(layer, "_trainable_variables", ())) + list(
            getattr(layer, "_non_trainable_variables", ()))
        for variable in own:
            owners.setdefault(id(variable), layer)
        for child in layers_of(layer, recursive=False):
            if id(child) not in seen:
                seen.add(id(child))
                parents[id(child)] = layer
                stack.append(child)
    return owners, parents


def _ancestors(layer, parents: dict[int, object]):
    while id(layer) in parents:
        layer = parents[id(layer)]
        yield layer


def _call_location(layer):
    return _class_call_location(type(layer))


@functools.cache
def _class_call_location(layer_class):
    call = getattr(layer_class, "call", None)
    return function_location(call) if call is not None else None


def owner_of(path: str) -> str:
    """The owning layer's path: the variable's path without its last component."""
    return path.rsplit("/", 1)[0] if "/" in path else path
