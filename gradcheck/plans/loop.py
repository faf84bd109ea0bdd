"""The user's own training loop: one step function (``train.py:train_step``), run intercepted.

The step runs for the steps training needs, exactly as a model's own ``train_step`` does
(``plans.steps``): every ``tape.gradient`` call (``UnconnectedGradients.ZERO`` requests
included) and every optimizer ``apply`` / ``apply_gradients`` / ``minimize`` is intercepted and
applied to a snapshot, so that gradients accumulated and applied every k-th call, or an EMA copy
assigned after the optimizer step, are judged as the loop trains them; the state of everything
the step's code reaches is restored afterwards.  It judges every trainable variable of the
models, modules and variables its code reaches (``load.reach``), plus any variable it asked a
gradient for or handed an optimizer; a variable first seen during the step (a model built on
its first call, a variable reached another way) makes the steps run again, so that every
judged variable is watched from the start.  Its arguments come from ``plans.step_arguments``.
"""

from __future__ import annotations

import contextlib
import functools
import sys

from gradcheck.load.steps import StepReturnedModel, StepSource
from gradcheck.plans.base import Plan, StepRun
from gradcheck.plans.intercepted import replay_intercepted
from gradcheck.plans.step_arguments import StepArguments, candidates, named_arguments
from gradcheck.plans.steps import Steps, StepsRecord, run_steps, steps_said
from gradcheck.plans.train_step import describe
from gradcheck.plans.variables import underlying
from gradcheck.problems import ErrorKind, SourceProblem, describe_exception
from gradcheck.report import LossKind

#: Runs of the step at most while it keeps creating (or using) variables not yet watched.
MAX_RUNS = 3


class LoopPlan(Plan):
    """One step of the user's training loop (``load.steps.StepSource``)."""

    kind = LossKind.LOOP

    @classmethod
    def applies(cls, model, options) -> bool:
        return isinstance(model, StepSource)

    def run(self, source: StepSource, options) -> StepRun:
        from gradcheck.diagnose.messages import deferred, zero_raises_warning
        from gradcheck.locations import short_text

        arguments, record = _first_run(source, options)
        raising = [short_text(call.site) for call in record.calls if call.raises]
        notes = [f"step: {source.name}({', '.join(source.parameters)}) on "
                 f"{arguments.description}."]
        warnings = [zero_raises_warning(site) for site in dict.fromkeys(raising)]
        if record.deferred:
            warnings.append(deferred(len(record.deferred), record.steps))
        return StepRun(
            kind=self.kind, detail=describe(record.calls, "loop", steps_said(record)),
            variables=record.variables,
            graph=record.graph, handles=record.handles, calls=record.calls,
            applied=record.applied, assigned=record.assigned,
            called_layers=record.called_layers, branches=record.branches,
            named_inputs=named_arguments(source, arguments.values),
            replay=lambda: _replay(source, arguments, record.variables, options.seed),
            user_calls=True, inputs_used=_inputs_used(source, arguments.values), notes=notes,
            steps=record.steps, deferred=record.deferred, warnings=warnings)


def _first_run(source: StepSource, options) -> tuple[StepArguments, StepsRecord]:
    """Run the step on each candidate until one runs; the first failure explains them all."""
    first_failure = None
    for make in candidates(source, options):
        try:
            arguments = make()
        except SourceProblem as problem:
            if options.data or problem.kind is ErrorKind.BAD_DATA:
                raise
            first_failure = first_failure or problem
            continue
        except Exception as exc:  # a model that refuses its own signature's batch
            first_failure = first_failure or SourceProblem(
                ErrorKind.TRAIN_STEP_FAILED, f"gradcheck could not build the arguments of the "
                f"step {source.name} ({describe_exception(exc)}); give them with --data "
                "module:fn.")
            continue
        try:
            return arguments, _run_until_watched(source, arguments, options.seed)
        except (StepReturnedModel, SourceProblem):
            raise
        except Exception as exc:
            problem = SourceProblem(ErrorKind.TRAIN_STEP_FAILED, f"the step {source.name} failed "
                                    f"on {arguments.description}: {describe_exception(exc)}; give "
                                    "its arguments with --data module:fn (a function returning "
                                    "the tuple of the step's positional arguments).")
            if options.data:
                raise problem from exc
            first_failure = first_failure or problem
    raise first_failure or SourceProblem(
        ErrorKind.NO_BATCH, f"the step {source.name}({', '.join(source.parameters)}) takes "
        f"{source.required} positional argument{'s' if source.required > 1 else ''}, and neither "
        "a tf.function input_signature nor the models its code reaches say what they are; give "
        "them with --data module:fn (a function returning the tuple of the step's positional "
        "arguments).")


def _run_until_watched(source: StepSource, arguments: StepArguments, seed: int) -> StepsRecord:
    """Run the steps; while the first showed variables that were not watched (built lazily, or
    reached only through what it asked gradients for), run them again watching them."""
    source.arguments = arguments.values
    for run in range(MAX_RUNS):
        result: list = []
        steps = Steps(functools.partial(_call_into, result, source, arguments), source,
                      _namer(source), functools.partial(_layer_names, source),
                      rebuilt=functools.partial(_watch_found, source, result,
                                                last=run == MAX_RUNS - 1),
                      named_inputs=named_arguments(source, arguments.values))
        record = run_steps(steps, source.judged_variables(), seed=seed)
        if not record.rebuilt:
            break
    return record


def _watch_found(source: StepSource, result: list, first, watched: list, *, last: bool) -> bool:
    """After the first step: was it a factory?  The variables it used that its code does not
    reach are judged from now on; did that (or a lazy build) change the variables judged?"""
    _check_not_a_factory(source, first, result[0] if result else None, watched)
    known = {id(underlying(v)) for v in source.extra}
    source.extra += [v for v in first.unjudged.values() if id(underlying(v)) not in known]
    now = source.judged_variables()
    return not last and [id(underlying(v)) for v in now] != [id(underlying(v)) for v in watched]


def _call_into(result: list, source: StepSource, arguments: StepArguments) -> None:
    result.append(_call(source, arguments))


def _call(source: StepSource, arguments: StepArguments):
    """The step itself; whatever it prints goes to stderr (the report may be on stdout)."""
    with contextlib.redirect_stdout(sys.stderr):
        return source.function(*arguments.values)


def _check_not_a_factory(source: StepSource, first, returned, watched: list) -> None:
    """A no-argument function whose first step computed no gradient and returned a model was a
    factory (``first``: the step's interceptor record)."""
    import keras
    import tensorflow as tf

    if first.calls or first.handed:
        return
    if isinstance(returned, (keras.layers.Layer, tf.Module)) and not source.required:
        raise StepReturnedModel(returned)
    if not watched:
        raise SourceProblem(ErrorKind.NOT_A_MODEL, f"{source.source}: {source.name} computes no "
                            "gradient and reaches no trainable variable, so it is neither a "
                            "training step nor a model factory gradcheck can call (a factory "
                            "takes no argument and returns the model).")


def _replay(source: StepSource, arguments: StepArguments, variables: list, seed: int):
    """The step again, as recorded, recording nothing: nothing applied, all restored."""
    source.arguments = arguments.values
    return replay_intercepted(lambda: _call(source, arguments), source, variables, seed=seed,
                              name_optimizer=_namer(source))


def _namer(source: StepSource):
    """Optimizer -> the name the step's code holds it by, else its own name."""
    names = source.optimizer_names()

    def name(optimizer) -> str:
        held = names.get(id(optimizer))
        if held:
            return held
        own = getattr(optimizer, "name", None)
        if callable(getattr(optimizer, "get_name", None)):
            own = optimizer.get_name()
        return str(own or type(optimizer).__name__)

    return name


def _layer_names(source: StepSource) -> set[str]:
    from gradcheck.layers import layers_of

    return {layer.name for layer in layers_of(source) if getattr(layer, "name", None)}


def _inputs_used(source: StepSource, values: tuple) -> tuple:
    """The report's ``inputs``: every array among the step's arguments, by argument name."""
    import numpy as np

    from gradcheck.plans.inputs import InputSpec, input_used

    used = []
    for tensor, name in named_arguments(source, values).values():
        try:
            used.append(input_used(InputSpec(name, (), None), np.asarray(tensor)))
        except Exception:  # a tensor numpy cannot hold (strings of odd shapes, say)
            continue
    return tuple(used)
