"""The model's own training step: ``train_step`` or ``compute_loss`` overridden in user code.

Models that override ``train_step`` (GAN, VAE, distillation trainers …) or ``compute_loss`` are
judged by the step ``fit`` really runs.  ``model.train_step(batch)`` runs for the steps training
needs (``plans.steps``), eagerly (``hooks.eager``: the bodies of ``tf.function``s run op by op
under the op recorder), with every ``tape.gradient`` call and every optimizer apply intercepted
(``hooks.interception``) and applied to a snapshot that is restored afterwards.
"""

from __future__ import annotations

import itertools
from collections import Counter

from gradcheck.diagnose import messages
from gradcheck.hooks.eager import FunctionsRunEagerly
from gradcheck.locations import LIBRARY_PACKAGES, short_text
from gradcheck.plans.base import GradientCall, NoTargetsFit, Plan, StepRun
from gradcheck.plans.batches import StepBatch, candidates, load_data, parse_overrides, unpack
from gradcheck.plans.compiled import has_compiled_loss, loss_weights
from gradcheck.plans.inputs import inputs_used
from gradcheck.plans.learned import learned_batch
from gradcheck.plans.py_functions import py_function_failure
from gradcheck.plans.state import PreservedState
from gradcheck.plans.step_source import unpacks_targets
from gradcheck.plans.steps import StepsRecord, model_steps, nothing_applied, run_steps, steps_said
from gradcheck.plans.steps import optimizer_name as optimizer_name  # its home was here
from gradcheck.plans.variables import judged_variables
from gradcheck.problems import ErrorKind, SourceProblem, describe_exception
from gradcheck.results import LossKind


def overrides(model, method: str) -> bool:
    """Does the model's class override ``method`` outside the library packages?  Their overrides
    are written for their own structured targets (boxes, token masks): those models keep the
    compiled-loss judgement."""
    owner = next((cls for cls in type(model).__mro__ if method in vars(cls)), None)
    return owner is not None and owner.__module__.split(".")[0] not in LIBRARY_PACKAGES


class MissingOptimizer(SourceProblem):
    """The training step uses an optimizer the model was not compiled with."""

    def __init__(self, message: str):
        super().__init__(ErrorKind.MISSING_OPTIMIZER, message)


class MissingAttribute(SourceProblem):
    """The training step reads an attribute the model does not have (whatever the batch)."""

    def __init__(self, message: str):
        super().__init__(ErrorKind.TRAIN_STEP_FAILED, message)


class OwnTrainStepPlan(Plan):
    """The model's own ``train_step``, run once with every call recorded; on ``batch`` if given
    (a real batch, as ``fit`` hands it), else ``--data``'s, else the first candidate that runs.
    Without ``reseed`` the RNGs are left as they are (restored after): inside a real ``fit``."""

    kind = LossKind.TRAIN_STEP
    label = "train_step"

    def __init__(self, batch: StepBatch | None = None, *, reseed: bool = True):
        self.batch = batch
        self.reseed = reseed

    @classmethod
    def applies(cls, model, options) -> bool:
        return not options.loss and overrides(model, "train_step")

    def run(self, model, options) -> StepRun:
        seed = options.seed if self.reseed else None
        batch, record = _first_step_that_runs(model, options, self._batches(model, options), seed)
        notes = [f"batch: {batch.description} [{_shapes(batch.data)}]."]
        if options.inference:
            notes.append("--inference does not apply: the model's own training step decides how "
                         "it calls its layers.")
        steps = steps_said(record)
        return StepRun(
            kind=self.kind, detail=describe(record.calls, self.label, steps),
            variables=record.variables,
            graph=record.graph, handles=record.handles, calls=record.calls, applied=record.applied,
            assigned=record.assigned, called_layers=record.called_layers,
            branches=record.branches, reads=record.reads, departures=record.departures,
            trained_others=record.trained_others,
            replay=lambda: _replay(model, batch, record.variables, seed),
            loss_weights=loss_weights(model), user_calls=True,
            inputs_used=_inputs_used(model, batch.data), notes=notes, steps=record.steps,
            deferred=record.deferred, compiled_zero=record.compiled_zero,
            warnings=[messages.deferred(len(record.deferred), record.steps)]
            if record.deferred else [])

    def _batches(self, model, options):
        if self.batch is not None:
            return [lambda: self.batch]
        if options.data:
            return [lambda: load_data(options.data)]
        # A step that computes a compiled loss unpacks (x, y): try that first, so that
        # `x, y = data` never silently splits a batch of two rows.  Last, the batch the step's
        # own errors describe (a dict batch no signature declares).
        return itertools.chain(
            candidates(model, overrides=parse_overrides(options), batch_size=options.batch_size,
                       seed=options.seed,
                       targets_first=has_compiled_loss(model) or unpacks_targets(model)),
            [lambda: learned_batch(model, batch_size=options.batch_size, seed=options.seed)])


class OwnComputeLossPlan(OwnTrainStepPlan):
    """Keras' own training step with the model's ``compute_loss``; a ``compute_loss`` no batch
    fits is judged by the projection instead, with a warning (``NoTargetsFit``)."""

    kind = LossKind.COMPUTE_LOSS
    label = "compute_loss (overridden)"

    @classmethod
    def applies(cls, model, options) -> bool:
        return not options.loss and overrides(model, "compute_loss")

    def run(self, model, options) -> StepRun:
        if getattr(model, "optimizer", None) is None:
            raise MissingOptimizer("the model overrides compute_loss, so gradcheck runs Keras' "
                                   "training step, which needs an optimizer: compile the model "
                                   "in the factory, e.g. model.compile(optimizer='adam').")
        try:
            return super().run(model, options)
        except SourceProblem as failed:
            if (options.data or failed.kind is not ErrorKind.TRAIN_STEP_FAILED
                    or isinstance(failed, (MissingAttribute, MissingOptimizer))):
                raise
            reason = failed.reason if isinstance(failed, StepFailed) else failed.message
            raise NoTargetsFit(failed.message, reason) from failed

    def _batches(self, model, options):
        if self.batch is not None or options.data:
            return super()._batches(model, options)
        return candidates(model, overrides=parse_overrides(options), batch_size=options.batch_size,
                          seed=options.seed, targets_first=True)


class StepFailed(SourceProblem):
    """The step failed on a batch; ``reason`` is its error, without the batch and the remedy."""

    def __init__(self, message: str, reason: str):
        super().__init__(ErrorKind.TRAIN_STEP_FAILED, message)
        self.reason = reason


def _replay(model, batch: StepBatch, variables: list, seed: int | None) -> None:
    """The step again, exactly as recorded but recording nothing: nothing applied, all restored."""
    import keras

    with nothing_applied(model, variables):
        if seed is not None:
            keras.utils.set_random_seed(seed)
        with FunctionsRunEagerly():
            model.train_step(batch.data)


def describe(calls: list[GradientCall], kind: str, steps: int | None = None) -> str:
    """The loss line: ``2 gradient calls (gan.py:41 → d_optimizer, gan.py:52 → g_optimizer)``,
    and ``over N steps`` when ``steps`` is given."""
    over = f" over {steps} steps" if steps else ""
    calls = [call for call in calls if call.results]
    if not calls:
        return f"{kind}: no gradient calls for the model's variables{over}"
    word = "gradient call" if len(calls) == 1 else "gradient calls"
    # A loop (a critic trained d_steps times) repeats one call: say it once, with its count.
    repeats = Counter(f"{short_text(call.site)} → "
                      f"{call.optimizer or ('updated by hand' if call.by_hand else 'no optimizer')}"
                      for call in calls)
    parts = ", ".join(f"{text} ×{count}" if count > 1 else text for text, count in repeats.items())
    return f"{kind}: {len(calls)} {word} ({parts}){over}"


def explain_step_failure(model, exc: Exception, batch_description: str) -> SourceProblem:
    """One sentence for a training step that raised: a missing optimizer or attribute of the
    model (the same on every batch), or the step's error on this batch."""
    text = str(exc)
    on_model = isinstance(exc, AttributeError) and getattr(exc, "obj", None) is model
    missing = getattr(exc, "name", None) if on_model else None
    if missing and "optimizer" in missing:
        return MissingOptimizer(
            f"the model's train_step uses self.{missing}, which the model was not compiled with; "
            f"compile it in the factory with every optimizer its train_step uses (e.g. through "
            f"the trainer's own compile({missing}=...)).")
    if missing:
        return MissingAttribute(f"the model's train_step uses self.{missing}, which the model "
                                "does not have (is it set by the trainer's own compile()?); build "
                                "and compile the model in a factory exactly as for training.")
    if isinstance(exc, AttributeError) and "NoneType" in text and "apply" in text:
        return MissingOptimizer(
            "the model's training step applies gradients with self.optimizer, but the model was "
            "not compiled with an optimizer; compile it in the factory, e.g. "
            "model.compile(optimizer='adam').")
    in_py_function = py_function_failure("train_step", exc, kind=ErrorKind.TRAIN_STEP_FAILED)
    if in_py_function is not None:
        return in_py_function
    reason = describe_exception(exc)
    return StepFailed(f"the model's train_step failed on {batch_description}: {reason}; give the "
                      "batch its train_step expects with --data module:fn (a function returning "
                      "x, (x, y) or (x, y, sample_weight)).", reason)


def _inputs_used(model, data) -> tuple:
    """The report's ``inputs``: the x of the batch the step ran on."""
    try:
        return inputs_used(model, unpack(data)[0])
    except Exception:  # an x that is no pytree of arrays (a generator's noise spec, say)
        return ()


def _first_step_that_runs(model, options, makers, seed: int | None) -> tuple[StepBatch, StepsRecord]:
    """Run the step on each candidate batch until one works; the first failure explains all."""
    first_failure = None
    for make in makers:
        try:
            with PreservedState(model):  # targets are made by calling the model
                batch = make()
        except SourceProblem as problem:
            if options.data or problem.kind is ErrorKind.BAD_DATA:
                raise
            first_failure = first_failure or problem
            continue
        except Exception as exc:
            first_failure = first_failure or SourceProblem(
                ErrorKind.TRAIN_STEP_FAILED, f"gradcheck could not build a batch for the "
                f"train_step ({describe_exception(exc)}); give it with --data module:fn.")
            continue
        try:
            return batch, _run_until_built(model, batch, seed)
        except Exception as exc:
            problem = explain_step_failure(model, exc, batch.description)
            if isinstance(problem, (MissingOptimizer, MissingAttribute)) or options.data:
                raise problem from exc
            first_failure = first_failure or problem
    if first_failure is None:
        first_failure = SourceProblem(
            ErrorKind.NO_BATCH, "neither the model nor its sub-models have an input signature to "
            "build the batch of its train_step from; give the batch with --data module:fn (a "
            "function returning x, (x, y) or (x, y, sample_weight)).")
    raise first_failure


def _run_until_built(model, batch: StepBatch, seed: int | None) -> StepsRecord:
    """Run the steps; if the first created trainable variables (lazily built sub-models), run
    them again so that every variable is watched from the start."""
    recorded = run_steps(model_steps(model, batch.data), judged_variables(model), seed=seed)
    if recorded.rebuilt:
        recorded = run_steps(model_steps(model, batch.data), judged_variables(model), seed=seed)
    return recorded


def _shapes(data) -> str:
    import keras

    parts = []
    for leaf in keras.tree.flatten(data):
        shape = tuple(getattr(leaf, "shape", ()))
        dtype = getattr(getattr(leaf, "dtype", None), "name", str(getattr(leaf, "dtype", "")))
        parts.append(f"{tuple(int(d) for d in shape)} {dtype}")
    return ", ".join(parts)
