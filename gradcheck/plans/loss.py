"""The scalar a recorded step differentiates, when gradcheck computes it: a loss function.

A ``LossFunction`` says how to compute the loss inside the recorded step (``compute(model, inputs,
outputs) -> scalar``) and how the report names it.  Here: the fixed-seed random projection (a model
with no compiled loss) and the user's ``--loss module:fn``; the compiled loss reads the compile
settings (``plans.compiled``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gradcheck.problems import ErrorKind, SourceProblem, describe_exception
from gradcheck.results import LossKind

#: fixed seed for the projection and the synthetic targets, independent of --seed so that the
#: loss a model is judged by does not change with the inputs.
LOSS_SEED = 1234


@dataclass(frozen=True)
class LossFunction:
    """How to compute the loss inside the recorded step, and how the report names it."""

    kind: LossKind
    detail: str  #: human description for the report
    compute: Callable[[Any, Any, Any], Any]  #: (model, inputs, outputs) -> scalar tensor
    #: it adds ``model.losses`` (add_loss terms, regularizers); the loss line says which it had
    adds_model_losses: bool = False


PROJECTION_DETAIL = "fixed-seed random projection of every floating output"


def projection() -> LossFunction:
    """Σ <output, R> over the floating outputs, R fixed-seed normal, plus ``model.losses``."""
    return LossFunction(LossKind.PROJECTION, PROJECTION_DETAIL, projection_loss,
                        adds_model_losses=True)


def with_model_losses(loss: LossFunction, *, add_loss_terms: bool, regularizers: bool) -> str:
    """The loss line's detail, saying which of ``model.losses`` the loss really added."""
    if not loss.adds_model_losses or not (add_loss_terms or regularizers):
        return loss.detail
    if loss.kind is LossKind.PROJECTION:
        return f"{loss.detail}; plus model.losses"
    added = [name for name, present in (("add_loss terms", add_loss_terms),
                                        ("regularizers", regularizers)) if present]
    return f"{loss.detail}; plus {' and '.join(added)}"


def custom_loss(spec: str) -> LossFunction:
    """``--loss module:fn``: ``fn(model, inputs, outputs)``, checked to return a float scalar."""
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

    return LossFunction(LossKind.CUSTOM, f"{spec}(model, inputs, outputs)", compute)


def projection_loss(model, inputs, outputs):
    """Σ <output, R> with R fixed-seed normal: never a plain sum, the sum of a softmax is constant."""
    import keras
    import tensorflow as tf

    terms = []
    for index, output in enumerate(keras.tree.flatten(outputs)):
        output = tf.convert_to_tensor(output)
        if not output.dtype.is_floating:
            continue
        weights = constant_random(output, index, tf.random.stateless_normal)
        terms.append(tf.reduce_sum(tf.cast(output, tf.float32) * weights))
    terms.extend(tf.cast(term, tf.float32) for term in model.losses)
    return tf.add_n(terms) if terms else tf.constant(0.0)


def constant_random(like, index: int, sampler, *, drop_last: bool = False):
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


def projection_fallback(reason: str) -> tuple[LossFunction, str]:
    """The projection plan and the warning that says the compiled loss could not be used."""
    warning = (f"the compiled loss refused every synthetic target gradcheck could build "
               f"({reason}); the model was judged by a random projection of its outputs "
               "instead, which may connect variables the compiled loss leaves out: give the real "
               "loss with --loss module:fn.")
    projection = LossFunction(LossKind.PROJECTION, f"{PROJECTION_DETAIL} (fallback: the compiled "
                              "loss refused the synthetic targets)", projection_loss,
                              adds_model_losses=True)
    return projection, warning
