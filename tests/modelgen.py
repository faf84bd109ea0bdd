"""Random small functional models for property tests, and an eager tape to judge gradcheck by.

A *recipe* is plain data (frozen dataclasses of strings and ints): the inputs, a list of steps that
each make one new tensor, the outputs and how (if at all) the model is compiled.  ``recipes()`` is
the hypothesis strategy that draws one; ``build_model`` turns it into a Keras functional model.
Every layer is named by the recipe, so ``keras.backend.clear_session()`` between examples changes
nothing.  The recipe also says what it built: which layers sit upstream of each gradient-blocking
op (``Recipe.blockers``), which weights are never read (``Recipe.unused``), and which outputs carry
a loss, so a test can check gradcheck's *causes* and not only its verdicts.

``tape_truth`` is the ground truth: an eager ``tf.GradientTape`` (no ``tf.function``), asked under
``UnconnectedGradients.NONE`` and under ``ZERO`` separately.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypothesis import strategies as st

from gradcheck.api import quiet_tensorflow

quiet_tensorflow()

import keras  # noqa: E402  (after quiet_tensorflow, which must precede the import)
import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel("ERROR")

#: The TensorFlow op each blocking step inserts on the float path, i.e. the op that cuts gradient.
BLOCKING_OPS = {"stop_gradient": "StopGradient", "round": "Round", "argmax_embed": "ArgMax",
                "argmax": "ArgMax", "cast_embed": "Cast"}
#: Steps that own variables (and so have a layer name in the recipe).
VARIABLE_STEPS = {"dense", "spare", "argmax_embed", "cast_embed", "embed_input"}
ACTIVATIONS = (None, "relu", "tanh", "sigmoid", "softmax")
LOSSES = (None, "mse", "mae", "huber", "binary_crossentropy", "categorical_crossentropy",
          "sparse_categorical_crossentropy")
MAX_DIM = 8


@keras.saving.register_keras_serializable(package="gradcheck_tests")
class SpareDense(keras.layers.Layer):
    """A linear layer that creates a ``spare`` weight in build() and never reads it."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")
        self.spare = self.add_weight(shape=(self.units,), initializer="ones", name="spare")

    def call(self, x):
        return x @ self.kernel

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@dataclass(frozen=True)
class InputDef:
    """One model input: float features of width ``size``, or ``size`` int ids below ``vocab``."""

    name: str
    kind: str  #: "float" or "int"
    size: int
    vocab: int = 0


@dataclass(frozen=True)
class Step:
    """One new tensor ``out`` made from ``srcs``.

    ``op`` is one of: ``dense`` (a new Dense), ``shared`` (an earlier Dense, called again),
    ``spare`` (SpareDense), ``add``, ``concat``, ``stop_gradient``, ``round``, ``argmax_embed``
    (argmax → Embedding), ``cast_embed`` (clip → cast to int32 → Embedding → mean pool),
    ``embed_input`` (int input → Embedding → mean pool) and ``argmax`` (an int tensor, only ever
    used as an output).
    """

    op: str
    out: str
    srcs: tuple[str, ...]
    layer: str | None = None  #: the layer that owns the step's variables (or the merge layer)
    units: int = 0  #: output width (Dense/SpareDense units, Embedding output dim)
    vocab: int = 0  #: Embedding input_dim
    activation: str | None = None
    use_bias: bool = True
    regularized: bool = False  #: Dense kernel_regularizer="l2" (adds a term to model.losses)


@dataclass(frozen=True)
class OutputDef:
    """A model output (a dict key) and, when compiled, its loss (None: no loss) and loss weight."""

    name: str
    tensor: str
    loss: str | None = None
    weight: float = 1.0


@dataclass(frozen=True)
class Blocker:
    """A gradient-blocking op the recipe inserted, and every layer with weights upstream of it."""

    op_type: str  #: the TensorFlow op type that cuts, e.g. ``ArgMax``
    step: str  #: the ``out`` of the step that inserted it
    upstream: frozenset[str]


@dataclass(frozen=True)
class Recipe:
    """Everything needed to build one model, plus what the generator knows about it."""

    inputs: tuple[InputDef, ...]
    steps: tuple[Step, ...]
    outputs: tuple[OutputDef, ...]
    compiled: bool
    loss_weights: bool = False  #: compile with ``loss_weights`` (each OutputDef.weight)
    blockers: tuple[Blocker, ...] = ()
    unused: frozenset[str] = frozenset()  #: variable paths created but never read


# --- the strategy --------------------------------------------------------------------------------

STEP_KINDS = ("dense", "shared", "add", "concat", "stop_gradient", "round", "argmax_embed",
              "cast_embed", "spare", "argmax")


@st.composite
def recipes(draw, max_steps: int = 8) -> Recipe:
    """Draw a recipe: 1–2 float inputs, maybe an int input, 1–``max_steps`` steps, 1–3 outputs.

    The first drawn step is a Dense on an input, so most models have something to learn.
    """
    inputs, steps = _draw_inputs(draw)
    for index in range(draw(st.integers(1, max_steps))):
        steps.append(_draw_step(draw, inputs, steps, index))
    compiled = draw(st.booleans())
    weighted = compiled and draw(st.booleans())
    outputs = _draw_outputs(draw, inputs, steps, compiled, weighted)
    return with_bookkeeping(Recipe(tuple(inputs), tuple(steps), outputs, compiled, weighted))


def with_bookkeeping(recipe: Recipe) -> Recipe:
    """The recipe with ``blockers`` and ``unused`` filled in from its steps."""
    up = upstream_layers(recipe, through_blockers=True)
    blockers = tuple(Blocker(BLOCKING_OPS[s.op], s.out, frozenset().union(*(up[t] for t in s.srcs)))
                     for s in recipe.steps if s.op in BLOCKING_OPS)
    unused = frozenset(f"{s.layer}/spare" for s in recipe.steps if s.op == "spare")
    return replace(recipe, blockers=blockers, unused=unused)


def _draw_inputs(draw) -> tuple[list[InputDef], list[Step]]:
    """The inputs, and for an int input the Embedding + pooling step that consumes it."""
    inputs, steps = [], []
    for i in range(draw(st.integers(1, 2))):
        inputs.append(InputDef(f"x{i}", "float", draw(st.integers(1, MAX_DIM))))
    for i in range(draw(st.integers(0, 1))):
        spec = InputDef(f"ids{i}", "int", draw(st.integers(1, 3)), draw(st.integers(2, MAX_DIM)))
        inputs.append(spec)
        steps.append(Step("embed_input", f"e{i}", (spec.name,), layer=f"embed_ids{i}",
                          units=draw(st.integers(1, MAX_DIM)), vocab=spec.vocab))
    return inputs, steps


def _draw_step(draw, inputs: list[InputDef], steps: list[Step], index: int) -> Step:
    """One more step on the float tensors made so far; falls back to a Dense when it cannot fit."""
    widths = {k: v for k, v in _widths_of(inputs, steps).items() if v is not None}
    floats = list(reversed(widths))  # newest first: shrinking keeps chains deep, not flat
    out, units = f"t{index}", st.integers(1, MAX_DIM)
    kind = draw(st.sampled_from(STEP_KINDS)) if index else "dense"  # something to learn
    src = draw(st.sampled_from(floats))
    if kind == "shared":
        dense_in = {s.layer: widths[s.srcs[0]] for s in steps if s.op == "dense"}
        fits = [(layer, t) for layer, width in dense_in.items() for t in floats
                if widths[t] == width]
        if fits:
            layer, src = draw(st.sampled_from(fits))
            return Step("shared", out, (src,), layer=layer, units=_units_of(steps, layer))
    if kind in ("add", "concat"):
        partners = [t for t in floats if (widths[t] == widths[src] if kind == "add"
                                          else widths[t] + widths[src] <= MAX_DIM)]
        if partners:
            other = draw(st.sampled_from(partners))
            width = widths[src] if kind == "add" else widths[src] + widths[other]
            return Step(kind, out, (src, other), layer=f"{kind}{index}", units=width)
    if kind in ("stop_gradient", "round"):
        return Step(kind, out, (src,), units=widths[src])
    if kind == "argmax":
        return Step(kind, out, (src,))
    if kind == "argmax_embed":
        return Step(kind, out, (src,), layer=f"{kind}{index}", units=draw(units),
                    vocab=widths[src])
    if kind == "cast_embed":
        return Step(kind, out, (src,), layer=f"{kind}{index}", units=draw(units),
                    vocab=draw(st.integers(2, MAX_DIM)))
    if kind == "spare":
        return Step(kind, out, (src,), layer=f"{kind}{index}", units=draw(units))
    return Step("dense", out, (src,), layer=f"dense{index}", units=draw(units),
                activation=draw(st.sampled_from(ACTIVATIONS)), use_bias=draw(st.booleans()),
                regularized=draw(st.integers(0, 5)) == 0)


def _draw_outputs(draw, inputs, steps: list[Step], compiled: bool, weighted: bool):
    """1–3 distinct step tensors; losses (some None) when compiled.

    The first is a float tensor with a weight upstream, so every model has something to judge.
    """
    made = [s.out for s in reversed(steps)]
    floats = [s.out for s in reversed(steps) if s.op != "argmax"]
    width = {s.out: s.units for s in steps}
    up = upstream_layers(Recipe(tuple(inputs), tuple(steps), (), False), through_blockers=True)
    first = draw(st.sampled_from([t for t in floats if up[t]]))
    extras = draw(st.lists(st.sampled_from(made), max_size=2, unique=True))
    outputs = []
    for number, tensor in enumerate([first] + [t for t in extras if t != first]):
        loss, weight = None, 1.0
        if compiled and tensor in floats:
            loss = draw(st.sampled_from(LOSSES if width[tensor] > 1 else LOSSES[:5]))
            if number == 0 and loss is None:
                loss = "mse"  # a compiled model needs some loss
        if weighted:
            weight = draw(st.sampled_from((1.0, 0.5, 0.0)))
        outputs.append(OutputDef(f"out{number}", tensor, loss, weight))
    return tuple(outputs)


def _units_of(steps: list[Step], layer: str) -> int:
    return next(s.units for s in steps if s.layer == layer and s.op == "dense")


def _widths_of(inputs, steps) -> dict[str, int | None]:
    """Tensor -> its last dimension (None: an int tensor from ``argmax``, only ever an output)."""
    widths: dict[str, int | None] = {spec.name: spec.size for spec in inputs
                                     if spec.kind == "float"}
    widths.update({s.out: (None if s.op == "argmax" else s.units) for s in steps})
    return widths


# --- the builder ---------------------------------------------------------------------------------

def build_model(recipe: Recipe) -> keras.Model:
    """The Keras functional model a recipe describes (compiled if the recipe says so)."""
    ops, layers = keras.ops, keras.layers
    tensors, inputs, owned = {}, [], {}
    for spec in recipe.inputs:
        dtype = "float32" if spec.kind == "float" else "int32"
        tensors[spec.name] = keras.Input((spec.size,), dtype=dtype, name=spec.name)
        inputs.append(tensors[spec.name])
    for step in recipe.steps:
        src = [tensors[s] for s in step.srcs]
        if step.op == "dense":
            owned[step.layer] = layers.Dense(step.units, activation=step.activation,
                                             use_bias=step.use_bias, name=step.layer,
                                             kernel_regularizer="l2" if step.regularized else None)
            out = owned[step.layer](src[0])
        elif step.op == "shared":
            out = owned[step.layer](src[0])
        elif step.op == "spare":
            out = SpareDense(step.units, name=step.layer)(src[0])
        elif step.op == "add":
            out = layers.Add(name=step.layer)(src)
        elif step.op == "concat":
            out = layers.Concatenate(name=step.layer)(src)
        elif step.op == "stop_gradient":
            out = ops.stop_gradient(src[0])
        elif step.op == "round":
            out = ops.round(src[0])
        elif step.op == "argmax":
            out = ops.argmax(src[0], axis=-1)
        elif step.op == "argmax_embed":
            out = layers.Embedding(step.vocab, step.units, name=step.layer)(
                ops.argmax(src[0], axis=-1))
        elif step.op == "cast_embed":
            ids = ops.cast(ops.clip(src[0], 0, step.vocab - 1), "int32")
            out = layers.Embedding(step.vocab, step.units, name=step.layer)(ids)
            out = layers.GlobalAveragePooling1D(name=f"{step.layer}_pool")(out)
        elif step.op == "embed_input":
            out = layers.Embedding(step.vocab, step.units, name=step.layer)(src[0])
            out = layers.GlobalAveragePooling1D(name=f"{step.layer}_pool")(out)
        else:
            raise ValueError(f"unknown step {step.op}")
        tensors[step.out] = out
    model = keras.Model(inputs, {o.name: tensors[o.tensor] for o in recipe.outputs},
                        name="random_model")
    if recipe.compiled:
        model.compile(optimizer="sgd", loss={o.name: o.loss for o in recipe.outputs},
                      loss_weights=({o.name: o.weight for o in recipe.outputs}
                                    if recipe.loss_weights else None))
    return model


# --- what the recipe says about each variable ----------------------------------------------------

def carries_loss(recipe: Recipe, output: OutputDef) -> bool:
    """Does this output feed the loss?  Compiled: it has a loss; else: it is float (projected)."""
    if recipe.compiled:
        return output.loss is not None
    return _widths_of(recipe.inputs, recipe.steps)[output.tensor] is not None


def upstream_layers(recipe: Recipe, *, through_blockers: bool) -> dict[str, frozenset[str]]:
    """Tensor -> the variable-owning layers upstream of it (optionally stopping at blockers)."""
    up: dict[str, frozenset[str]] = {spec.name: frozenset() for spec in recipe.inputs}
    for step in recipe.steps:
        before = frozenset().union(*(up[s] for s in step.srcs))
        if step.op in BLOCKING_OPS and not through_blockers:
            before = frozenset()
        own = {step.layer} if step.op in VARIABLE_STEPS | {"shared"} else set()
        up[step.out] = before | own
    return up


def outputs_downstream(recipe: Recipe, layer: str) -> list[OutputDef]:
    """The outputs any path (through blockers too) from ``layer`` reaches."""
    up = upstream_layers(recipe, through_blockers=True)
    return [o for o in recipe.outputs if layer in up[o.tensor]]


def expected_causes(recipe: Recipe, paths: list[str]) -> dict[str, str | None]:
    """What the recipe predicts for each variable path: None (gets a gradient), or a cause kind.

    Structural only: a weight gets a gradient when some gradient-passing path joins its layer to
    an output with a loss (or it has a regularizer); blocked when the only such paths go through a
    blocker; detached when no path reaches an output with a loss; unused when never read.
    """
    loss_outputs = [o for o in recipe.outputs if carries_loss(recipe, o)]
    live = upstream_layers(recipe, through_blockers=False)
    every = upstream_layers(recipe, through_blockers=True)
    regularized = {s.layer for s in recipe.steps if s.regularized}
    result = {}
    for path in paths:
        layer, weight = path.rsplit("/", 1)
        penalized = weight == "kernel" and layer in regularized
        if path in recipe.unused:
            result[path] = "unused"
        elif penalized or any(layer in live[o.tensor] for o in loss_outputs):
            result[path] = None
        elif any(layer in every[o.tensor] for o in loss_outputs):
            result[path] = "blocked"
        else:
            result[path] = "detached"
    return result


# --- ground truth --------------------------------------------------------------------------------

@dataclass(frozen=True)
class TapeResult:
    """What an eager ``tape.gradient`` returned for one variable."""

    path: str
    none: bool  #: None under UnconnectedGradients.NONE
    zero: bool  #: exactly all zeros under UnconnectedGradients.ZERO
    finite: bool  #: no NaN/Inf under UnconnectedGradients.ZERO
    magnitude: float  #: largest |entry| of the ZERO gradient (0.0 when none)

    @property
    def status(self) -> str:
        """The verdict DESIGN.md's table gives these answers."""
        if self.none:
            return "unconnected"
        if not self.finite:
            return "nonfinite"
        return "zero" if self.zero else "connected"


def tape_truth(model, inputs, loss_fn, *, seed: int = 0, training: bool = True) -> list[TapeResult]:
    """Run one EAGER step and ask the tape about every trainable variable, in model order.

    ``loss_fn(model, inputs, outputs)`` returns the scalar; ``inputs`` should be exactly what
    gradcheck fed its traced step.
    """
    variables = list(model.trainable_variables)
    keras.utils.set_random_seed(seed)
    with tf.GradientTape(persistent=True) as tape:
        outputs = model(inputs, training=training)
        loss = loss_fn(model, inputs, outputs)
    # The tf.Variable behind each Keras variable: the tape builds ZERO's zeros from the source's
    # dtype, which a Keras variable reports as a string.
    sources = [v.value for v in variables]
    as_none = tape.gradient(loss, sources, unconnected_gradients=tf.UnconnectedGradients.NONE)
    as_zero = tape.gradient(loss, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    del tape
    results = []
    for variable, none, zero in zip(variables, as_none, as_zero, strict=True):
        dense = tf.convert_to_tensor(zero)  # IndexedSlices (Embedding) -> dense, rows summed
        magnitude = float(tf.reduce_max(tf.abs(dense))) if int(tf.size(dense)) else 0.0
        results.append(TapeResult(variable.path, none is None,
                                  bool(tf.reduce_all(tf.equal(dense, 0))),
                                  bool(tf.reduce_all(tf.math.is_finite(dense))), magnitude))
    return results


def projection_loss(model, inputs, outputs):
    """Our own projection, with other random weights than gradcheck's: Σ <output, R> + losses."""
    terms = []
    for index, output in enumerate(keras.tree.flatten(outputs)):
        output = tf.convert_to_tensor(output)
        if output.dtype.is_floating:
            weights = tf.random.stateless_normal(output.shape, seed=[7, index])
            terms.append(tf.reduce_sum(output * weights))
    terms.extend(model.losses)
    return tf.add_n(terms)


def traced_graph(model, inputs, loss_fn, *, training: bool = True):
    """A fresh trace of forward + loss, laid out as gradcheck's step traces it: (graph, loss op).

    Op names in a FuncGraph depend only on what was traced, so an op gradcheck names can be found
    here by name and asked about directly.
    """
    def forward(batch):
        outputs = model(batch, training=training)
        return loss_fn(model, batch, outputs)

    graph = tf.function(forward, autograph=False).get_concrete_function(inputs).graph
    return graph, graph.outputs[0].op.name


def passes_no_gradient(op) -> bool:
    """TensorFlow's own answer: does ``op`` hand no gradient back to some floating input?

    True when its outputs are not floating, when its gradient is unregistered or registered as
    not differentiable, or when its gradient function returns None for a floating input.
    """
    from tensorflow.python.framework import ops as tf_ops

    if not any(t.dtype.is_floating for t in op.outputs):
        return True
    try:
        grad_fn = tf_ops.get_gradient_function(op)
    except LookupError:
        return True
    if grad_fn is None:
        return True
    with op.graph.as_default():
        grads = grad_fn(op, *[tf.ones_like(t) if t.dtype.is_floating else None
                              for t in op.outputs])
    grads = list(grads) if isinstance(grads, (list, tuple)) else [grads]
    return any(t.dtype.is_floating and g is None for t, g in zip(op.inputs, grads, strict=False))
