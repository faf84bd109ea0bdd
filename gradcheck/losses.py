"""The scalar the step differentiates: the compiled training loss, a projection, or the user's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gradcheck.problems import ErrorKind, SourceProblem, describe_exception
from gradcheck.report import LossKind

#: fixed seed for the projection and the synthetic targets, independent of --seed so that the
#: loss a model is judged by does not change with the inputs.
LOSS_SEED = 1234


@dataclass(frozen=True)
class LossPlan:
    """How to compute the loss inside the traced step."""

    kind: LossKind
    detail: str  #: human description for the report
    compute: Callable[[Any, Any, Any], Any]  #: (model, inputs, outputs) -> scalar tensor


def plan_loss(model, *, custom: str | None, training: bool, data=None) -> LossPlan:
    """Choose the loss: ``--loss`` if given, else the compiled loss, else a random projection.

    Models that override ``train_step``/``compute_loss`` are judged by their own step instead
    (``gradcheck.trainstep``; ``api.analyze_model`` picks that plan before this one).  ``data`` is
    ``--data``'s (x, y, sample_weight): its y and sample weights replace the synthetic targets.
    """
    if custom:
        return _custom_plan(custom)
    if _has_compiled_loss(model):
        return _compiled_plan(model, training, data)
    return LossPlan(LossKind.PROJECTION,
                    "fixed-seed random projection of every floating output; plus model.losses",
                    _projection_loss)


def _has_compiled_loss(model) -> bool:
    if not getattr(model, "compiled", False):
        return False
    return getattr(model, "_compile_loss", None) is not None or bool(_safe_losses(model))


def _safe_losses(model):
    try:
        return list(model.losses)
    except Exception:
        return []


def _custom_plan(spec: str) -> LossPlan:
    from gradcheck.load.user_code import import_function

    fn = import_function(spec, what="--loss", kind=ErrorKind.BAD_LOSS)

    def compute(model, inputs, outputs):
        import tensorflow as tf

        try:
            value = fn(model, inputs, outputs)
        except Exception as exc:
            raise SourceProblem(ErrorKind.BAD_LOSS, f"--loss {spec} raised "
                                f"{describe_exception(exc)}") from exc
        try:
            value = tf.convert_to_tensor(value)
        except Exception as exc:
            raise SourceProblem(ErrorKind.BAD_LOSS, f"--loss {spec} returned a {type(value).__name__}, not "
                                "a tensor; return a float scalar.") from exc
        if not value.dtype.is_floating:
            raise SourceProblem(ErrorKind.BAD_LOSS, f"--loss {spec} returned a tensor of dtype "
                                f"{value.dtype.name}; a loss must be a float scalar.")
        if value.shape.rank != 0:
            raise SourceProblem(ErrorKind.BAD_LOSS, f"--loss {spec} returned a tensor of shape "
                                f"{value.shape}; a loss must be a scalar (reduce it, e.g. with "
                                "keras.ops.mean).")
        return value

    return LossPlan(LossKind.CUSTOM, f"{spec}(model, inputs, outputs)", compute)


def _projection_loss(model, inputs, outputs):
    """Σ <output, R> with R fixed-seed normal: never a plain sum, the sum of a softmax is constant."""
    import keras
    import tensorflow as tf

    terms = []
    for index, output in enumerate(keras.tree.flatten(outputs)):
        output = tf.convert_to_tensor(output)
        if not output.dtype.is_floating:
            continue
        weights = _constant_random(output, index, tf.random.stateless_normal)
        terms.append(tf.reduce_sum(tf.cast(output, tf.float32) * weights))
    terms.extend(tf.cast(term, tf.float32) for term in model.losses)
    return tf.add_n(terms) if terms else tf.constant(0.0)


def _constant_random(like, index: int, sampler, *, drop_last: bool = False):
    """Random values shaped like ``like`` (without its last axis if ``drop_last``).

    With a static shape the values do not depend on ``like`` in the graph, so no gradient-free
    Shape op links the model's outputs to the loss and muddies the causes.
    """
    import tensorflow as tf

    if like.shape.is_fully_defined():
        shape = like.shape.as_list()[:-1] if drop_last else like.shape.as_list()
    else:  # dynamic dims: the shape comes from the tensor, through a Shape op (no gradient)
        shape = tf.shape(like)[:-1] if drop_last else tf.shape(like)
    return sampler(shape, seed=[LOSS_SEED, index], dtype=tf.float32)


def _compiled_plan(model, training: bool, data=None) -> LossPlan:
    names = _per_output_loss_names(model)
    detail = _describe_compiled(model, names)
    given_y, sample_weight = (data[1], data[2]) if data is not None else (None, None)
    if given_y is not None:
        detail += "; targets from --data"

    def compute(model, inputs, outputs):
        from gradcheck.targets import default_targets

        y = given_y if given_y is not None else default_targets(outputs, names)
        if hasattr(model, "_compute_loss"):
            return model._compute_loss(x=inputs, y=y, y_pred=outputs, sample_weight=sample_weight,
                                       training=training)
        return model.compute_loss(x=inputs, y=y, y_pred=outputs, sample_weight=sample_weight)

    return LossPlan(LossKind.COMPILED, detail, compute)


def _loss_name(loss) -> str | None:
    if loss is None:
        return None
    if isinstance(loss, str):
        return loss
    return getattr(loss, "name", None) or getattr(loss, "__name__", None) or type(loss).__name__


def _per_output_loss_names(model) -> dict[int, str | None]:
    """Output index -> the name of its compiled loss (None: that output has no loss)."""
    loss = getattr(model, "loss", None)
    output_names = output_keys(model)
    count = max(len(output_names), 1)
    if isinstance(loss, dict):
        return {i: _loss_name(loss.get(name)) for i, name in enumerate(output_names)}
    if isinstance(loss, (list, tuple)):
        return {i: _loss_name(loss[i]) if i < len(loss) else None for i in range(count)}
    return {i: _loss_name(loss) for i in range(count)}


def output_keys(model, outputs=None) -> list[str]:
    """The outputs' names, in the order of the flattened outputs (``outputs`` if at hand).

    A model that returns a dict is compiled (and reported) by that dict's keys; ``output_names``
    names the layers that produce the outputs, which differ whenever a key is not its layer's name.
    """
    import keras

    struct = outputs if outputs is not None else getattr(model, "_outputs_struct", None)
    if isinstance(struct, dict):
        return list(keras.tree.flatten({key: key for key in struct}))
    return list(getattr(model, "output_names", None) or [])


def _describe_compiled(model, names: dict[int, str | None]) -> str:
    output_names = output_keys(model)
    parts = []
    for i, name in names.items():
        label = output_names[i] if i < len(output_names) else f"output {i}"
        parts.append(f"{label}: {name or 'no loss'}")
    # Keras 3 keeps compile()'s loss_weights on the compiled loss, not on the model.
    weights = getattr(getattr(model, "_compile_loss", None), "_user_loss_weights", None)
    if weights is None:
        weights = getattr(model, "loss_weights", None)
    text = "; ".join(parts)
    if weights is not None:
        text += f"; loss_weights={weights}"
    return text + "; plus add_loss terms and regularizers"

