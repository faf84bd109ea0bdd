"""Synthetic inputs from a model's input signature, plus the user's ``--input`` overrides.

The first batch uses small defaults.  When the model refuses it, ``search`` offers other sizes
for the unknown dims, by general rules (no model is special-cased): sequence lengths become the
lengths the model's layers declare, then 8, 4, 2, 1, then grow 16 → 32 … 512 → 4096, first
for the groups of inputs that hold a floating sequence (raw audio through wide strided
convolutions), then for every input, but only up to 512 when no floating sequence asks for
more (token ids never need 4096); the leading dim of a stack input (rank ≥ 4: images, masks) becomes 1 so that counts
of related inputs agree; unknown spatial dims try 32, 16 and 64, then the other inputs' image
sizes and their halvings.  A candidate whose batch exceeds ``MAX_BATCH_ELEMENTS`` input
elements is skipped.  Integer inputs get ids valid for the tables they index while still
integer, or, when they index no table, positions valid along the shortest other sequence.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from gradcheck.problems import ErrorKind, SourceProblem
from gradcheck.report import InputUsed

#: Unknown dims: image-like (rank ≥ 4) spatial dims must survive ResNet-style 32x downsampling.
SPATIAL_DEFAULT = 32
SEQUENCE_DEFAULT = 8
FEATURE_DEFAULT = 8

#: The search's sequence lengths for every input, cheapest first: the default and shorter (a
#: fixed token count per image, positions) ...
SEARCH_LENGTHS = (8, 4, 2, 1)
#: ... then longer (image tokens spliced into the text; raw audio through wide strided
#: convolutions), first for the groups of inputs that hold a floating sequence, then for all.
#: Only inputs that hold a floating sequence reach the last, 4096: token ids never need it.
GROWTH_LENGTHS = (16, 32, 64, 128, 256, 512, 4096)
#: The search's sizes for unknown spatial dims (height/width of images and masks).
SEARCH_SPATIAL = (32, 16, 64)
#: No searched dim grows above this (the largest of ``GROWTH_LENGTHS``).
MAX_SEARCH_DIM = max(GROWTH_LENGTHS)
#: A searched batch holds at most this many input elements (all inputs, batch included): about
#: 16 MB of float32, so that the search never costs more memory than a small real batch.
MAX_BATCH_ELEMENTS = 1 << 22

FLOAT_DTYPES = {"float16", "bfloat16", "float32", "float64"}
INT_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}

_NUMBER = r"-?[0-9]+(?:\.[0-9]*)?(?:e-?[0-9]+)?"
_OVERRIDE = re.compile(
    r"^(?P<name>[^=]+)=(?P<dims>[0-9?,\s]*)(?::(?P<dtype>[a-z0-9]+))?"
    rf"(?:@(?P<low>{_NUMBER})(?:\.\.(?P<high>{_NUMBER}))?)?$")
_SYNTAX = "NAME=DIM,DIM[:DTYPE][@LOW..HIGH or @VALUE]"


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, shape without the batch dim (None = unknown) and dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str | None  #: None in an ``--input`` without ``:DTYPE``: keep the model's dtype
    values: tuple[float, float] | None = None  #: ``--input …@LOW..HIGH``: draw from [LOW, HIGH]


@dataclass(frozen=True)
class Sizes:
    """What the unknown dims of every input become in one candidate batch."""

    length: int = SEQUENCE_DEFAULT  #: dims of rank-1 and rank-2 inputs (sequences, counts), and
    #: the leading dim of a rank-3 input of fixed-size items, e.g. boxes (count, 2, 2)
    spatial: int = SPATIAL_DEFAULT  #: non-leading dims of rank-3+ inputs (height, width)
    count: int = SPATIAL_DEFAULT  #: the leading dim of rank-4+ inputs (a stack of images, masks)
    #: the inputs whose dims take ``length`` (None: all); the others keep SEQUENCE_DEFAULT
    grown: frozenset[str] | None = None


DEFAULT_SIZES = Sizes()


def parse_override(text: str) -> InputSpec:
    """Parse ``NAME=DIM,DIM[:DTYPE][@LOW..HIGH|@VALUE]`` (dims exclude the batch dim).

    ``NAME=`` is a scalar per row; without ``:DTYPE`` the model's dtype is kept; ``@LOW..HIGH``
    draws values uniformly from [LOW, HIGH] (integers: both ends included) and ``@VALUE`` fills
    the input with one constant.
    """
    match = _OVERRIDE.match(text.strip())
    if not match:
        raise ValueError(f"--input '{text}' is not {_SYNTAX}, e.g. tokens=128:int32@1..999.")
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
            specs = [replace(o, dtype=o.dtype or "float32") for o in overrides]
            return (0 if len(specs) == 1 else list(range(len(specs)))), specs
        else:
            raise SourceProblem(ErrorKind.NO_SIGNATURE, f"the model ({type(model).__name__}) has no input "
                                "signature (a subclassed model that was never built); give its "
                                f"inputs with --input {_SYNTAX}, e.g. --input x=32:float32.")
    return index_tree, _apply_overrides(specs, overrides)


def _apply_overrides(specs: list[InputSpec], overrides: list[InputSpec]) -> list[InputSpec]:
    by_name = {spec.name: i for i, spec in enumerate(specs)}
    specs = list(specs)
    for override in overrides:
        if override.name in by_name:
            index = by_name[override.name]
        elif len(specs) == 1 and len(overrides) == 1:
            index = 0
        else:
            names = ", ".join(spec.name for spec in specs)
            raise SourceProblem(ErrorKind.BAD_INPUT, f"--input {override.name}: the model has no input of "
                                f"that name (its inputs are: {names}).")
        model_spec = specs[index]  # the name and, without :DTYPE, the dtype stay the model's
        specs[index] = replace(override, name=model_spec.name,
                               dtype=override.dtype or model_spec.dtype)
    return specs


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(d is None or isinstance(d, int) for d in value)


def describe_tree(model, inputs) -> str:
    """Like ``describe_inputs`` for an input pytree (see ``_named_leaves`` for the names)."""
    return describe_inputs(*_named_leaves(model, inputs))


def inputs_used(model, inputs) -> tuple[InputUsed, ...]:
    """What the report states about an input pytree (e.g. ``--data``'s): name, shape, range."""
    import numpy as np

    specs, leaves = _named_leaves(model, inputs)
    return tuple(_used(spec, np.asarray(leaf)) for spec, leaf in zip(specs, leaves))


def _named_leaves(model, inputs) -> tuple[list[InputSpec], list]:
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


def id_range(model) -> tuple[int, int]:
    """Ids valid for every embedding/lookup table in the model, and not a table's mask id 0."""
    tables = [table for table in map(_table_size, _all_layers(model)) if table is not None]
    return _valid_ids(tables) if tables else (0, 2)


def id_ranges(model, count: int) -> list[tuple[int, int] | None]:
    """Per model input, the ids valid for every table that input indexes (None: it indexes none).

    Walks the Keras functional graph (into nested functional models) from each input, as long
    as what flows is still integer, to the embedding/lookup layers it feeds: token ids span the
    token table while segment ids stay below the number of segments, and an integer input that
    reaches no table while integer (positions into another input) is None.  A model without a
    functional graph gets one range valid for every table in the model, for every input.
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
    return [_valid_ids(tables[i]) if tables.get(i) else None for i in range(count)]


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


def _is_integer(tensor) -> bool:
    dtype = str(getattr(tensor, "dtype", ""))
    return dtype in INT_DTYPES


def _walk_tables(function, sources: dict, tables: dict) -> None:
    """Propagate input indices through ``function``'s nodes; record the tables each indexes.

    An index stops flowing where the tensor it is in stops being integer (an embedding's output,
    a cast to float): past that point a table is indexed by something else.
    """
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
                if _is_integer(output):
                    sources[id(output)] = set(reached)


def _all_layers(model):
    flatten = getattr(model, "_flatten_layers", None)
    return list(flatten(include_self=True, recursive=True)) if flatten else [model]


def concrete_shape(spec: InputSpec, batch_size: int, sizes: Sizes = DEFAULT_SIZES) -> tuple[int, ...]:
    """Fill unknown dims: the last of a rank ≥ 2 input is a feature dim, the rest follow ``sizes``."""
    rank = len(spec.shape)
    dims = []
    for axis, dim in enumerate(spec.shape):
        if dim is not None:
            dims.append(dim)
        elif axis == rank - 1 and rank >= 2:
            dims.append(FEATURE_DEFAULT)
        elif rank >= 4 and axis == 0:
            dims.append(sizes.count)
        elif rank == 3 and axis == 0 and spec.shape[1] is not None:
            dims.append(sizes.length)  # a count of fixed-size items (boxes): agrees with points
        elif rank >= 3:
            dims.append(sizes.spatial)
        else:
            grown = sizes.grown is None or spec.name in sizes.grown
            dims.append(sizes.length if grown else SEQUENCE_DEFAULT)
    return (batch_size, *dims)


@dataclass
class Batch:
    """One synthetic batch: the pytree the model is called on, and its flat arrays by spec."""

    value: Any  #: the model's input structure, filled with arrays
    index_tree: Any  #: the model's input structure, filled with indices into ``specs``
    specs: list[InputSpec]
    arrays: list  #: numpy arrays, in the order of ``specs``
    sizes: Sizes  #: what the unknown dims became

    def describe(self) -> str:
        """Every input by name, shape and dtype (for error messages)."""
        return describe_inputs(self.specs, self.arrays)

    def used(self) -> tuple[InputUsed, ...]:
        """The inputs as the report states them: name, shape, dtype and value range."""
        return tuple(_used(spec, array) for spec, array in zip(self.specs, self.arrays))


def _used(spec: InputSpec, array) -> InputUsed:
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


def make_batch(model, index_tree, specs: list[InputSpec], *, batch_size: int, seed: int,
               sizes: Sizes = DEFAULT_SIZES, ranges: list | None = None) -> Batch:
    """Build one batch: floats ~ N(0, 1), ids in the valid range, masks and bools on.

    An ``--input …@LOW..HIGH`` range wins over every rule.  ``ranges`` are ``id_ranges``'s
    (computed here when not given).
    """
    import keras
    import numpy as np

    rng = np.random.default_rng(seed)
    ranges = id_ranges(model, len(specs)) if ranges is None else ranges
    shapes = [concrete_shape(spec, batch_size, sizes) for spec in specs]
    fallback = None
    arrays = []
    for index, (spec, shape, ids) in enumerate(zip(specs, shapes, ranges)):
        if spec.values is not None:
            arrays.append(_drawn(rng, spec, shape))
            continue
        if spec.dtype in INT_DTYPES and ids is None and "mask" not in spec.name.lower():
            fallback = fallback or id_range(model)
            ids = (0, _position_limit(shapes, index, fallback[1]))
        arrays.append(_synthetic(rng, spec, shape, ids))
    value = keras.tree.map_structure(lambda i: arrays[i], index_tree)
    return Batch(value, index_tree, specs, arrays, sizes)


def make_inputs(model, index_tree, specs: list[InputSpec], *, batch_size: int, seed: int):
    """The default batch's input pytree (see ``make_batch``)."""
    return make_batch(model, index_tree, specs, batch_size=batch_size, seed=seed).value


def _position_limit(shapes: list[tuple[int, ...]], index: int, id_high: int) -> int:
    """An index into no table points at positions: below the shortest other sequence, and below
    every table too (it may still be an id somewhere past an integer-breaking op)."""
    lengths = [shape[1] for i, shape in enumerate(shapes) if i != index and len(shape) == 2]
    return max(1, min([id_high, *lengths]))


def _synthetic(rng, spec: InputSpec, shape: tuple[int, ...], ids: tuple[int, int] | None):
    import numpy as np

    if spec.dtype == "bool":
        return np.ones(shape, dtype=bool)
    if spec.dtype in INT_DTYPES:
        if "mask" in spec.name.lower():
            return np.ones(shape, dtype=spec.dtype)
        low, high = ids if ids is not None else (0, 2)
        return rng.integers(low, high, size=shape).astype(spec.dtype)
    if spec.dtype in FLOAT_DTYPES:
        return rng.standard_normal(shape).astype("float32").astype(spec.dtype)
    if spec.dtype == "string":
        return np.full(shape, "gradcheck", dtype=object)
    raise SourceProblem(ErrorKind.BAD_INPUT, f"input '{spec.name}' has dtype {spec.dtype}, which "
                        f"gradcheck cannot synthesize; give it with --input {_SYNTAX}.")


def _drawn(rng, spec: InputSpec, shape: tuple[int, ...]):
    """Values from the user's ``@LOW..HIGH`` (both ends included for integers) or ``@VALUE``."""
    import numpy as np

    low, high = spec.values
    if spec.dtype in INT_DTYPES or spec.dtype == "bool":
        value = rng.integers(int(low), int(high) + 1, size=shape)
    elif spec.dtype in FLOAT_DTYPES:
        value = rng.uniform(low, high, size=shape) if high > low else np.full(shape, low)
    else:
        raise SourceProblem(ErrorKind.BAD_INPUT, f"--input {spec.name}: values cannot be given for an "
                            f"input of dtype {spec.dtype}.")
    return value.astype(spec.dtype)


def candidate_sizes(model, specs: list[InputSpec]) -> Iterator[Sizes]:
    """The search's candidates after the defaults, cheapest first, each with every
    ``SEARCH_SPATIAL`` size and each ``_image_fractions`` size: every input at the lengths the
    model's layers declare and at ``SEARCH_LENGTHS``; then at each of ``GROWTH_LENGTHS``, each
    group with a floating sequence alone, those groups together, and every input (a mask named
    unlike its signal; not at the largest length unless a floating sequence asks for it)."""
    spatials = list(dict.fromkeys([*SEARCH_SPATIAL, *_image_fractions(specs)]))
    for length in dict.fromkeys([*declared_lengths(model), *SEARCH_LENGTHS]):
        for spatial in spatials:
            yield Sizes(length=length, spatial=spatial, count=1)
    groups = _growing_groups(specs)
    for length in GROWTH_LENGTHS:
        choices = [*groups, frozenset().union(*groups)] if groups else []
        if groups or length < MAX_SEARCH_DIM:
            choices.append(None)
        for grown in choices:
            for spatial in spatials:
                yield Sizes(length=length, spatial=spatial, count=1, grown=grown)


def _image_fractions(specs: list[InputSpec]) -> list[int]:
    """Sizes an unknown spatial dim may have to match: the known height and width of the other
    rank-3+ inputs and their halvings down to 4 (a mask prompt at a quarter of the image)."""
    sizes = []
    for spec in specs:
        if len(spec.shape) >= 3:
            for dim in spec.shape[:-1]:
                while isinstance(dim, int) and dim >= 4:
                    sizes.append(dim)
                    dim //= 2
    return sorted(set(sizes) - set(SEARCH_SPATIAL))


def _growing_groups(specs: list[InputSpec]) -> list[frozenset[str]]:
    """Groups of inputs with a length dim whose names start with the same word (``encoder_…``,
    ``decoder_…``: a signal and its padding mask keep one length) and that hold a floating one."""
    groups: dict[str, set[str]] = {}
    floating: set[str] = set()
    for spec in specs:
        if 1 <= len(spec.shape) <= 2 and spec.shape[0] is None:
            word = spec.name.split("_", 1)[0]
            groups.setdefault(word, set()).add(spec.name)
            if spec.dtype in FLOAT_DTYPES:
                floating.add(word)
    return [frozenset(groups[word]) for word in groups if word in floating]


def declared_lengths(model) -> list[int]:
    """Lengths the model states: int attributes named ``*length*`` of its layers (a position
    table's ``sequence_length``, a decoder's ``max_label_length``), smallest first."""
    if model is None:
        return []
    lengths = set()
    for layer in _all_layers(model):
        for attr, value in vars(layer).items():
            if "length" in attr and type(value) is int and 1 <= value <= MAX_SEARCH_DIM:
                lengths.add(value)
    return sorted(lengths)


def search(model, index_tree, specs: list[InputSpec], *, batch_size: int, seed: int,
           accepts: Callable[[Batch], bool], include_default: bool = True) -> Batch | None:
    """The first candidate batch that ``accepts`` (e.g. the forward pass runs); None if none does.

    Candidates that give every input the same shapes as one tried before, or that hold more than
    ``MAX_BATCH_ELEMENTS`` elements, are skipped; no searched dim exceeds ``MAX_SEARCH_DIM``.
    """
    import numpy as np

    ranges = id_ranges(model, len(specs))
    seen = set()
    candidates = ([DEFAULT_SIZES] if include_default else []) + list(candidate_sizes(model, specs))
    if not include_default:
        seen.add(tuple(concrete_shape(s, batch_size) for s in specs))
    for sizes in candidates:
        shapes = tuple(concrete_shape(spec, batch_size, sizes) for spec in specs)
        if shapes in seen:
            continue
        seen.add(shapes)
        if sum(int(np.prod(shape)) for shape in shapes) > MAX_BATCH_ELEMENTS:
            continue
        batch = make_batch(model, index_tree, specs, batch_size=batch_size, seed=seed,
                           sizes=sizes, ranges=ranges)
        if accepts(batch):
            return batch
    return None
