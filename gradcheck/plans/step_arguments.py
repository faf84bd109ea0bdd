"""The positional arguments one step of the user's loop is called with.

In order: ``--data module:fn`` (it returns the tuple of the step's positional arguments: a 1-tuple
for one argument); none, for a step that takes none; the step's ``tf.function``
``input_signature``; else batches built from the input signatures of the models its code
reaches (x, (x, y) with targets fitting the outputs — ``plans.batches``), each tried until one
runs; last, tensors shaped after the variables the step reaches (a plain ``tf.Module`` or a pair
of ``tf.Variable``s says what it multiplies: x of ``(batch, rows of a kernel)``, y broadcasting
to any output, or class ids), tried in a bounded order.  Arrays become tensors, so the ops that
read them are known by the argument's name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from gradcheck.problems import ErrorKind, SourceProblem, describe_exception


@dataclass(frozen=True)
class StepArguments:
    """The positional arguments of one run of the step, and where they came from."""

    values: tuple
    description: str  #: for the report, e.g. ``the tf.function's input_signature``


def candidates(source, options) -> Iterator[Callable[[], StepArguments]]:
    """Makers of the arguments to try, in order (see the module docstring)."""
    if options.data:
        yield lambda: load_arguments(options.data, source)
        return
    if source.required == 0:
        yield lambda: StepArguments((), "no arguments")
        return
    if source.input_signature is not None:
        yield lambda: from_signature(source, options)
        return
    yield from _from_models(source, options)
    yield from _from_variables(source, options)


def load_arguments(spec: str, source) -> StepArguments:
    """``--data``: a function returning the tuple of the step's positional arguments."""
    from gradcheck.load.user_code import import_function

    fn = import_function(spec, what="--data", kind=ErrorKind.BAD_DATA)
    try:
        values = fn()
    except Exception as exc:
        raise SourceProblem(ErrorKind.BAD_DATA, f"--data {spec} raised {describe_exception(exc)}") from exc
    low, high = source.required, len(source.parameters)
    expected = f"{low}" if low == high else f"{low} to {high}"
    if not isinstance(values, tuple) or not low <= len(values) <= high:
        got = f"a tuple of {len(values)}" if isinstance(values, tuple) else f"a {type(values).__name__}"
        raise SourceProblem(ErrorKind.BAD_DATA, f"--data {spec} returned {got}, but the step "
                            f"{source.name}({', '.join(source.parameters)}) takes {expected} "
                            "positional arguments; return the tuple of its arguments (a 1-tuple, "
                            "(batch,), for one).")
    return StepArguments(tuple(as_tensors(v) for v in values), f"--data {spec}")


def as_tensors(value):
    """Arrays (and lists of numbers) as tensors; models, iterators and Python scalars as they are."""
    import numpy as np
    import tensorflow as tf

    def convert(leaf):
        return tf.convert_to_tensor(leaf) if isinstance(leaf, np.ndarray) else leaf

    try:
        return tf.nest.map_structure(convert, value)
    except Exception:  # a structure tf.nest cannot walk: as it is
        return value


def from_signature(source, options) -> StepArguments:
    """Values for the step's ``tf.function`` ``input_signature``."""
    import tensorflow as tf

    specs = source.input_signature
    flat = tf.nest.flatten(specs, expand_composites=False)
    values = [_synthesize(source, spec, index, options) for index, spec in enumerate(flat)]
    packed = tf.nest.pack_sequence_as(specs, values)
    return StepArguments(tuple(packed), "the tf.function's input_signature")


def _synthesize(source, spec, index: int, options):
    """A tensor for one ``tf.TensorSpec``: the first unknown dim is the batch, others small."""
    import tensorflow as tf

    from gradcheck.budget import charge_inputs
    from gradcheck.plans.inputs import InputSpec
    from gradcheck.plans.synthetic import make_batch

    if not isinstance(spec, tf.TensorSpec):
        raise SourceProblem(ErrorKind.NO_BATCH, f"the step {source.name} has an input_signature "
                            f"entry {type(spec).__name__}, which gradcheck cannot synthesize; give "
                            "its arguments with --data module:fn.")
    name = spec.name or (source.parameters[index] if index < len(source.parameters)
                         else f"argument_{index}")
    shape = list(spec.shape) if spec.shape.rank is not None else [None]
    if not shape:  # a scalar argument (a learning rate, a step count)
        value = tf.ones((), spec.dtype) if spec.dtype.is_integer else tf.constant(0.5, spec.dtype)
        return value
    batch = shape[0] if shape[0] is not None else options.batch_size
    input_spec = InputSpec(name, tuple(shape[1:]), spec.dtype.name)
    charge_inputs([(name, (batch, *[d or 8 for d in shape[1:]]), spec.dtype.name)])
    made = make_batch(source, 0, [input_spec], batch_size=batch, seed=options.seed + index)
    return tf.convert_to_tensor(made.value)


def _from_models(source, options) -> Iterator[Callable[[], StepArguments]]:
    """Batches from the input signatures of the models the step's code reaches."""
    from gradcheck.plans.batches import candidates as batch_candidates
    from gradcheck.plans.inputs import signature

    found = source.reached()
    for model in [*found.layers, *found.modules]:
        try:
            signature(model, [])
        except SourceProblem:
            continue
        if source.required == 2:  # (x, y): a loop's loss is most often on one output
            yield from (_fitted(source, make) for make in _output_targets(model, options))
        for make in batch_candidates(model, overrides=[], batch_size=options.batch_size,
                                     seed=options.seed, targets_first=True):
            yield _fitted(source, make)


def _output_targets(model, options) -> list:
    """Makers of (x, y) batches whose y fits one output of ``model`` (floats, or class ids)."""
    import keras
    import tensorflow as tf

    from gradcheck.plans.batches import StepBatch
    from gradcheck.plans.inputs import signature
    from gradcheck.plans.synthetic import make_inputs
    from gradcheck.plans.targets import target_for

    index_tree, specs = signature(model, [])
    x = keras.tree.map_structure(tf.convert_to_tensor, make_inputs(
        model, index_tree, specs, batch_size=options.batch_size, seed=options.seed))
    try:
        count = len(keras.tree.flatten(model(x, training=False)))
    except Exception:  # the model refuses its own signature: the other candidates say why
        return []
    makers = []
    for index in range(count if count > 1 else 0):
        for loss in (None, "sparse"):
            def make(index=index, loss=loss):
                output = keras.tree.flatten(model(x, training=False))[index]
                kind = "class ids for" if loss else "y fitting"
                return StepBatch((x, target_for(output, loss, index)),
                                 f"(x, y) with x from the inputs of '{model.name}' and {kind} "
                                 f"its output {index}")
            makers.append(make)
    return makers


#: Shapes tried for a step's arguments from the variables it reaches, at most.
MAX_SEARCHED = 24


def _from_variables(source, options) -> Iterator[Callable[[], StepArguments]]:
    """Arguments shaped after the variables the step reaches (see the module docstring)."""
    import itertools

    if source.required > 2:
        return
    batch = options.batch_size
    variables = source.judged_variables()
    rows = list(dict.fromkeys(int(v.shape[-2]) for v in variables if len(v.shape) == 2))
    columns = list(dict.fromkeys(int(v.shape[-1]) for v in variables if len(v.shape) == 2))
    channels = list(dict.fromkeys(int(v.shape[-2]) for v in variables if len(v.shape) == 4))
    xs = [("float32", (batch, d)) for d in rows] + [("float32", (batch, 32, 32, c))
                                                     for c in channels]
    xs += [("float32", (batch, 8)), ("float32", (batch,))]
    ys = [("float32", (batch, 1)), ("int32", (batch,)), ("float32", (batch,))]
    ys += [("float32", (batch, d)) for d in columns if d != 1]
    if source.required == 1:
        combos = [(x,) for x in xs] + [((x, y),) for x in xs[:2] for y in ys]
    else:
        combos = list(itertools.product(xs, ys))
    for combo in list(dict.fromkeys(combos))[:MAX_SEARCHED]:
        yield lambda combo=combo: _searched(source, combo, options.seed)


def _searched(source, combo, seed: int) -> StepArguments:
    import tensorflow as tf

    def tensor(dtype_shape, index):
        dtype, shape = dtype_shape
        if dtype == "int32":
            return tf.random.stateless_uniform(shape, seed=[seed, index], maxval=2, dtype=tf.int32)
        return tf.random.stateless_normal(shape, seed=[seed, index])

    def build(value, index):
        if isinstance(value[0], str):
            return tensor(value, index)
        return tuple(build(v, index * 10 + i) for i, v in enumerate(value))

    values = tuple(build(value, index) for index, value in enumerate(combo))
    shapes = ", ".join(str(tuple(int(d) for d in t.shape)) for t in tf.nest.flatten(values))
    return StepArguments(values, f"tensors of shapes {shapes}, found by trying shapes that fit "
                         "the variables the step reaches")


def _fitted(source, make) -> Callable[[], StepArguments]:
    def arguments() -> StepArguments:
        batch = make()
        data, low, high = batch.data, source.required, len(source.parameters)
        if isinstance(data, tuple) and low <= len(data) <= high and low > 1:
            values = data
        elif low == 1:
            values = (data,)
        else:
            raise _Unfit(f"{batch.description} does not fill the step's {low} arguments")
        return StepArguments(tuple(as_tensors(v) for v in values), batch.description)

    return arguments


class _Unfit(SourceProblem):
    def __init__(self, message: str):
        super().__init__(ErrorKind.NO_BATCH, message)


def named_arguments(source, values: tuple) -> dict[int, tuple[Any, str]]:
    """``id(tensor)`` -> (tensor, its name) for every tensor among the arguments."""
    import tensorflow as tf

    named = {}
    for index, value in enumerate(values):
        base = source.parameters[index] if index < len(source.parameters) else f"argument_{index}"
        try:
            leaves = tf.nest.flatten(value)
        except Exception:
            continue
        for position, leaf in enumerate(leaves):
            if isinstance(leaf, tf.Tensor):
                named[id(leaf)] = (leaf, base if len(leaves) == 1 else f"{base}[{position}]")
    return named
