"""Synthetic values for a model's inputs: one batch from the specs, by general rules.

Floats are N(0, 1); integer inputs get ids valid for every table they index while still integer
(or, when they index no table, positions valid along the shortest other sequence), every id of a
table smaller than the input (labels, segments) at least once; masks and
bools are on; unknown dims take ``Sizes`` (small defaults that survive downsampling, or what the
search offers).  An ``--input …@LOW..HIGH`` range wins over every rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gradcheck.layers import layers_of
from gradcheck.plans.inputs import FLOAT_DTYPES, INT_DTYPES, SYNTAX, InputSpec, input_used
from gradcheck.problems import ErrorKind, SourceProblem
from gradcheck.results import InputUsed

#: Unknown dims: image-like (rank ≥ 4) spatial dims must survive ResNet-style 32x downsampling.
SPATIAL_DEFAULT = 32


SEQUENCE_DEFAULT = 8


FEATURE_DEFAULT = 8


#: Values of a floating input named ``*box*``: relative coordinates well inside the image.
BOX_RANGE = (0.25, 0.75)


@dataclass(frozen=True)
class Sizes:
    """What the unknown dims of every input become in one candidate batch."""

    length: int = SEQUENCE_DEFAULT  #: dims of rank-1 and rank-2 inputs (sequences, counts), and
    #: the leading dim of a rank-3 input of fixed-size items, e.g. boxes (count, 2, 2)
    spatial: int = SPATIAL_DEFAULT  #: non-leading dims of rank-3+ inputs (height, width)
    count: int = SPATIAL_DEFAULT  #: the leading dim of rank-4+ inputs (a stack of images, masks)
    #: the inputs whose dims take ``length`` (None: all); the others keep SEQUENCE_DEFAULT
    grown: frozenset[str] | None = None
    feature: int = FEATURE_DEFAULT  #: the unknown last dim of floating rank ≥ 2 inputs
    #: the leading dim of a rank-3 input whose first two dims are unknown is ``count`` items
    #: (one image's flattened patches, one clip's mel frames), not a height
    stacked: bool = False


DEFAULT_SIZES = Sizes()


def id_range(model) -> tuple[int, int]:
    """Ids valid for every embedding/lookup table in the model, and not a table's mask id 0."""
    tables = [table for table in map(_table_size, all_layers(model)) if table is not None]
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
    """[low, high) valid in every (size, masks id 0) table: below the smallest, 0 if masked.

    A table of one row bounds nothing when a larger one is reached: it is a learned vector read
    by its weights (a CLS token beside a label table in one prompt encoder), not a lookup."""
    if any(size > 1 for size, _ in tables):
        tables = [table for table in tables if table[0] > 1]
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
            for layer in all_layers(operation):
                size = _table_size(layer)
                if size is not None:
                    for index in reached:
                        tables.setdefault(index, []).append(size)
            for output in node.outputs:
                if _is_integer(output):
                    sources[id(output)] = set(reached)


def all_layers(model):
    """``model`` and every layer inside it."""
    return layers_of(model, include_self=True)


def concrete_shape(spec: InputSpec, batch_size: int, sizes: Sizes = DEFAULT_SIZES) -> tuple[int, ...]:
    """Fill unknown dims: the last of a rank ≥ 2 input is a feature dim, the rest follow ``sizes``."""
    rank = len(spec.shape)
    dims = []
    for axis, dim in enumerate(spec.shape):
        if dim is not None:
            dims.append(dim)
        elif axis == rank - 1 and rank >= 2:
            floating = spec.dtype in FLOAT_DTYPES or spec.dtype is None
            dims.append(sizes.feature if floating else FEATURE_DEFAULT)
        elif rank >= 4 and axis == 0:
            dims.append(sizes.count)
        elif rank == 3 and axis == 0 and spec.shape[1] is not None:
            dims.append(sizes.length)  # a count of fixed-size items (boxes): agrees with points
        elif rank == 3 and axis == 0 and sizes.stacked:
            dims.append(sizes.count)  # a stack of items of a sequence each (images of patches)
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

    def used(self) -> tuple[InputUsed, ...]:
        """The inputs as the report states them: name, shape, dtype and value range."""
        return tuple(input_used(spec, array) for spec, array in zip(self.specs, self.arrays))


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
    shapes = agreeing_shapes(specs, [concrete_shape(spec, batch_size, sizes) for spec in specs])
    special = special_ids(model)
    largest = largest_table(model) if special else 0
    fallback = None
    arrays = []
    for index, (spec, shape, ids) in enumerate(zip(specs, shapes, ranges)):
        if spec.values is not None:
            arrays.append(_drawn(rng, spec, shape))
            continue
        if spec.dtype in INT_DTYPES and ids is None and "mask" not in spec.name.lower():
            fallback = fallback or id_range(model)
            ids = (0, _position_limit(shapes, index, fallback[1]))
        arrays.append(with_special_ids(_synthetic(rng, spec, shape, ids), ids[0], largest, special)
                      if ids is not None and spec.dtype in INT_DTYPES else
                      _synthetic(rng, spec, shape, ids))
    value = keras.tree.map_structure(lambda i: arrays[i], index_tree)
    return Batch(value, index_tree, specs, arrays, sizes)


#: Attribute names (suffixes) of the ids a model compares its token ids with: the placeholder
#: that marks where an image, audio clip or video goes, and other special tokens.
SPECIAL_ID_SUFFIXES = ("token_id", "token_index")


def special_ids(model) -> list[int]:
    """The ids the model's layers say they compare token ids with (``image_token_id``,
    ``audio_token_id`` … on a keras-hub backbone), padding left out; smallest first."""
    found = set()
    for layer in all_layers(model) if model is not None else []:
        for attr, value in getattr(layer, "__dict__", {}).items():
            if (type(value) is int and value >= 0 and attr.endswith(SPECIAL_ID_SUFFIXES)
                    and "pad" not in attr):
                found.add(value)
    return sorted(found)


def largest_table(model) -> int:
    """The size of the largest embedding/lookup table in the model (0: none)."""
    return max((t[0] for t in map(_table_size, all_layers(model)) if t), default=0)


def with_special_ids(array, low: int, largest: int, special: list[int]):
    """Token ids with every special id placed once in each row (after the first position), so
    that the parts of the model those ids route to are reached.  A special id may lie past a
    small table the ids also reach (a vision vocabulary at an offset: the model routes it
    there itself), but not past the largest table of the model."""
    usable = [value for value in special if low <= value < largest]
    if array.ndim != 2 or not usable:
        return array
    for offset, value in enumerate(usable[: max(array.shape[1] - 1, 0)]):
        array[:, 1 + offset] = value
    return array


def agreeing_shapes(specs: list[InputSpec], shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Shapes where a mask agrees with what it masks: an input named like another plus
    ``mask`` (``input_features_mask`` for ``input_features``, ``pixel_mask`` for ``pixel_values``)
    and of lower rank takes that input's leading dims for its unknown ones — features of 16
    frames never go with a mask of 32 (``audio_mask``, a mask over the text, is no
    ``audio_mel``'s)."""
    shapes = list(shapes)
    for index, spec in enumerate(specs):
        if "mask" not in spec.name.lower():
            continue
        stem = spec.name.lower().replace("_mask", "").replace("mask", "").strip("_")
        partner = next((i for i, other in enumerate(specs) if i != index
                        and other.name.lower() in (stem, f"{stem}_values")
                        and len(other.shape) > len(spec.shape)), None)
        if partner is None:
            continue
        dims = list(shapes[index])
        for axis, dim in enumerate(spec.shape, start=1):
            if dim is None:
                dims[axis] = shapes[partner][axis]
        shapes[index] = tuple(dims)
    return shapes


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
        size = int(np.prod(shape))
        if high - low <= size:  # a small table (labels, segments): every id is in the batch
            return rng.permutation(np.resize(np.arange(low, high), size)).reshape(shape) \
                .astype(spec.dtype)
        return rng.integers(low, high, size=shape).astype(spec.dtype)
    if spec.dtype in FLOAT_DTYPES and "box" in spec.name.lower():
        # box coordinates: inside the image whatever the format (relative corners or centre
        # and size), so that an ROI pooling indexes within its feature map
        return rng.uniform(*BOX_RANGE, size=shape).astype("float32").astype(spec.dtype)
    if spec.dtype in FLOAT_DTYPES:
        return rng.standard_normal(shape).astype("float32").astype(spec.dtype)
    if spec.dtype == "string":
        return np.full(shape, "gradcheck", dtype=object)
    raise SourceProblem(ErrorKind.BAD_INPUT, f"input '{spec.name}' has dtype {spec.dtype}, which "
                        f"gradcheck cannot synthesize; give it with --input {SYNTAX}.")


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
