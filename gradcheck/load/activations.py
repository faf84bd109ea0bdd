"""The tensors the step will hold, estimated from the model's graph before the step runs.

``Dense(8) -> RepeatVector(400_000_000)`` has about a hundred parameters and a 24 GiB output;
``UpSampling2D(size=(5000, 5000))`` turns an 8x8 image into 1.6 billion pixels.  Weights are
charged as they are created (``hooks.memory``), but an activation is allocated by TensorFlow in
the middle of the step, where running out of memory is an OOM, or a SIGSEGV in a kernel.

What the step holds: the backward pass needs every layer's output, so all of them are alive at
once when the forward pass ends, and the gradient of the largest one flows back beside it.
``check_activations`` walks the model's functional graph (nested Functional and Sequential
models included) with the synthetic batch's shapes — the model's input signature, unknown dims
filled as ``inputs.concrete_shape`` fills them — asking each layer only for its output *spec*
(Keras' symbolic shape inference: nothing is allocated), and charges the sum of every output
plus twice the largest to the memory budget in force.  A refusal names the largest layer and
its size.  Tensors inside a layer's ``call`` (attention scores) are not seen, so the estimate is
a floor: it refuses only models that certainly do not fit.  A model without a functional graph
(subclassed), or one whose graph refuses the default shapes, is not estimated here; its step
still runs under ``--timeout`` and in a worker process.
"""

from __future__ import annotations

from dataclasses import dataclass

from gradcheck.budget import human, variable_bytes

#: Nested models followed into: deeper ones are sized by their outputs only.
MAX_NESTING = 16


@dataclass(frozen=True)
class Activation:
    """One layer output of the step."""

    layer: str  #: ``'repeat' (RepeatVector)``
    shape: tuple[int, ...]
    dtype: str
    size: int  #: bytes
    inside: bool = False  #: a tensor inside the layer's ``call``, not its output

    def describe(self) -> str:
        """``the layer 'repeat' (RepeatVector) outputs (2, 400000000, 8) float32``."""
        shape = ", ".join(str(d) for d in self.shape)
        if self.inside:
            return f"a tensor inside the layer {self.layer} is ({shape}) {self.dtype}"
        return f"the layer {self.layer} outputs ({shape}) {self.dtype}"


def check_activations(model, options) -> None:
    """Charge the step's activations to the budget in force, or refuse the model, naming the
    largest layer output.  With ``--data`` the batch is the user's own and is not estimated;
    models that cannot be estimated are let through."""
    from gradcheck import budget
    from gradcheck.plans.inputs import parse_override
    from gradcheck.problems import ErrorKind, SourceProblem

    if budget.current() is None or options.data:
        return
    try:
        overrides = [parse_override(text) for text in options.inputs]
    except ValueError:
        return  # the step says what is wrong with it
    batch_size = options.batch_size
    outputs = estimate(model, batch_size, overrides)
    if not outputs:
        return
    largest = max(outputs, key=lambda a: a.size)
    total = sum(a.size for a in outputs) + 2 * largest.size
    limit = budget.current()
    if total <= limit.room():
        limit.charge(total, "the layer outputs")
        return
    others = len(outputs) - 1
    raise SourceProblem(ErrorKind.TOO_LARGE, f"{largest.describe()}, {human(largest.size)} for a "
                        f"batch of {batch_size}; with the {others} other tensor"
                        f"{'s' if others != 1 else ''} the step keeps for the backward pass and "
                        "the gradient flowing back, the step "
                        f"needs {human(total)}, more than the memory budget of "
                        f"{human(limit.limit)} ({human(limit.used)} already claimed by weights). "
                        "Give a smaller --batch-size or --input sizes, or if the machine really "
                        "has the memory, raise --max-memory.")


def estimate(model, batch_size: int, overrides=()) -> list[Activation]:
    """Every layer output the step computes (input layers excluded), with its size in bytes;
    empty when the model has no functional graph or the graph refuses the batch's shapes.

    The synthetic inputs themselves are checked first, as the step will check them (so a huge
    input is refused as an input, not as the layer that reads it)."""
    import keras

    from gradcheck.budget import charge_inputs
    from gradcheck.plans.inputs import signature
    from gradcheck.plans.synthetic import concrete_shape
    from gradcheck.problems import SourceProblem

    graph = _graph(model)
    if graph is None:
        return []
    try:
        index_tree, specs = signature(model, list(overrides))
    except SourceProblem:
        return []
    shapes = [concrete_shape(spec, batch_size) for spec in specs]
    charge_inputs([(spec.name, shape, spec.dtype) for spec, shape in zip(specs, shapes)],
                  keep=False)
    leaves = [keras.KerasTensor(shape, dtype=spec.dtype) for spec, shape in zip(specs, shapes)]
    found: list[Activation] = []
    try:
        inputs = graph._standardize_inputs(keras.tree.map_structure(leaves.__getitem__, index_tree))
        _run(graph, inputs, found, depth=0)
    except Exception:  # a layer refusing these shapes: the step's own input search decides
        return []
    return found


def _graph(model):
    """The Functional graph of a model (a Sequential keeps one inside), or None."""
    from keras.src.models.functional import Functional

    if isinstance(model, Functional):
        return model
    inner = getattr(model, "_functional", None)
    return inner if isinstance(inner, Functional) else None


def _run(graph, inputs, found: list[Activation], depth: int, traced: dict | None = None):
    """Run ``graph`` on symbolic ``inputs``, recording each operation's output spec, and the
    largest tensor inside each layer that may hide one (``_may_hide_tensors``)."""
    from keras.src.layers import InputLayer

    traced = {} if traced is None else traced

    def operation_fn(operation):
        nested = _graph(operation) if depth < MAX_NESTING else None
        if nested is not None:
            return lambda *args, **kwargs: _run_nested(nested, args, kwargs, found, depth, traced)

        def spec(*args, **kwargs):
            output = operation.compute_output_spec(*args, **kwargs)
            if not isinstance(operation, InputLayer):
                _record(operation, output, found)
                if _may_hide_tensors(operation, args, kwargs):
                    _record_inside(operation, args, kwargs, found, traced)
            return output

        return spec

    return graph._run_through_graph(inputs, operation_fn=operation_fn)


def _run_nested(graph, args, kwargs, found, depth, traced):
    """What calling a nested model returns, its own layers recorded (``Functional.call``)."""
    from keras.src.models.functional import unpack_singleton

    structure = args[0] if args else kwargs.get("inputs")
    return unpack_singleton(_run(graph, graph._standardize_inputs(structure), found, depth + 1,
                                 traced))


def _record(operation, output, found: list[Activation]) -> None:
    import keras

    for tensor in keras.tree.flatten(output):
        shape = getattr(tensor, "shape", None)
        if shape is None:
            continue
        dims = tuple(1 if d is None else int(d) for d in shape)  # data-dependent: a floor
        dtype = str(getattr(tensor, "dtype", "float32"))
        found.append(Activation(_name(operation), dims, dtype, variable_bytes(dims, dtype)))


def _name(operation) -> str:
    return f"'{getattr(operation, 'name', '?')}' ({type(operation).__name__})"


def _may_hide_tensors(operation, args, kwargs) -> bool:
    """A layer made of layers, or one that combines several tensors, may build a tensor larger
    than its output inside ``call`` (attention scores are T x S); a Dense or a Conv2D does not,
    nor does a merge layer (Add, Concatenate: element-wise, its output is the largest)."""
    import keras
    from keras.src.layers.merging.base_merge import Merge

    if isinstance(operation, Merge):
        return False
    tensors = [x for x in keras.tree.flatten((args, kwargs)) if isinstance(x, keras.KerasTensor)]
    return len(tensors) > 1 or bool(getattr(operation, "_layers", None))


#: Operations whose outputs are not step memory: variable reads (the weights are charged
#: already) and the placeholders standing for the layer's inputs.
_NOT_ACTIVATIONS = {"ReadVariableOp", "VarHandleOp", "Placeholder", "NoOp"}


def _record_inside(operation, args, kwargs, found: list[Activation], traced: dict) -> None:
    """Trace ``operation.call`` in a scratch graph (as Keras' own shape inference does) and
    record its largest intermediate tensor, once per layer configuration and input shapes."""
    import json

    import keras
    from keras.src import backend

    shapes = tuple(tuple(x.shape) for x in keras.tree.flatten((args, kwargs))
                   if isinstance(x, keras.KerasTensor))
    try:  # twelve identical encoder layers are traced once; only their names differ
        config = json.dumps({**operation.get_config(), "name": None}, sort_keys=True, default=str)
    except Exception:
        config = str(id(operation))
    key = (type(operation), config, shapes)
    if key not in traced:
        traced[key] = None
        try:
            backend.compute_output_spec(lambda *a, **k: _largest_in_graph(operation, traced, key,
                                                                          a, k), *args, **kwargs)
        except Exception:  # a layer that cannot be traced alone: its output is still counted
            return
    if traced[key] is not None:
        dims, dtype = traced[key]
        found.append(Activation(_name(operation), dims, dtype, variable_bytes(dims, dtype),
                                inside=True))


def _largest_in_graph(operation, traced: dict, key, args, kwargs):
    import tensorflow as tf

    output = operation.call(*args, **kwargs)
    largest, size = None, 0
    for op in tf.compat.v1.get_default_graph().get_operations():
        if op.type in _NOT_ACTIVATIONS:
            continue
        for tensor in op.outputs:
            if tensor.shape.rank is None:
                continue
            dims = tuple(1 if d is None else int(d) for d in tensor.shape.as_list())
            dtype = "string" if tensor.dtype == tf.string else tensor.dtype.name
            if variable_bytes(dims, dtype) > size:
                largest, size = (dims, dtype), variable_bytes(dims, dtype)
    traced[key] = largest
    return output
