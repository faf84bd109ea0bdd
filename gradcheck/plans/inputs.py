"""A model's inputs as specs: its signature, the user's ``--input`` overrides, and how the report
names the inputs a step ran on.

No values are drawn here (``plans.synthetic``), and nothing is searched (``plans.search``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from gradcheck.plans.legacy import build_shapes, call_signature, dtype_name, input_struct
from gradcheck.problems import ErrorKind, SourceProblem
from gradcheck.results import InputUsed

FLOAT_DTYPES = {"float16", "bfloat16", "float32", "float64"}


INT_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}


_NUMBER = r"-?[0-9]+(?:\.[0-9]*)?(?:e-?[0-9]+)?"


_OVERRIDE = re.compile(
    r"^(?P<name>[^=]+)=(?P<dims>[0-9?,\s]*)(?::(?P<dtype>[a-z0-9]+))?"
    rf"(?:@(?P<low>{_NUMBER})(?:\.\.(?P<high>{_NUMBER}))?)?$")


SYNTAX = "NAME=DIM,DIM[:DTYPE][@LOW..HIGH or @VALUE]"


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, shape without the batch dim (None = unknown) and dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str | None  #: None in an ``--input`` without ``:DTYPE``: keep the model's dtype
    values: tuple[float, float] | None = None  #: ``--input …@LOW..HIGH``: draw from [LOW, HIGH]
    unnamed: bool = False  #: the model gives this input no name (gradcheck calls it ``input``)


def parse_override(text: str) -> InputSpec:
    """Parse ``NAME=DIM,DIM[:DTYPE][@LOW..HIGH|@VALUE]`` (dims exclude the batch dim).

    ``NAME=`` is a scalar per row; without ``:DTYPE`` the model's dtype is kept; ``@LOW..HIGH``
    draws values uniformly from [LOW, HIGH] (integers: both ends included) and ``@VALUE`` fills
    the input with one constant.
    """
    match = _OVERRIDE.match(text.strip())
    if not match:
        raise ValueError(f"--input '{text}' is not {SYNTAX}, e.g. tokens=128:int32@1..999.")
    dims = tuple(int(d) if d.strip() != "?" else None
                 for d in match.group("dims").split(",") if d.strip())
    dtype = match.group("dtype")
    if dtype is not None and dtype not in FLOAT_DTYPES | INT_DTYPES | {"bool"}:
        raise ValueError(f"--input '{text}': unknown dtype '{dtype}'.")
    values = None
    if match.group("low") is not None:
        low = float(match.group("low"))
        high = float(match.group("high")) if match.group("high") is not None else low
        if high < low:
            raise ValueError(f"--input '{text}': the range {match.group('low')}.."
                             f"{match.group('high')} is empty; write LOW..HIGH with LOW <= HIGH.")
        values = (low, high)
    return InputSpec(match.group("name").strip(), dims, dtype, values)


def signature(model, overrides: list[InputSpec]) -> tuple[Any, list[InputSpec]]:
    """The model's input structure (a pytree of spec indices) and its specs, overrides applied."""
    import keras

    struct = input_struct(model)
    called_with = call_signature(model) if struct is None else None
    if struct is not None:
        tensors = keras.tree.flatten(struct)
        specs = [InputSpec(t.name, tuple(t.shape[1:]), dtype_name(t.dtype)) for t in tensors]
        index_tree = keras.tree.pack_sequence_as(struct, list(range(len(specs))))
    elif called_with:  # a tf.Module's __call__ input_signature, a SavedModel's signature
        specs = [InputSpec(spec.name or f"input_{i}", tuple(spec.shape[1:]), spec.dtype.name)
                 for i, spec in enumerate(called_with)]
        index_tree = 0 if len(specs) == 1 else list(range(len(specs)))
    else:
        shapes = build_shapes(model)
        called = _called_signature(model)
        if len(shapes) == 1 and _is_shape(next(iter(shapes.values()))):
            specs = [InputSpec("input", tuple(next(iter(shapes.values())))[1:], "float32",
                               unnamed=True)]
            index_tree = 0
        elif called is not None and not overrides:
            index_tree, specs = called
        elif overrides:
            specs = [replace(o, dtype=o.dtype or "float32") for o in overrides]
            return (0 if len(specs) == 1 else list(range(len(specs)))), specs
        else:
            raise SourceProblem(ErrorKind.NO_SIGNATURE, f"the model ({type(model).__name__}) has no input "
                                "signature (a subclassed model that was never built); give its "
                                f"inputs with --input {SYNTAX}, e.g. --input x=32:float32.")
    return index_tree, _apply_overrides(specs, overrides)


def _called_signature(model) -> tuple[Any, list[InputSpec]] | None:
    """A model built by calling it (its ``call()`` could not be traced, so Keras kept no input
    shapes): the first call a factory made (``hooks.calls``), else the build shape of its first
    layer (the layer its inputs go to, in the order its layers were assigned)."""
    import keras

    from gradcheck.hooks.calls import FIRST_CALL
    from gradcheck.layers import layers_of

    first = vars(model).get(FIRST_CALL) if getattr(model, "built", False) else None
    if first is not None:
        leaves = keras.tree.flatten(first)
        names = (list(keras.tree.flatten({key: key for key in first})) if isinstance(first, dict)
                 else ["input"] if len(leaves) == 1 else [f"input_{i}" for i in range(len(leaves))])
        specs = [InputSpec(str(name), tuple(leaf.shape[1:]), leaf.dtype)
                 for name, leaf in zip(names, leaves)]
        return keras.tree.pack_sequence_as(first, list(range(len(specs)))), specs
    if not getattr(model, "built", False) or not getattr(model, "trainable_variables", None):
        return None
    children = layers_of(model, recursive=False)
    shapes = (getattr(children[0], "_build_shapes_dict", None) or {}) if children else {}
    if len(shapes) != 1 or not _is_shape(next(iter(shapes.values()))):
        return None
    # An embedding-like first layer takes ids below its table size (``plans.synthetic``).
    dtype = "int32" if isinstance(getattr(children[0], "input_dim", None), int) else "float32"
    return 0, [InputSpec("input", tuple(next(iter(shapes.values())))[1:], dtype)]


def _apply_overrides(specs: list[InputSpec], overrides: list[InputSpec]) -> list[InputSpec]:
    by_name = {spec.name: i for i, spec in enumerate(specs)}
    specs = list(specs)
    for override in overrides:
        if override.name in by_name:
            index = by_name[override.name]
        elif len(specs) == 1 and len(overrides) == 1 and specs[0].unnamed:
            index = 0  # the model names no input: any name the user gives is that one
        else:
            names = ", ".join(spec.name for spec in specs)
            raise SourceProblem(ErrorKind.BAD_INPUT, f"--input {override.name}: the model has no input of "
                                f"that name (its inputs are: {names}).")
        model_spec = specs[index]  # the name and, without :DTYPE, the dtype stay the model's
        specs[index] = replace(override, name=model_spec.name, unnamed=model_spec.unnamed,
                               dtype=override.dtype or model_spec.dtype)
    return specs


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(d is None or isinstance(d, int) for d in value)


def describe_tree(model, inputs) -> str:
    """Like ``describe_inputs`` for an input pytree (see ``named_leaves`` for the names)."""
    return describe_inputs(*named_leaves(model, inputs))


def inputs_used(model, inputs) -> tuple[InputUsed, ...]:
    """What the report states about an input pytree (e.g. ``--data``'s): name, shape, range."""
    import numpy as np

    specs, leaves = named_leaves(model, inputs)
    return tuple(input_used(spec, np.asarray(leaf)) for spec, leaf in zip(specs, leaves))


def named_leaves(model, inputs) -> tuple[list[InputSpec], list]:
    """The pytree's leaves, named from the model's signature, else from the dict keys, else
    ``input_0``, ``input_1`` …"""
    import keras

    leaves = keras.tree.flatten(inputs)
    try:
        _, specs = signature(model, [])
    except Exception:  # no signature: the pytree's own keys are the best names
        specs = []
    if len(specs) != len(leaves):
        keys = (keras.tree.flatten({key: key for key in inputs}) if isinstance(inputs, dict)
                else [f"input_{i}" for i in range(len(leaves))])
        specs = [InputSpec(str(key), (), None) for key in keys]
    return specs, leaves


def describe_inputs(specs: list[InputSpec], arrays: list) -> str:
    """``token_ids (2, 8) int32, images (2, 32, 32, 3) float32``: every input by name."""
    return ", ".join(f"{spec.name} {tuple(array.shape)} {getattr(array.dtype, 'name', array.dtype)}"
                     for spec, array in zip(specs, arrays))


def input_used(spec: InputSpec, array) -> InputUsed:
    import numpy as np

    numeric = array.dtype.kind in "biuf" and array.size
    low = _plain(np.min(array)) if numeric else None
    high = _plain(np.max(array)) if numeric else None
    return InputUsed(spec.name, tuple(int(d) for d in array.shape), str(array.dtype), low, high)


def _plain(value) -> float | int:
    """A numpy scalar as a JSON-friendly number: ints stay ints, floats are rounded."""
    if value.dtype.kind in "biu":
        return int(value)
    return round(float(value), 4)
