"""What the step runs on when the model refuses the defaults: a batch its forward pass accepts
and targets its compiled loss accepts, searched together, eagerly and outside the recorded step.

Each candidate batch (``inputs.search`` order: the default first) is called once; on a batch
the forward pass accepts with no empty output, the loss plan is tried as it is, then, for a
compiled loss, with each ``targets.candidate_fits`` structure.  The first batch and loss that
give a finite float scalar (non-zero preferred) and a backward pass that runs win.
If the forward pass accepts some batch but no compiled target fits any, the model is judged by
the projection on the first accepted batch, with a warning.
"""

from __future__ import annotations

from gradcheck.inputs import Batch, search
from gradcheck.losses import LossPlan
from gradcheck.problems import SourceProblem, describe_exception
from gradcheck.report import LossKind


def fit_batch_and_loss(model, batch: Batch, plan: LossPlan, problem: SourceProblem, *,
                       training: bool, batch_size: int,
                       seed: int) -> tuple[Batch, LossPlan, list[str]] | None:
    """The batch and loss plan to run the step on, and warnings; None if no batch runs forward.

    ``batch`` is the default batch and ``problem`` how the step failed on it.
    """
    from gradcheck.step import forward

    accepted: list[Batch] = []
    fitted: list[LossPlan] = []
    loss_errors: list[str] = []

    def accepts(candidate: Batch) -> bool:
        import tensorflow as tf

        sources = [getattr(v, "value", v) for v in model.trainable_variables]
        try:
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(sources)
                outputs = forward(model, candidate.value, training)
                if _has_empty_output(outputs):  # a conv longer than its input
                    return False
                accepted.append(candidate)
                found, value = _fitting_plan(model, candidate.value, outputs, plan, training,
                                             loss_errors)
            if found is None:
                return False
            tape.gradient(value, sources)  # the backward pass runs too (empty convolutions fail)
        except Exception:
            return False
        fitted.append(found)
        return True

    found = search(model, batch.index_tree, batch.specs, batch_size=batch_size, seed=seed,
                   accepts=accepts)
    if found is not None:
        return found, fitted[-1], []  # the plan of the last accepted batch
    if not accepted or plan.kind is not LossKind.COMPILED:
        return None
    from gradcheck.targets import projection_fallback

    reason = loss_errors[0] if loss_errors else problem.message
    projection, warning = projection_fallback(reason)
    return accepted[0], projection, [warning]


def _fitting_plan(model, inputs, outputs, plan: LossPlan, training: bool,
                  errors: list[str]) -> tuple[LossPlan | None, object]:
    """``plan`` and its loss if that is a finite float scalar on these outputs, else a compiled
    plan with targets that fit and its loss, else (None, None); failures go to ``errors``."""
    from gradcheck.targets import candidate_fits, compiled_compute

    plans = [plan]
    if plan.kind is LossKind.COMPILED:
        plans += [LossPlan(plan.kind, f"{plan.detail}; {fit.description}",
                           compiled_compute(fit, training)) for fit in candidate_fits(model)]
    zero_loss = None  # a loss of exactly 0 (no target matched anything) is the last resort
    for candidate in plans:
        try:
            value = candidate.compute(model, inputs, outputs)
        except Exception as exc:
            errors.append(describe_exception(exc))
            continue
        if not _is_finite_scalar(value):
            continue
        if float(value) != 0.0:
            return candidate, value
        zero_loss = zero_loss or (candidate, value)
    return zero_loss or (None, None)


def _has_empty_output(outputs) -> bool:
    import keras

    return any(0 in tuple(getattr(output, "shape", ()) or ()) for output in keras.tree.flatten(outputs))


def _is_finite_scalar(value) -> bool:
    import math

    import tensorflow as tf

    try:
        value = tf.convert_to_tensor(value)
    except Exception:
        return False
    return value.shape.rank == 0 and value.dtype.is_floating and math.isfinite(float(value))
