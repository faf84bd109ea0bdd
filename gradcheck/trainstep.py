"""Run a model's own training step once, recording every gradient call and optimizer apply.

Models that override ``train_step`` (GAN, VAE, distillation trainers …) or ``compute_loss`` are
judged by the step ``fit`` really runs.  ``run_train_step`` calls ``model.train_step(batch)`` once,
eagerly (``tf.config.run_functions_eagerly``, so the bodies of ``tf.function``s run op by op under
the ``OpRecorder``), with two interceptions:

* every ``tf.GradientTape.gradient`` call: its target, which of the model's trainable variables it
  asks for, which results are None (it is always asked under ``UnconnectedGradients.NONE``; a
  caller that wanted ZERO gets zeros back) and the ``file:line`` of the call in the user's code;
* every optimizer ``apply`` / ``apply_gradients``: which variables each optimizer is handed, and
  with which gradient.  Nothing is applied.

Everything the step may change (the model's variables, metrics, optimizers, seed generators and
the global RNGs) is snapshotted before and restored after, so the user's model is left as it was.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from gradcheck.diagnose import TapeVerdict
from gradcheck.problems import ErrorKind, SourceProblem, describe_exception

#: Packages whose overrides of ``train_step``/``compute_loss`` are library code, written for their
#: own structured targets (boxes, token masks); their models keep the compiled-loss judgement.
LIBRARY_PACKAGES = ("keras", "keras_hub", "keras_nlp", "keras_cv", "tf_keras", "tensorflow")

_LIBRARY_DIRS = None  #: filled lazily: directories whose frames are never "the user's code"


class MissingOptimizer(SourceProblem):
    """The training step uses an optimizer the model was not compiled with."""

    def __init__(self, message: str):
        super().__init__(ErrorKind.MISSING_OPTIMIZER, message)


def own_step_kind(model) -> str | None:
    """``"train_step"`` / ``"compute_loss"`` when the model's class overrides it, else None."""
    for method in ("train_step", "compute_loss"):
        owner = next((cls for cls in type(model).__mro__ if method in vars(cls)), None)
        if owner is not None and owner.__module__.split(".")[0] not in LIBRARY_PACKAGES:
            return method
    return None


@dataclass
class GradientCall:
    """One ``tape.gradient`` call of the step."""

    location: str  #: ``file.py:LINE`` in the user's code
    target: Any  #: the differentiated tensor (alive until the graph is built)
    results: dict[int, TapeVerdict]  #: index of an asked-for trainable variable -> its verdict
    optimizer: str | None = None  #: the optimizer that applied (some of) its gradients
    loss_node: str = ""  #: the producer of ``target`` in the op graph
    by_hand: bool = False  #: no optimizer applied its gradients, but the step changed its variables


@dataclass
class AppliedGradient:
    """One variable handed to an optimizer, with or without a gradient."""

    optimizer: str  #: the model attribute holding the optimizer (or the optimizer's name)
    verdict: TapeVerdict  #: of the gradient the optimizer was handed
    call: int | None  #: index of the gradient call that produced it, if known


@dataclass
class StepRecord:
    """What one run of the training step did."""

    calls: list[GradientCall] = field(default_factory=list)
    applied: dict[int, list[AppliedGradient]] = field(default_factory=dict)  #: by variable index
    #: id(gradient tensor) -> (the tensor, its gradient call, its variable index), during the step
    produced: dict[int, tuple[Any, int, int]] = field(default_factory=dict)


class StepInterceptor:
    """Context manager patching ``GradientTape.gradient`` and the optimizers' apply methods."""

    def __init__(self, model, variables: list):
        self.model = model
        self.record = StepRecord()
        self._index = {id(_tf_variable(v)): i for i, v in enumerate(variables)}
        self._patched: list[tuple[type, str, Any]] = []

    def __enter__(self):
        import tensorflow as tf
        from keras.src.optimizers.base_optimizer import BaseOptimizer

        original_gradient = vars(tf.GradientTape)["gradient"]

        def gradient(tape, *args, **kwargs):
            return self._gradient(original_gradient, tape, *args, **kwargs)

        self._patch(tf.GradientTape, "gradient", gradient)
        for cls in _with_subclasses(BaseOptimizer):  # subclasses may override apply (loss scaling)
            if "apply" in vars(cls):
                self._patch(cls, "apply", self._apply)
            if "apply_gradients" in vars(cls):
                self._patch(cls, "apply_gradients", self._apply_gradients)
        return self

    def __exit__(self, *exc):
        for cls, name, original in reversed(self._patched):
            setattr(cls, name, original)
        return False

    def _patch(self, cls, name: str, replacement: Callable) -> None:
        """Replace ``cls.name`` by ``replacement`` (called with the instance first) until exit."""
        self._patched.append((cls, name, vars(cls)[name]))

        def patched(instance, *args, **kwargs):
            return replacement(instance, *args, **kwargs)

        setattr(cls, name, patched)

    def _gradient(self, original, tape, target, sources, output_gradients=None,
                  unconnected_gradients=None):
        import tensorflow as tf

        location = user_location()
        result = original(tape, target, sources, output_gradients=output_gradients,
                          unconnected_gradients=tf.UnconnectedGradients.NONE)
        flat_sources, flat_grads = tf.nest.flatten(sources), tf.nest.flatten(result)
        call = GradientCall(location, target, {})
        number = len(self.record.calls)
        for source, grad in zip(flat_sources, flat_grads):
            index = self._index.get(id(_tf_variable(source)))
            if index is None:
                continue  # a gradient with respect to a tensor (a gradient penalty's input)
            call.results[index] = verdict_of(grad)
            if grad is not None:
                self.record.produced[id(grad)] = (grad, number, index)
        self.record.calls.append(call)
        if unconnected_gradients is not None and \
                str(unconnected_gradients).lower().endswith("zero"):
            zeros = [tf.zeros_like(s) if g is None else g for s, g in zip(flat_sources, flat_grads)]
            return tf.nest.pack_sequence_as(result, zeros)
        return result

    def _apply(self, optimizer, grads, trainable_variables=None):
        if trainable_variables is None:
            trainable_variables = getattr(optimizer, "_trainable_variables", None) or []
        self._hand(optimizer, list(grads), list(trainable_variables))

    def _apply_gradients(self, optimizer, grads_and_vars, *args, **kwargs):
        pairs = list(grads_and_vars)
        self._hand(optimizer, [g for g, _ in pairs], [v for _, v in pairs])
        return optimizer.iterations

    def _hand(self, optimizer, grads: list, variables: list) -> None:
        name = optimizer_name(self.model, optimizer)
        for grad, variable in zip(grads, variables):
            _check_shape(name, grad, variable)
            index = self._index.get(id(_tf_variable(variable)))
            if index is None:
                continue
            produced = self.record.produced.get(id(grad)) if grad is not None else None
            call = produced[1] if produced is not None and produced[0] is grad else None
            if call is None:
                call = self._asking_call(index, returned_tensor=grad is not None)
            if call is not None and self.record.calls[call].optimizer is None:
                self.record.calls[call].optimizer = name
            self.record.applied.setdefault(index, []).append(
                AppliedGradient(name, verdict_of(grad), call))

    def _asking_call(self, index: int, *, returned_tensor: bool) -> int | None:
        """The last gradient call that asked for variable ``index`` (and got a tensor, if
        ``returned_tensor``)."""
        for number in range(len(self.record.calls) - 1, -1, -1):
            verdict = self.record.calls[number].results.get(index)
            if verdict is not None and (verdict.none != returned_tensor):
                return number
        return None


def _check_shape(optimizer: str, grad, variable) -> None:
    """Refuse what the real optimizer would fail on: a gradient of another variable's shape."""
    if grad is None:
        return
    shape = getattr(grad, "dense_shape", None)
    shape = tuple(int(d) for d in shape) if shape is not None else tuple(grad.shape)
    if shape != tuple(variable.shape):
        raise ValueError(f"{optimizer} is handed a gradient of shape {shape} for "
                         f"'{getattr(variable, 'path', variable.name)}' of shape "
                         f"{tuple(variable.shape)}: the lists passed to tape.gradient and to the "
                         "optimizer are not in the same order")


def _with_subclasses(cls) -> Iterator[type]:
    seen, stack = set(), [cls]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        yield current
        stack.extend(current.__subclasses__())


def _tf_variable(variable):
    """The ``tf.Variable`` behind a Keras variable (the object itself otherwise)."""
    import keras

    return variable.value if isinstance(variable, keras.Variable) else variable


def verdict_of(grad) -> TapeVerdict:
    """None-ness, and whether the gradient is exactly all zeros / all finite."""
    from gradcheck.step import tape_verdict

    return tape_verdict(grad)


def optimizer_name(model, optimizer) -> str:
    """The model attribute that holds ``optimizer`` (``d_optimizer``), else the optimizer's name."""
    for name, value in vars(model).items():
        if value is optimizer and not name.startswith("_"):
            return name
    for name, value in vars(model).items():
        if value is optimizer:
            return name.lstrip("_")
    return str(getattr(optimizer, "name", type(optimizer).__name__))


def user_location() -> str:
    """``file.py:LINE`` of the innermost caller outside TensorFlow and gradcheck: the user's
    ``tape.gradient`` call (or Keras' own, in Keras' default training step)."""
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if not _is_library_file(path):
            return f"{os.path.basename(path)}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"


def _is_library_file(path: str) -> bool:
    global _LIBRARY_DIRS
    if _LIBRARY_DIRS is None:
        import tensorflow as tf

        import gradcheck

        _LIBRARY_DIRS = (os.path.dirname(tf.__file__) + os.sep,
                         os.path.dirname(gradcheck.__file__) + os.sep)
    return path.startswith(_LIBRARY_DIRS) or path.startswith("<")


# --- leaving the model as it was ---------------------------------------------------------------

def state_variables(model) -> list:
    """Every variable a training step may change: the model's, its metrics', its optimizers',
    and the Keras global seed generator's."""
    import keras
    import tensorflow as tf
    from keras.src.backend.common import global_state

    found = list(model.variables)
    for metric in _metrics(model):
        found.extend(metric.variables)
    for optimizer in optimizers_of(model):
        found.extend(optimizer.variables)
    generator = global_state.get_global_attribute("global_seed_generator")
    if generator is not None:
        found.append(generator.state)
    tf_generator = _stateful_random_ops().global_generator
    if tf_generator is not None:  # tf.random.get_global_generator(), if the user made one
        found.append(tf_generator.state)
    unique, seen = [], set()
    for variable in found:
        if isinstance(variable, (keras.Variable, tf.Variable)) and id(variable) not in seen:
            seen.add(id(variable))
            unique.append(variable)
    return unique


def _stateful_random_ops():
    from tensorflow.python.ops import stateful_random_ops

    return stateful_random_ops


def _metrics(model) -> list:
    import keras

    try:
        metrics = list(getattr(model, "metrics", []) or [])
    except Exception:  # an uncompiled or half-built model: its attributes still count
        metrics = []
    metrics += [v for v in vars(model).values() if isinstance(v, keras.metrics.Metric)]
    return metrics


def optimizers_of(model) -> list:
    """The optimizers the model holds as attributes (``optimizer``, ``d_optimizer`` …)."""
    import keras

    found = []
    for value in vars(model).values():
        if isinstance(value, keras.optimizers.Optimizer) and all(value is not f for f in found):
            found.append(value)
    return found


class PreservedState:
    """Context manager: the variables of ``state_variables`` and the global RNGs come back as
    they were on exit."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        import random

        import numpy as np
        from keras.src.backend.common import global_state

        self._values = [(v, np.array(v.numpy(), copy=True)) for v in state_variables(self.model)]
        self._by_id = {id(v): value for v, value in self._values}
        self._python_random = random.getstate()
        self._numpy_random = np.random.get_state()
        # A generator the step creates lazily must not outlive it.
        self._keras_generator = global_state.get_global_attribute("global_seed_generator")
        self._tf_generator = _stateful_random_ops().global_generator
        return self

    def changed(self, variables: list) -> set[int]:
        """Indices of ``variables`` whose value differs from the snapshot (NaN equals NaN)."""
        import numpy as np

        return {i for i, v in enumerate(variables) if id(v) in self._by_id
                and not np.array_equal(v.numpy(), self._by_id[id(v)], equal_nan=True)}

    def __exit__(self, *exc):
        import random

        import numpy as np
        from keras.src.backend.common import global_state

        for variable, value in self._values:
            variable.assign(value)
        random.setstate(self._python_random)
        np.random.set_state(self._numpy_random)
        global_state.set_global_attribute("global_seed_generator", self._keras_generator)
        _stateful_random_ops().global_generator = self._tf_generator
        return False


# --- the step ----------------------------------------------------------------------------------

@dataclass
class TrainStepResult:
    """The recorded step: gradient calls, applies, and the op graph of everything it ran."""

    record: StepRecord
    graph: nx.DiGraph
    handles: list[str | None]  #: per variable, its handle node (None: never read in the step)
    #: variables the step changed itself (a hand-written update, an optimizer gradcheck does not
    #: know): ``fit`` changes them too
    assigned: set[int] = field(default_factory=set)
    called_layers: frozenset[int] = frozenset()  #: ``id`` of every Keras layer the step called


def run_train_step(model, batch, variables: list, *, seed: int) -> TrainStepResult:
    """Run ``model.train_step(batch)`` once, eagerly and recorded; the model is left unchanged."""
    import keras
    import tensorflow as tf

    from gradcheck.graph import LayerCalls, OpRecorder, build_op_graph, variable_nodes
    from gradcheck.step import _sublayers

    tf_vars = [_tf_variable(v) for v in variables]
    names = variable_nodes(variables)
    nodes = {id(v.handle): (v.handle, node) for v, node in zip(tf_vars, names)}
    eager = tf.config.functions_run_eagerly()
    with PreservedState(model) as preserved:
        keras.utils.set_random_seed(seed)
        tf.config.run_functions_eagerly(True)
        try:
            with OpRecorder(nodes) as recorder, StepInterceptor(model, variables) as intercept, \
                    LayerCalls() as calls:
                model.train_step(batch)
        finally:
            tf.config.run_functions_eagerly(eager)
        assigned = preserved.changed(variables)
    for call in intercept.record.calls:
        call.by_hand = call.optimizer is None and bool(assigned & set(call.results))
    record = intercept.record
    first = record.calls[0].target if record.calls else tf.constant(0.0)
    graph, first_node = build_op_graph(
        recorder, handles={node: var.path for node, var in zip(names, variables)}, outputs={},
        loss=first, layer_names={layer.name for layer in _sublayers(model)})
    for number, call in enumerate(record.calls):
        node = recorder.producer_of(call.target) if number else first_node
        if node is None:
            node = f"loss:{number}"
            graph.add_node(node, type="Const", layer=None, meta=False)
        graph.nodes[node]["loss"] = True
        call.loss_node = node
        call.target = None  # the graph holds what is needed
    record.produced.clear()
    handles = [node if graph.succ[node] else None for node in names]
    return TrainStepResult(record, graph, handles, assigned, frozenset(calls.called))


class MissingAttribute(SourceProblem):
    """The training step reads an attribute the model does not have (whatever the batch)."""


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
        return MissingAttribute(ErrorKind.TRAIN_STEP_FAILED, f"the model's train_step uses "
                                f"self.{missing}, which the model does not have (is it set by "
                                "the trainer's own compile()?); build and compile the model in a "
                                "factory exactly as for training.")
    if isinstance(exc, AttributeError) and "NoneType" in text and "apply" in text:
        return MissingOptimizer(
            "the model's training step applies gradients with self.optimizer, but the model was "
            "not compiled with an optimizer; compile it in the factory, e.g. "
            "model.compile(optimizer='adam').")
    return SourceProblem(ErrorKind.TRAIN_STEP_FAILED, f"the model's train_step failed on {batch_description}: "
                         f"{describe_exception(exc)}; give the batch its train_step expects with "
                         "--data module:fn (a function returning x, (x, y) or (x, y, sample_weight)).")


# --- verdicts over the whole step --------------------------------------------------------------

def judge(step: TrainStepResult, variables: list, model=None) -> list:
    """A ``VariableResult`` per trainable variable, from what the step's optimizers were handed.

    connected/zero/nonfinite: an optimizer was handed a gradient tensor for it (judged on that
    tensor), or the step's own code changed it (a hand-written update); unconnected: every
    gradient call asking for it returned None (cause read against that call's target);
    unconnected with cause ``not-trained``: no call asks for it, or no optimizer is handed a
    gradient for it.
    """
    from gradcheck.diagnose import explain, reaches_loss, status_of
    from gradcheck.report import GradientCallSite, VariableResult

    record, graph = step.record, step.graph
    reach: dict[str, set[str]] = {}

    def connected(node: str) -> set[str]:
        if node not in reach:
            reach[node] = reaches_loss(graph, node)
        return reach[node]

    facts = _layer_facts(model, variables, step)
    results = []
    for index, (variable, handle) in enumerate(zip(variables, step.handles)):
        owner = variable.path.rsplit("/", 1)[0] if "/" in variable.path else variable.path
        applied = [a for a in record.applied.get(index, []) if not a.verdict.none]
        asking = [n for n, call in enumerate(record.calls) if index in call.results]
        site, agrees, cause = None, True, None
        if applied:
            verdict = TapeVerdict(none=False, zero=all(a.verdict.zero for a in applied),
                                  finite=all(a.verdict.finite for a in applied))
            giver = next((a for a in applied if a.call is not None), None)
            if giver is not None:
                call = record.calls[giver.call]
                site = GradientCallSite(call.location, giver.optimizer)
                _, agrees = explain(graph, handle, call.loss_node, owner=owner, tape_none=False,
                                    connected=connected(call.loss_node))
            else:
                site = GradientCallSite("<unknown>", applied[0].optimizer)
        elif index in step.assigned:  # updated by the step's own code, not through an optimizer
            computed = [n for n in asking if not record.calls[n].results[index].none]
            verdict = (record.calls[computed[-1]].results[index] if computed
                       else TapeVerdict(none=False, zero=False, finite=True))
            site = GradientCallSite(record.calls[computed[-1]].location if computed
                                    else "<assigned in the step>", None)
        elif asking and all(record.calls[n].results[index].none for n in asking):
            verdict = TapeVerdict(none=True, zero=True, finite=True)
            call = record.calls[asking[-1]]
            site = GradientCallSite(call.location, call.optimizer)
            cause, agrees = explain(graph, handle, call.loss_node, owner=owner, tape_none=True,
                                    connected=connected(call.loss_node), layer=facts[index])
        else:
            verdict = TapeVerdict(none=True, zero=True, finite=True)
            cause = not_trained(record, index, owner)
        results.append(VariableResult(
            path=variable.path, shape=tuple(int(d) for d in variable.shape), layer=owner,
            dtype=str(variable.dtype), none=verdict.none, zero=verdict.zero,
            status=status_of(verdict), cause=cause, graph_agrees=agrees, gradient_call=site))
    return results


def not_trained(record: StepRecord, index: int, owner: str):
    """The cause of a variable the step never computes, or never applies, a gradient for."""
    from gradcheck.report import Cause, CauseKind

    computed = [call for call in record.calls
                if index in call.results and not call.results[index].none]
    handed = record.applied.get(index, [])
    if computed and handed:
        where = computed[-1].location
        text = (f"its gradient is computed at {where}, but '{handed[-1].optimizer}' is handed None "
                "for it: the lists passed to tape.gradient and to the optimizer differ; zip each "
                "gradient with the variable it was computed for.")
    elif computed:
        where = computed[-1].location
        text = (f"its gradient is computed at {where}, but no optimizer applies it: it is not "
                "among the variables passed to the optimizer; add it to that list (or make it "
                "non-trainable if it is frozen on purpose).")
    else:
        where = ", ".join(call.location for call in record.calls if call.results)
        calls = f"no tape.gradient call ({where}) asks for it" if where else \
            "the step makes no tape.gradient call"
        handed_to = (f"so '{handed[-1].optimizer}' is handed None for it" if handed
                     else "and no optimizer is handed it")
        text = (f"the train_step never computes a gradient for it: {calls}, {handed_to}; add it "
                "to the variables passed to tape.gradient and to the optimizer (or make it "
                "non-trainable if it is frozen on purpose).")
    return Cause(CauseKind.NOT_TRAINED, layer=owner, message=text)


def _unapplied(call: GradientCall) -> str:
    return "updated by hand" if call.by_hand else "no optimizer"


def describe(record: StepRecord, kind: str) -> str:
    """The loss line: ``2 gradient calls (gan.py:41 → d_optimizer, gan.py:52 → g_optimizer)``."""
    calls = [call for call in record.calls if call.results]
    if not calls:
        return f"{kind}: no gradient calls for the model's variables"
    word = "gradient call" if len(calls) == 1 else "gradient calls"
    # A loop (a critic trained d_steps times) repeats one call: say it once, with its count.
    repeats = Counter(f"{call.location} → {call.optimizer or _unapplied(call)}" for call in calls)
    parts = ", ".join(f"{text} ×{count}" if count > 1 else text for text, count in repeats.items())
    return f"{kind}: {len(calls)} {word} ({parts})"


def _layer_facts(model, variables: list, step: TrainStepResult) -> list:
    """Whether each variable's layer ran in the step (for the ``unused`` details), when asked."""
    from gradcheck.refine import layer_facts, opaque_scopes

    if model is None or all(handle is not None for handle in step.handles):
        return [None] * len(variables)
    return layer_facts(model, variables, step.called_layers, opaque_scopes(step.graph))


# --- the plan, end to end ----------------------------------------------------------------------

def analyze_step(model, options, *, source: str, kind: str, batch=None):
    """Judge ``model`` by its own training step (``kind``: ``train_step`` or ``compute_loss``).

    The batch is ``batch`` if given, else ``--data``, else the first candidate from the input
    signatures on which the step runs.  Returns the ``ModelReport``.
    """
    from pathlib import Path

    from gradcheck.report import LossKind, ModelReport

    if kind == "compute_loss" and getattr(model, "optimizer", None) is None:
        raise MissingOptimizer("the model overrides compute_loss, so gradcheck runs Keras' "
                               "training step, which needs an optimizer: compile the model in the "
                               "factory, e.g. model.compile(optimizer='adam').")
    step, batch, variables = _first_step_that_runs(model, options, _batches(model, options, kind,
                                                                           batch))
    results = judge(step, variables, model)
    label = "train_step" if kind == "train_step" else "compute_loss (overridden)"
    record = step.record
    if options.graph_dir:
        from gradcheck.export import write_graph

        loss_node = record.calls[0].loss_node if record.calls else "loss"
        write_graph(step.graph, results, loss_node, Path(options.graph_dir), source)
    notes = [f"batch: {batch.description} [{_shapes(batch.data)}]."]
    if options.inference:
        notes.append("--inference does not apply: the model's own training step decides how it "
                     "calls its layers.")
    if not all(r.graph_agrees for r in results):
        notes.append("the op graph and the tape disagree on some variables; the tape's verdict "
                     "is reported.")
    return ModelReport(source=source, ok=True,
                       loss=LossKind.TRAIN_STEP if kind == "train_step" else LossKind.COMPUTE_LOSS,
                       loss_detail=describe(record, label), model_name=getattr(model, "name", ""),
                       variables=tuple(results), op_count=step.graph.number_of_nodes(),
                       notes=tuple(notes), inputs=_inputs_used(model, batch.data))


def _inputs_used(model, data) -> tuple:
    """The report's ``inputs``: the x of the batch the step ran on."""
    from gradcheck.batch import unpack
    from gradcheck.inputs import inputs_used

    try:
        return inputs_used(model, unpack(data)[0])
    except Exception:  # an x that is no pytree of arrays (a generator's noise spec, say)
        return ()


def _batches(model, options, kind: str, batch):
    from gradcheck.batch import candidates, load_data
    from gradcheck.inputs import parse_override

    if batch is not None:
        return [lambda: batch]
    if options.data:
        return [lambda: load_data(options.data)]
    try:
        overrides = [parse_override(text) for text in options.inputs]
    except ValueError as exc:
        raise SourceProblem(ErrorKind.BAD_INPUT, str(exc)) from exc
    from gradcheck.losses import _has_compiled_loss

    # A step that computes a compiled loss unpacks (x, y): try that first, so that `x, y = data`
    # never silently splits a batch of two rows.
    return candidates(model, overrides=overrides, batch_size=options.batch_size, seed=options.seed,
                      targets_first=kind == "compute_loss" or _has_compiled_loss(model))


def _first_step_that_runs(model, options, makers):
    """Run the step on each candidate batch until one works; the first failure explains all."""
    first_failure = None
    for make in makers:
        try:
            with PreservedState(model):  # targets are made by calling the model
                batch = make()
        except SourceProblem as problem:
            if options.data or problem.kind == ErrorKind.BAD_DATA:
                raise
            first_failure = first_failure or problem
            continue
        except Exception as exc:
            first_failure = first_failure or SourceProblem(
                ErrorKind.TRAIN_STEP_FAILED, f"gradcheck could not build a batch for the train_step "
                f"({describe_exception(exc)}); give it with --data module:fn.")
            continue
        try:
            step, variables = _run_until_built(model, batch, options.seed)
            return step, batch, variables
        except Exception as exc:
            problem = explain_step_failure(model, exc, batch.description)
            if isinstance(problem, (MissingOptimizer, MissingAttribute)) or options.data:
                raise problem from exc
            first_failure = first_failure or problem
    if first_failure is None:
        first_failure = SourceProblem(
            ErrorKind.NO_BATCH, "neither the model nor its sub-models have an input signature to build "
            "the batch of its train_step from; give the batch with --data module:fn (a function "
            "returning x, (x, y) or (x, y, sample_weight)).")
    raise first_failure


def _run_until_built(model, batch, seed: int):
    """Run the step; if it created trainable variables (lazily built sub-models), run it again
    so that every variable is watched from the start."""
    variables = list(model.trainable_variables)
    step = run_train_step(model, batch.data, variables, seed=seed)
    now = list(model.trainable_variables)
    if [id(v) for v in now] != [id(v) for v in variables]:
        variables = now
        step = run_train_step(model, batch.data, variables, seed=seed)
    return step, variables


def _shapes(data) -> str:
    import keras

    parts = []
    for leaf in keras.tree.flatten(data):
        shape = tuple(getattr(leaf, "shape", ()))
        dtype = getattr(getattr(leaf, "dtype", None), "name", str(getattr(leaf, "dtype", "")))
        parts.append(f"{tuple(int(d) for d in shape)} {dtype}")
    return ", ".join(parts)
