"""The loss plans: gradcheck's own recorded tape step on a loss it computes.

``--loss`` (custom), the compiled loss, or the fixed-seed projection of the outputs; each differs
only in its ``LossFunction``.  The step runs on ``--data``'s batch, or on the synthetic batch; if
the model refuses that batch or its targets, both are searched together (``plans.search``).
"""

from __future__ import annotations

import itertools

from gradcheck.plans.base import GradientCall, Plan, StepRun
from gradcheck.plans.batches import synthetic_batch, user_batch
from gradcheck.plans.compiled import compiled_loss, has_compiled_loss, loss_weights
from gradcheck.plans.inputs import inputs_used
from gradcheck.plans.loss import (
    LossFunction,
    custom_loss,
    projection,
    projection_fallback,
    with_model_losses,
)
from gradcheck.plans.reaching import id_variants, mask_variants, parts_missed
from gradcheck.plans.recorded import forward, has_regularizers, run_step
from gradcheck.plans.search import fit_batch_and_loss
from gradcheck.plans.synthetic import DEFAULT_SIZES
from gradcheck.plans.targets import TARGET_KINDS
from gradcheck.plans.variables import judged_variables
from gradcheck.problems import ErrorKind, SourceProblem
from gradcheck.results import LossKind

#: The note a report carries when the input search chose the inputs.
SEARCHED_NOTE = ("the model refused the default input shapes; the inputs (listed with the report) "
                 "were found by gradcheck's input search.")


class LossStepPlan(Plan):
    """A plan that judges the model by one recorded tape step on ``loss(…)``."""

    warnings: tuple[str, ...] = ()  #: said in the report whatever the step finds

    def loss(self, model, options, *, training: bool, data) -> LossFunction:
        """The loss to differentiate; ``data`` is ``--data``'s (x, y, sample_weight) or None."""
        raise NotImplementedError

    def run(self, model, options) -> StepRun:
        import keras

        training = not options.inference
        variables = judged_variables(model)
        data = user_batch(options)
        loss = self.loss(model, options, training=training, data=data)
        reached = []
        if data is not None:  # the user's batch: nothing to search
            keras.utils.set_random_seed(options.seed)
            step = run_step(model, data[0], variables, loss, training=training)
            inputs, used, searched, warnings = data[0], inputs_used(model, data[0]), False, []
        else:
            step, batch, loss, warnings = _run_fitted_step(
                model, synthetic_batch(model, options), variables, loss, options)
            inputs, used, searched = batch.value, batch.used(), batch.sizes != DEFAULT_SIZES
            if loss.kind is LossKind.COMPILED and _constant(step):
                step, loss = _targets_that_keep_the_loss_alive(model, batch.value, variables,
                                                               step, loss, options)
            step, batch, reached = _reaching_every_part(model, batch, variables, step, loss,
                                                        options)
            inputs, used = batch.value, batch.used()
        inference_loss = self.loss(model, options, training=False, data=data) if training else None
        detail = with_model_losses(loss, add_loss_terms=step.add_loss_terms > 0,
                                   regularizers=has_regularizers(model))
        return StepRun(
            kind=loss.kind, detail=detail, variables=variables, graph=step.graph,
            handles=step.handles, calls=[GradientCall(step.loss_node, dict(enumerate(step.verdicts)))],
            called_layers=step.called_layers, branches=step.branches,
            named_inputs=step.named_inputs, reads=step.reads, departures=step.departures,
            replay=lambda: forward(model, step.tensors, training),
            learns_at_inference=(None if inference_loss is None else
                                 lambda asked: _learns_at_inference(model, inputs, asked,
                                                                    inference_loss)),
            loss_weights=loss_weights(model), inputs_used=used,
            notes=([SEARCHED_NOTE] if searched else []) + reached,
            warnings=[*self.warnings, *warnings])


class CustomLossPlan(LossStepPlan):
    """``--loss module:fn``: the user says what the loss is."""

    kind = LossKind.CUSTOM

    @classmethod
    def applies(cls, model, options) -> bool:
        return bool(options.loss)

    def loss(self, model, options, *, training: bool, data) -> LossFunction:
        return custom_loss(options.loss)


class CompiledLossPlan(LossStepPlan):
    """A model compiled with a loss (and no training step of its own): ``compute_loss`` on
    synthetic targets that fit each output's loss."""

    kind = LossKind.COMPILED

    @classmethod
    def applies(cls, model, options) -> bool:
        return has_compiled_loss(model)

    def loss(self, model, options, *, training: bool, data) -> LossFunction:
        return compiled_loss(model, training, data)


class ProjectionPlan(LossStepPlan):
    """No loss to be had: a fixed-seed random projection of every floating output, plus
    ``model.losses``; with ``fallback_reason``, the compiled loss (or a ``compute_loss``
    override) refused every batch and the report warns."""

    kind = LossKind.PROJECTION

    def __init__(self, fallback_reason: str | None = None):
        self._fallback = projection_fallback(fallback_reason) if fallback_reason else None
        self.warnings = (self._fallback[1],) if self._fallback else ()

    @classmethod
    def applies(cls, model, options) -> bool:
        return True

    def loss(self, model, options, *, training: bool, data) -> LossFunction:
        return self._fallback[0] if self._fallback else projection()


def _run_fitted_step(model, batch, variables, loss: LossFunction, options):
    """Run the step; if the model refuses the default batch or its targets, fit both and rerun.

    Returns the step, the batch and the loss it ran on, and the warnings to report.
    """
    import keras

    training = not options.inference
    keras.utils.set_random_seed(options.seed)
    try:
        return run_step(model, batch.value, variables, loss, training=training), batch, loss, []
    except SourceProblem as problem:
        if problem.kind not in (ErrorKind.FORWARD_FAILED, ErrorKind.LOSS_FAILED):
            raise
        failure = problem
        fitted = fit_batch_and_loss(model, batch, loss, failure, training=training,
                                    batch_size=options.batch_size, seed=options.seed)
    if fitted is None:
        raise failure
    batch, loss, warnings = fitted
    keras.utils.set_random_seed(options.seed)
    return run_step(model, batch.value, variables, loss, training=training), batch, loss, warnings


def _reaching_every_part(model, batch, variables, step, loss, options):
    """The step on the batch whose masks let the most parts of the model get a gradient
    (``plans.reaching``), and the note that says what changed (none if nothing did)."""
    import keras

    missed = parts_missed(model, variables, step.verdicts)
    notes: list[str] = []
    variants = itertools.chain(id_variants(model, batch, step.compared), mask_variants(batch))
    for variant, what in variants if missed else ():
        keras.utils.set_random_seed(options.seed)
        try:
            other = run_step(model, variant.value, variables, loss, training=not options.inference)
        except SourceProblem:
            continue
        now = parts_missed(model, variables, other.verdicts)
        if now < missed:
            step, batch, missed = other, variant, now
            notes = [f"inputs: {what}, so that the step reaches every part of the model it can "
                     "(with it on, a whole part got exact zeros)."]
        if not missed:
            break
    return step, batch, notes


def _constant(step) -> bool:
    """Did the loss give every variable exactly zero (a loss that does not depend on the outputs
    on these targets, e.g. a ranking loss handed labels it ignores)?"""
    return all(v.zero for v in step.verdicts) and not all(v.none for v in step.verdicts)


def _targets_that_keep_the_loss_alive(model, inputs, variables, step, loss, options):
    """The step on the first other kind of synthetic target whose loss gives some variable a
    non-zero gradient; the step as it was if none does."""
    import keras

    training = not options.inference
    for kind in TARGET_KINDS:
        candidate = compiled_loss(model, training, None, kind=kind)
        keras.utils.set_random_seed(options.seed)
        try:
            other = run_step(model, inputs, variables, candidate, training=training)
        except SourceProblem:
            continue
        if not _constant(other):
            return other, candidate
    return step, loss


def _learns_at_inference(model, inputs, variables: list, loss: LossFunction) -> list[bool]:
    """Per variable: does a training=False step's loss give it a gradient?

    Only these variables are watched, so the tape records just the ops downstream of them.
    """
    import tensorflow as tf

    tf_vars = [getattr(v, "value", v) for v in variables]
    try:
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(tf_vars)
            outputs = forward(model, inputs, False)
            value = tf.convert_to_tensor(loss.compute(model, inputs, outputs))
        return [g is not None for g in tape.gradient(value, tf_vars)]
    except Exception:  # the model does not run at inference on these inputs: no conclusion
        return [False] * len(tf_vars)
