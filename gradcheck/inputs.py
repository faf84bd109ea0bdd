"""Synthetic inputs from a model's input signature, plus the user's ``--input`` overrides."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from gradcheck.problems import SourceProblem

#: Unknown dims: image-like (rank ≥ 4) spatial dims must survive ResNet-style 32x downsampling.
SPATIAL_DEFAULT = 32
SEQUENCE_DEFAULT = 8
FEATURE_DEFAULT = 8

FLOAT_DTYPES = {"float16", "bfloat16", "float32", "float64"}
INT_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}

_OVERRIDE = re.compile(r"^(?P<name>[^=]+)=(?P<dims>[0-9?,\s]*)(?::(?P<dtype>[a-z0-9]+))?$")


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, shape without the batch dim (None = unknown) and dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str


def parse_override(text: str) -> InputSpec:
    """Parse ``NAME=DIM,DIM[:DTYPE]`` (dims exclude the batch dim; ``NAME=`` is a scalar per row)."""
    match = _OVERRIDE.match(text.strip())
    if not match:
        raise ValueError(f"--input '{text}' is not NAME=DIM,DIM[:DTYPE], e.g. tokens=128:int32.")
    dims = tuple(int(d) if d.strip() != "?" else None
                 for d in match.group("dims").split(",") if d.strip())
    dtype = match.group("dtype") or "float32"
    if dtype not in FLOAT_DTYPES | INT_DTYPES | {"bool"}:
        raise ValueError(f"--input '{text}': unknown dtype '{dtype}'.")
    return InputSpec(match.group("name").strip(), dims, dtype)


def signature(model, overrides: list[InputSpec]) -> tuple[Any, list[InputSpec]]:
    """The model's input structure (a pytree of spec indices) and its specs, overrides applied."""
    import keras

    struct = getattr(model, "_inputs_struct", None)
    if struct is None and getattr(model, "_functional", None) is not None:
        struct = model._functional._inputs_struct  # Sequential keeps its graph here
    if struct is not None:
        tensors = keras.tree.flatten(struct)
        specs = [InputSpec(t.name, tuple(t.shape[1:]), str(t.dtype)) for t in tensors]
        index_tree = keras.tree.pack_sequence_as(struct, list(range(len(specs))))
    else:
        shapes = getattr(model, "_build_shapes_dict", None) or {}
        if len(shapes) == 1 and _is_shape(next(iter(shapes.values()))):
            specs = [InputSpec("input", tuple(next(iter(shapes.values())))[1:], "float32")]
            index_tree = 0
        elif overrides:
            return (0 if len(overrides) == 1 else list(range(len(overrides)))), list(overrides)
        else:
            raise SourceProblem("no-signature", f"the model ({type(model).__name__}) has no input "
                                "signature (a subclassed model that was never built); give its "
                                "inputs with --input NAME=DIM,DIM[:DTYPE], e.g. --input x=32:float32.")
    return index_tree, _apply_overrides(specs, overrides)


def _apply_overrides(specs: list[InputSpec], overrides: list[InputSpec]) -> list[InputSpec]:
    by_name = {spec.name: i for i, spec in enumerate(specs)}
    specs = list(specs)
    for override in overrides:
        if override.name in by_name:
            specs[by_name[override.name]] = override
        elif len(specs) == 1 and len(overrides) == 1:
            specs[0] = replace(override, name=specs[0].name)
        else:
            names = ", ".join(spec.name for spec in specs)
            raise SourceProblem("bad-input", f"--input {override.name}: the model has no input of "
                                f"that name (its inputs are: {names}).")
    return specs


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(d is None or isinstance(d, int) for d in value)


def id_range(model) -> tuple[int, int]:
    """Ids valid for every embedding/lookup table in the model, and not a table's mask id 0."""
    tables = [table for table in map(_table_size, _all_layers(model)) if table is not None]
    return _valid_ids(tables) if tables else (0, 2)


def id_ranges(model, count: int) -> list[tuple[int, int]]:
    """Per model input, the ids valid for every table that input reaches.

    Walks the Keras functional graph (into nested functional models) from each input to the
    embedding/lookup layers it feeds, so token ids span the token table while segment ids stay
    below the number of segments.  Falls back to one range valid for every table in the model.
    """
    fallback = id_range(model)
    struct = getattr(model, "_inputs_struct", None)
    if getattr(model, "_nodes_by_depth", None) is None or struct is None:
        return [fallback] * count
    import keras

    inputs = keras.tree.flatten(struct)
    sources = {id(t): {i} for i, t in enumerate(inputs)}
    tables: dict[int, list[tuple[int, bool]]] = {i: [] for i in range(len(inputs))}
    try:
        _walk_tables(model, sources, tables)
    except Exception:  # an exotic graph: the global range is still valid
        return [fallback] * count
    ranges = []
    for i in range(count):
        found = tables.get(i)
        ranges.append(_valid_ids(found) if found else fallback)
    return ranges


def _valid_ids(tables: list[tuple[int, bool]]) -> tuple[int, int]:
    """[low, high) valid in every (size, masks id 0) table: below the smallest, 0 if masked."""
    high = min(size for size, _ in tables)
    low = 1 if any(masked for _, masked in tables) and high > 1 else 0
    return low, max(high, low + 1)


def _table_size(layer) -> tuple[int, bool] | None:
    for attr in ("input_dim", "num_tokens", "num_bins"):
        size = getattr(layer, attr, None)
        if isinstance(size, int) and size > 0:
            return size, bool(getattr(layer, "mask_zero", False))
    return None


def _walk_tables(function, sources: dict, tables: dict) -> None:
    """Propagate input indices through ``function``'s nodes; record the tables each reaches."""
    import keras

    for depth in sorted(function._nodes_by_depth, reverse=True):
        for node in function._nodes_by_depth[depth]:
            arguments = node.arguments.keras_tensors
            reached = set().union(*(sources.get(id(t), set()) for t in arguments)) if arguments else set()
            operation = node.operation
            if not reached:
                continue
            if getattr(operation, "_nodes_by_depth", None) is not None and arguments:
                inner_inputs = keras.tree.flatten(operation._inputs_struct)
                for inner, outer in zip(inner_inputs, arguments):
                    sources[id(inner)] = set(sources.get(id(outer), set()))
                _walk_tables(operation, sources, tables)
                inner_outputs = keras.tree.flatten(operation._outputs_struct)
                for inner, outer in zip(inner_outputs, node.outputs):
                    sources[id(outer)] = set(sources.get(id(inner), set()))
                continue
            for layer in _all_layers(operation):
                size = _table_size(layer)
                if size is not None:
                    for index in reached:
                        tables.setdefault(index, []).append(size)
            for output in node.outputs:
                sources[id(output)] = set(reached)


def _all_layers(model):
    flatten = getattr(model, "_flatten_layers", None)
    return list(flatten(include_self=True, recursive=True)) if flatten else [model]


def concrete_shape(spec: InputSpec, batch_size: int) -> tuple[int, ...]:
    """Fill unknown dims with small sizes that survive downsampling."""
    rank = len(spec.shape)
    dims = []
    for axis, dim in enumerate(spec.shape):
        if dim is not None:
            dims.append(dim)
        elif axis == rank - 1 and rank >= 2:
            dims.append(FEATURE_DEFAULT)
        elif rank >= 3:
            dims.append(SPATIAL_DEFAULT)
        else:
            dims.append(SEQUENCE_DEFAULT)
    return (batch_size, *dims)


def make_inputs(model, index_tree, specs: list[InputSpec], *, batch_size: int, seed: int):
    """Build the input pytree: floats ~ N(0, 1), ids in the valid range, masks and bools on."""
    import keras
    import numpy as np

    rng = np.random.default_rng(seed)
    ranges = id_ranges(model, len(specs))
    values = []
    for spec, (low, high) in zip(specs, ranges):
        shape = concrete_shape(spec, batch_size)
        if spec.dtype == "bool":
            value = np.ones(shape, dtype=bool)
        elif spec.dtype in INT_DTYPES:
            if "mask" in spec.name.lower():
                value = np.ones(shape, dtype=spec.dtype)
            else:
                value = rng.integers(low, high, size=shape).astype(spec.dtype)
        elif spec.dtype in FLOAT_DTYPES:
            value = rng.standard_normal(shape).astype("float32").astype(spec.dtype)
        elif spec.dtype == "string":
            value = np.full(shape, "gradcheck", dtype=object)
        else:
            raise SourceProblem("bad-input", f"input '{spec.name}' has dtype {spec.dtype}, which "
                                "gradcheck cannot synthesize; give it with --input NAME=DIMS:DTYPE.")
        values.append(value)
    return keras.tree.map_structure(lambda i: values[i], index_tree)
