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
from gradcheck.report import AllowRule, ModelReport, Report, SourceError, Status, VariableResult


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ and absl banners off the user's terminal (call before importing it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")


def _tensorflow_quietly():
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
    _tensorflow_quietly()
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
            with recording_creation():  # a factory's keras.ops lines, for cause.location
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


def analyze_model(model, options: Options, *, source: str = "<model>") -> ModelReport:
    """Run the step on an in-memory model and explain every trainable variable."""
    from gradcheck.diagnose import explain, reaches_loss, status_of
    from gradcheck.inputs import DEFAULT_SIZES
    from gradcheck.losses import plan_loss
    from gradcheck.refine import layer_facts, opaque_scopes, refine
    from gradcheck.trainstep import analyze_step, own_step_kind

    kind = None if options.loss else own_step_kind(model)
    fallback = None
    if kind is not None:  # judged by the step that really trains it (DESIGN "How a model is judged")
        try:
            return analyze_step(model, options, source=source, kind=kind)
        except SourceProblem as problem:
            fallback = _compute_loss_fallback(problem, kind, options)
    variables = list(model.trainable_variables)
    name = getattr(model, "name", "") or ""
    if not variables and not getattr(model, "built", True):
        _build_on_synthetic_inputs(model, options)  # no variables yet is not "no variables"
        variables = list(model.trainable_variables)
    if not variables:
        return ModelReport(source=source, ok=True, model_name=name,
                           notes=("the model has no trainable variables: nothing can learn, "
                                  "nothing to check.",))
    data = _user_batch(options)
    loss = plan_loss(model, custom=options.loss, training=not options.inference, data=data)
    if fallback is not None:
        loss = fallback[0]
    if data is not None:  # the user's batch: nothing to search
        import keras

        from gradcheck.inputs import inputs_used
        from gradcheck.step import run_step

        keras.utils.set_random_seed(options.seed)
        step = run_step(model, data[0], variables, loss, training=not options.inference)
        inputs, used, searched, warnings = data[0], inputs_used(model, data[0]), False, []
    else:
        step, batch, loss, warnings = _run_fitted_step(model, _synthetic_batch(model, options),
                                                       variables, loss, options)
        inputs, used, searched = batch.value, batch.used(), batch.sizes != DEFAULT_SIZES
    warnings = [fallback[1], *warnings] if fallback is not None else warnings
    results = []
    connected = reaches_loss(step.graph, step.loss_op)
    facts = (layer_facts(model, variables, step.called_layers, opaque_scopes(step.graph))
             if any(v.none for v in step.verdicts) else [None] * len(variables))
    for variable, verdict, handle, fact in zip(variables, step.verdicts, step.handles, facts):
        owner = variable.path.rsplit("/", 1)[0] if "/" in variable.path else variable.path
        cause, agrees = explain(step.graph, handle, step.loss_op, owner=owner,
                                tape_none=verdict.none, connected=connected, layer=fact)
        results.append(VariableResult(
            path=variable.path, shape=tuple(int(d) for d in variable.shape), layer=owner,
            dtype=str(variable.dtype), none=verdict.none, zero=verdict.zero,
            status=status_of(verdict), cause=cause, graph_agrees=agrees))
    results = refine(model, inputs, variables, results, step, facts=facts, connected=connected,
                     custom_loss=options.loss, training=not options.inference, data=data)
    if options.graph_dir:
        from gradcheck.export import write_graph

        write_graph(step.graph, results, step.loss_op, Path(options.graph_dir), source)
    notes = []
    if not all(r.graph_agrees for r in results):
        notes.append("the op graph and the tape disagree on some variables; the tape's verdict "
                     "is reported.")
    if searched:  # say that the search chose the inputs
        notes.append("the model refused the default input shapes; the inputs (listed with the "
                     "report) were found by gradcheck's input search.")
    return ModelReport(source=source, ok=True, loss=loss.kind, loss_detail=loss.detail,
                       model_name=name, variables=tuple(results),
                       op_count=step.graph.number_of_nodes(), notes=tuple(notes),
                       inputs=used, warnings=tuple(warnings))


def _compute_loss_fallback(problem: SourceProblem, kind: str, options: Options):
    """A ``compute_loss`` override no synthetic batch fits: (projection plan, warning), as for a
    compiled loss (``targets.projection_fallback``); anything else is re-raised."""
    from gradcheck.targets import projection_fallback
    from gradcheck.trainstep import MissingAttribute, MissingOptimizer

    if (kind != "compute_loss" or options.data or problem.kind != ErrorKind.TRAIN_STEP_FAILED
            or isinstance(problem, (MissingAttribute, MissingOptimizer))):
        raise problem
    reason = problem.message.split(": ", 1)[-1].split("; give the batch", 1)[0]
    return projection_fallback(reason)


def _run_fitted_step(model, batch, variables, loss, options: Options):
    """Run the step; if the model refuses the default batch or its targets, fit both and rerun.

    Returns the step, the batch and the loss plan it ran on, and the warnings to report.
    """
    import keras

    from gradcheck.fitting import fit_batch_and_loss
    from gradcheck.step import run_step

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


def _synthetic_batch(model, options: Options):
    """The step's default batch: the model's signature with ``--input`` applied, filled in."""
    from gradcheck.budget import charge_inputs
    from gradcheck.inputs import concrete_shape, make_batch, parse_override, signature

    try:
        overrides = [parse_override(text) for text in options.inputs]
    except ValueError as exc:
        raise SourceProblem(ErrorKind.BAD_INPUT, str(exc)) from exc
    index_tree, specs = signature(model, overrides)  # no signature, no --input: a problem
    charge_inputs([(spec.name, concrete_shape(spec, options.batch_size), spec.dtype)
                   for spec in specs])
    return make_batch(model, index_tree, specs, batch_size=options.batch_size, seed=options.seed)


def _user_batch(options: Options):
    """``--data``'s batch as (x, y, sample_weight), or None without ``--data``."""
    if not options.data:
        return None
    from gradcheck.batch import load_data, unpack

    return unpack(load_data(options.data).data)


def _build_on_synthetic_inputs(model, options: Options) -> None:
    """Create an unbuilt (subclassed) model's variables by calling it once, from ``--input``."""
    from gradcheck.inputs import describe_tree
    from gradcheck.problems import describe_exception

    data = _user_batch(options)
    inputs = data[0] if data is not None else _synthetic_batch(model, options).value
    try:
        model(inputs)
    except Exception as exc:
        raise SourceProblem(ErrorKind.FORWARD_FAILED, "building the model by calling it on the inputs "
                            f"[{describe_tree(model, inputs)}] failed: {describe_exception(exc)}; "
                            "check the shapes and dtypes given with --input NAME=DIM,DIM[:DTYPE] "
                            "or --data.") from exc


def check(model_or_source: Any, *, allow: str | Iterable[str | dict | AllowRule] = (),
          fail_on: str | Iterable[str | Status] = ("unconnected",), **options: Any) -> Report:
    """Analyze a model (or a source string, or a list of them) and return the gated ``Report``.

    ``allow`` takes the CLI's ``[SOURCE::]GLOB[=REASON]`` entries (or tables, or ``AllowRule``);
    ``fail_on`` the statuses that fail the gate (``"unconnected,zero"`` or a list); ``options``
    are the fields of ``Options`` (``batch_size``, ``seed``, ``loss``, ``graph_dir`` …).
    Nothing is printed; a source that cannot be analyzed is an entry of ``report.errors``.
    """
    from gradcheck import gate

    statuses = frozenset(Status(s) for s in _names(fail_on))
    opts = Options(**_option_fields(options))
    rules = [r if isinstance(r, AllowRule) else gate.parse_allow(r)
             for r in ([allow] if isinstance(allow, (str, dict)) else allow)]
    if isinstance(model_or_source, (str, os.PathLike)):
        models = analyze_sources([os.fspath(model_or_source)], opts)
    elif isinstance(model_or_source, (list, tuple)):
        models = analyze_sources([os.fspath(s) for s in model_or_source], opts)
    else:
        _tensorflow_quietly()
        try:
            models = [analyze_model(model_or_source, opts)]
        except SourceProblem as problem:
            models = [_failed("<model>", problem)]
    return gate.apply(models, version=__version__, fail_on=statuses, allow=rules, baseline=None)


def _names(value: str | Iterable[str | Status]) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [item.value if isinstance(item, Status) else str(item) for item in value]


def _option_fields(options: dict[str, Any]) -> dict[str, Any]:
    """``check``'s keyword options as ``Options`` fields: lists become tuples, paths strings."""
    known = set(Options.__dataclass_fields__)
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"check() got an unknown option {unknown[0]!r}; options are "
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
    return fields


