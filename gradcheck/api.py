"""The engine: analyze sources or models into a ``Report``.  Prints nothing."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from gradcheck import __version__
from gradcheck.options import Options
from gradcheck.problems import ErrorKind, SourceProblem, describe_exception, is_out_of_memory, printable
from gradcheck.report import Report
from gradcheck.results import AllowRule, ModelReport, SourceError, Status


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ and absl banners off the user's terminal (call before importing it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")


def tensorflow_quietly():
    """TensorFlow, imported (once) with its Python and absl loggers at ERROR."""
    quiet_tensorflow()
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    return tf


def analyze_sources(sources: Sequence[str], options: Options) -> list[ModelReport]:
    """Analyze each source; a source that fails becomes an error entry, the rest go on."""
    tensorflow_quietly()
    from gradcheck.load.user_code import import_custom_objects

    try:
        custom = import_custom_objects(list(options.custom_objects))
    except SourceProblem as problem:
        if options.debug:
            traceback.print_exception(problem)
        return [_failed(source, problem) for source in sources]
    return [analyze_source(source, options, custom) for source in sources]


def analyze_source(source: str, options: Options, custom: dict[str, Any], *,
                   on_stage: Callable[[str], None] | None = None,
                   contain_interrupts: bool = False) -> ModelReport:
    """Load and analyze one source; any failure becomes that source's error entry.

    A model file or factory may raise anything, ``SystemExit`` included, and that must end
    only this source, never the run.  ``contain_interrupts`` also turns a ``KeyboardInterrupt``
    into the source's error: in a worker process that ignores SIGINT, only the user's code can
    raise one.  ``on_stage`` hears ``"loading"`` and ``"analyzing"``.
    """
    import keras

    from gradcheck.budget import MemoryBudget, default_budget, in_force
    from gradcheck.hooks.calls import FirstCalls
    from gradcheck.hooks.loading import recording_creation
    from gradcheck.hooks.memory import guarded_variables
    from gradcheck.load import load_source
    from gradcheck.load.activations import check_activations

    stage = on_stage or (lambda name: None)
    budget = MemoryBudget(options.max_memory or default_budget())
    try:
        with in_force(budget), guarded_variables(budget):
            stage("loading")
            keras.utils.set_random_seed(options.seed)  # fresh weights are part of the verdict
            # a factory's keras.ops lines (for cause.location) and its models' first calls
            with recording_creation(), FirstCalls():
                model = load_source(source, custom_objects=custom, safe_mode=not options.unsafe,
                                    weights=options.real_weights)
            check_activations(model, options)  # before the step allocates them
            stage("analyzing")
            return analyze_model(model, options, source=source)
    except SourceProblem as problem:
        if options.debug:  # the user's own error, with the traceback that led to it
            traceback.print_exception(problem)
        return _failed(source, problem)
    except KeyboardInterrupt as exc:
        if not contain_interrupts:
            raise
        return _failed(source, SourceProblem(ErrorKind.INTERRUPTED, f"{source}: its code raised "
                                             f"{describe_exception(exc)} while loading or running "
                                             "the step."))
    except BaseException as exc:  # a bug of ours, an exotic model, or SystemExit from its code
        if options.debug:
            traceback.print_exc()
        return _failed(source, unexpected_problem(source, exc))


def unexpected_problem(source: str, exc: BaseException) -> SourceProblem:
    """The error entry for an exception nobody translated: out of memory, an exit, or a bug."""
    if is_out_of_memory(exc):
        return SourceProblem(ErrorKind.OUT_OF_MEMORY, f"{source}: the analysis ran out of memory "
                             f"({describe_exception(exc)}); give a smaller --batch-size or --input "
                             "sizes, or a lower --max-memory so such models are refused up front.")
    if isinstance(exc, SystemExit):
        return SourceProblem(ErrorKind.EXITED, f"{source}: code run while loading it called "
                             f"sys.exit({exc.code!r}); a model must not end the process.")
    first_line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return SourceProblem(ErrorKind.INTERNAL, f"{source}: gradcheck failed unexpectedly "
                         f"({type(exc).__name__}: {first_line}); rerun with --debug for the "
                         "traceback and report it.")


def _failed(source: str, problem: SourceProblem) -> ModelReport:
    message, shown = problem.message, printable(source)
    if not message.startswith(shown):
        message = f"{shown}: {message}"
    return ModelReport(source=source, ok=False, error=SourceError(problem.kind.value, message))


def analyze_model(model, options: Options, *, source: str = "<model>", plan=None) -> ModelReport:
    """Judge an in-memory model by the step that trains it and explain every trainable variable.

    The plan (``plan`` if given, else ``plans.choice``'s) runs the step and yields a ``StepRun``;
    ``diagnose.verdicts`` turns it into verdicts, whichever plan ran.
    """
    from gradcheck.diagnose.holders import untracked_trainable
    from gradcheck.diagnose.reach import unreached_parts
    from gradcheck.diagnose.verdicts import judge
    from gradcheck.load.steps import StepReturnedModel
    from gradcheck.plans.choice import judged_step
    from gradcheck.plans.prepare import build_by_calling, needs_a_call, run_until_built

    name = getattr(model, "name", "") or ""
    own_step = plan is not None or _has_own_step(model, options)  # may build its sub-models
    # no variables yet is not "no variables": call the model first (its own step builds it)
    called = own_step or not needs_a_call(model) or build_by_calling(model, options)
    if not own_step and called and not model.trainable_variables and not untracked_trainable(model):
        return _nothing_to_train(source, name)
    try:
        run = run_until_built(model, lambda: plan.run(model, options) if plan is not None
                              else judged_step(model, options), rerun=not own_step)
    except StepReturnedModel as returned:  # a function run as a step was a factory after all
        return analyze_model(returned.model, options, source=source)
    results = judge(run, model)
    if not results and not own_step:  # called by the step, and still nothing to train
        return _nothing_to_train(source, name)
    run.warnings.extend(unreached_parts(model, run.variables, results))
    if options.graph_dir:
        from gradcheck.export import write_graph

        loss_node = run.calls[0].loss_node if run.calls else "loss"
        write_graph(run.graph, results, loss_node, Path(options.graph_dir), source)
    notes = list(run.notes)
    if not all(r.graph_agrees for r in results):
        notes.append("the op graph and the tape disagree on some variables; the tape's verdict "
                     "is reported.")
    return ModelReport(source=source, ok=True, loss=run.kind, loss_detail=run.detail,
                       model_name=name, variables=tuple(results),
                       op_count=run.graph.number_of_nodes(), notes=tuple(notes),
                       inputs=run.inputs_used, warnings=tuple(run.warnings), steps=run.steps)


def _nothing_to_train(source: str, name: str) -> ModelReport:
    return ModelReport(source=source, ok=True, model_name=name,
                       notes=("the model has no trainable variables: nothing can learn, "
                              "nothing to check.",))


def _has_own_step(model, options: Options) -> bool:
    """Is the model judged by its own training step?"""
    from gradcheck.plans.loop import LoopPlan
    from gradcheck.plans.train_step import OwnComputeLossPlan, OwnTrainStepPlan

    return any(plan.applies(model, options)
               for plan in (LoopPlan, OwnTrainStepPlan, OwnComputeLossPlan))


def check(model_or_source: Any, *, allow: str | Iterable[str | dict | AllowRule] = (),
          fail_on: str | Iterable[str | Status] = ("unconnected",), **options: Any) -> Report:
    """Analyze a model (or a step function of your training loop, or a source string, or a list of
    them) and return the gated ``Report``.

    ``allow`` takes the CLI's ``[SOURCE::]GLOB[=REASON]`` entries (or tables, or ``AllowRule``);
    ``fail_on`` the statuses that fail the gate (``"unconnected,zero"`` or a list); ``options``
    are the fields of ``Options`` (``batch_size``, ``seed``, ``loss``, ``graph_dir`` …).
    Nothing is printed; a source that cannot be analyzed is an entry of ``report.errors``.
    """
    opts = keyword_options(options, caller="check()")
    if isinstance(model_or_source, (str, os.PathLike)):
        models = analyze_sources([os.fspath(model_or_source)], opts)
    elif isinstance(model_or_source, (list, tuple)):
        models = analyze_sources([os.fspath(s) for s in model_or_source], opts)
    else:
        models = [analyze_in_process(_judged_object(model_or_source), opts)]
    return gated(models, allow=allow, fail_on=fail_on)


def analyze_in_process(model, options: Options, *, source: str = "<model>", plan=None) -> ModelReport:
    """``analyze_model`` for a model the caller holds: a problem becomes the report's error."""
    tensorflow_quietly()
    try:
        return analyze_model(model, options, source=source, plan=plan)
    except SourceProblem as problem:
        return _failed(source, problem)


def _judged_object(value):
    """A model as it is; a step function of a training loop as a ``StepSource``; a plain
    ``tf.Module`` through ``ModuleModel``."""
    from gradcheck.load import as_model
    from gradcheck.load.steps import StepSource, is_step_function

    if callable(value) and not hasattr(value, "trainable_variables") and is_step_function(value):
        name = getattr(value, "__name__", None) or type(value).__name__
        return StepSource(value, "<step>", name)
    return as_model(value)


def gated(models: list[ModelReport], *, allow: str | Iterable[str | dict | AllowRule] = (),
          fail_on: str | Iterable[str | Status] = ("unconnected",)) -> Report:
    """The ``Report`` of ``models`` under ``allow`` rules and the ``fail_on`` statuses."""
    from gradcheck import gate

    statuses = frozenset(Status(s) for s in _names(fail_on))
    rules = [r if isinstance(r, AllowRule) else gate.parse_allow(r)
             for r in ([allow] if isinstance(allow, (str, dict)) else allow)]
    return gate.apply(models, version=__version__, fail_on=statuses, allow=rules, baseline=None)


def _names(value: str | Iterable[str | Status]) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [item.value if isinstance(item, Status) else str(item) for item in value]


def keyword_options(options: dict[str, Any], *, caller: str) -> Options:
    """Keyword options as ``Options``: lists become tuples, paths strings; an unknown keyword is a
    ``TypeError`` naming it (``caller`` says whose)."""
    known = set(Options.__dataclass_fields__)
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"{caller} got an unknown option {unknown[0]!r}; options are "
                        f"{', '.join(sorted(known))}, plus allow and fail_on.")
    fields = {}
    for key, value in options.items():
        if key in ("custom_objects", "inputs") and isinstance(value, (str, os.PathLike)):
            value = [value]
        if isinstance(value, (list, tuple)):
            value = tuple(os.fspath(v) if isinstance(v, os.PathLike) else v for v in value)
        elif isinstance(value, os.PathLike):
            value = os.fspath(value)
        fields[key] = value
    return Options(**fields)
