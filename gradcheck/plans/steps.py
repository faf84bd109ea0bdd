"""A model's own training step, run for as many steps as training needs to show what it touches.

One step misses what later steps do: a target network that follows the online one by an EMA
``assign`` moves only once the online weights have moved; gradient accumulation applies on
step k only; a LoRA adapter's A gets a gradient once B has left zero.  So the step runs
``MIN_STEPS`` times at least, eagerly, with the optimizers' updates **really applied**
(``hooks.interception`` with ``apply=True``), and goes on while a step trains a variable no
step trained before, or while gradients were computed that no optimizer applied yet and the step
ran a branch of its own (a ``tf.cond`` / an ``if`` on a tensor that may apply them on a later
step), up to ``MAX_STEPS``.  Everything is restored afterwards: the model's and the metrics'
variables and the RNGs (``plans.state.PreservedState``), every optimizer that applied, unbuilt
again if the step built it (``plans.state.ObjectsRestored``), and every other variable the steps
wrote (``hooks.variables.VariableWrites``: accumulators and counters Keras does not track).

The first step is recorded op by op (the op graph the causes are read from); the later ones only
through the interception (gradient calls, what each optimizer was handed, what changed).  A
gradient call of a later step counts as the first step's call at the same line (the n-th call at
a line as the n-th); a call seen only later gets a node of its own.  Verdicts merge over the
steps: a variable is trained when some step hands it a gradient an optimizer applies, or
changes it.

``fit`` runs the step compiled (``tf.function``): a weight read only inside a loop iteration or
a cond branch these inputs did not run gets exact zeros there, not None.  When a variable gets
None from every call eagerly, the step is traced once as ``fit`` traces it, nothing executed,
to see which gradients the compiled step would hand out (``compiled_step_gradients``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field

from gradcheck.hooks.eager import FunctionsRunEagerly
from gradcheck.hooks.interception import StepInterceptor
from gradcheck.hooks.layers import BranchRecorder, LayerCalls
from gradcheck.hooks.ops import OpRecorder
from gradcheck.hooks.variables import VariableWrites
from gradcheck.plans.base import AppliedGradient, GradientCall, TapeVerdict
from gradcheck.plans.opgraph import build_op_graph, variable_nodes
from gradcheck.plans.recorded import sublayers, tape_verdict
from gradcheck.plans.state import ObjectsRestored, PreservedState

#: Every model judged by its own step runs at least this many steps: the second shows what
#: the first one's updates set in motion (an EMA target, a weight whose partner left zero).
MIN_STEPS = 2


#: No more steps than this: a gradient applied only after it is said in the report (a warning),
#: and judged by the gradient the steps computed.
MAX_STEPS = 8


@dataclass
class StepsRecord:
    """What the steps showed, in ``StepRun`` terms."""

    variables: list
    graph: object
    handles: list
    calls: list[GradientCall]
    applied: dict[int, list[AppliedGradient]]
    assigned: set[int]
    called_layers: frozenset
    branches: list
    steps: int = 1  #: how many steps ran
    trained_late: bool = False  #: a step after the first trained a variable none trained before
    deferred: set[int] = field(default_factory=set)  #: computed, never applied within MAX_STEPS
    compiled_zero: set[int] = field(default_factory=set)  #: None eagerly, zeros in fit's graph
    rebuilt: bool = False  #: the first step created trainable variables: run again


class _Paused:
    """Pauses the op recorder (and so the branch recorder) while an optimizer really applies."""

    def __init__(self, recorder):
        self.recorder = recorder

    def __enter__(self):
        self.before, self.recorder.paused = self.recorder.paused, True

    def __exit__(self, *exc):
        self.recorder.paused = self.before
        return False


class _NoOps:
    """The branch recorder's stand-in recorder in the later, unrecorded steps."""

    paused = False

    @staticmethod
    def producer_of(tensor):
        return None


def run_steps(model, data, variables: list, *, seed: int) -> StepsRecord:
    """Run ``model.train_step(data)`` for the steps training needs (see the module docstring);
    the model is left unchanged."""
    import keras

    names = variable_nodes(variables)
    tf_vars = [getattr(v, "value", v) for v in variables]
    nodes = {id(v.handle): (v.handle, node) for v, node in zip(tf_vars, names)}
    name = _namer(model)
    recorder = OpRecorder(nodes)
    with PreservedState(model) as preserved, ObjectsRestored() as restored, \
            VariableWrites(while_reading=lambda: _Paused(recorder)):
        keras.utils.set_random_seed(seed)
        with FunctionsRunEagerly(), recorder, LayerCalls() as layer_calls, \
                BranchRecorder(recorder) as branches, \
                StepInterceptor(variables, tape_verdict, name, apply=True, before_apply=restored.add,
                                while_applying=lambda: _Paused(recorder)) as seen:
            model.train_step(data)
        first = seen.record
        if [id(v) for v in model.trainable_variables] != [id(v) for v in variables]:
            return StepsRecord(variables, None, [], [], {}, set(), frozenset(), [], rebuilt=True)
        merged = _Merged(first, len(variables))
        progress = _Progress(merged, preserved.changed(variables), _branched(branches))
        while progress.steps < MAX_STEPS and progress.goes_on():
            with FunctionsRunEagerly(), BranchRecorder(_NoOps()) as later_branches, \
                    StepInterceptor(variables, tape_verdict, name, apply=True,
                                    before_apply=restored.add) as later:
                model.train_step(data)
            merged.add(later.record, progress.steps + 1)
            progress.step(preserved.changed(variables), _branched(later_branches))
    record = _record(model, recorder, variables, names, merged, progress, layer_calls, branches)
    record.compiled_zero = _compiled_zeros(model, data, variables, record, name)
    return record


@contextlib.contextmanager
def nothing_applied(model, variables: list):
    """A block that runs (part of) the step again for a probe: nothing applied, every value it
    writes (weights, accumulators, RNGs) put back."""
    with PreservedState(model), VariableWrites(), \
            StepInterceptor(variables, lambda grad: None, _namer(model)):
        yield


def _guarded(model, variables: list, branches: list) -> list:
    """The branches, their sides not taken run under ``nothing_applied`` when a probe runs them
    (the side not taken of a step's cond may apply an optimizer)."""
    def guard(side):
        def run():
            with nothing_applied(model, variables):
                return side()
        return run

    return [dataclasses.replace(b, not_taken=guard(b.not_taken)) if b.not_taken is not None
            else b for b in branches]


def _branched(recorder) -> bool:
    """Did the step run a branch of its own (in user code: not an optimizer's internal cond)?"""
    return any(branch.location is not None for branch in recorder.branches)


def _namer(model):
    def name(optimizer) -> str:
        return optimizer_name(model, optimizer)

    return name


def optimizer_name(model, optimizer) -> str:
    """The model attribute that holds ``optimizer`` (``d_optimizer``), else the optimizer's name."""
    for name, value in vars(model).items():
        if value is optimizer and not name.startswith("_"):
            return name
    for name, value in vars(model).items():
        if value is optimizer:
            return name.lstrip("_")
    return str(getattr(optimizer, "name", type(optimizer).__name__))


def _record(model, recorder, variables, names, merged, progress, layer_calls, branches):
    """The op graph of the first step, with every merged gradient call anchored in it."""
    import tensorflow as tf

    targets = [call.target for call in merged.first.calls]
    graph, first_node = build_op_graph(
        recorder, handles={node: var.path for node, var in zip(names, variables)}, outputs={},
        loss=targets[0] if targets else tf.constant(0.0),
        layer_names={layer.name for layer in sublayers(model)})
    assigned = progress.changed - merged.trained()  # changed by the step's own code
    calls = []
    for number, call in enumerate(merged.calls):
        node = None
        if number < len(targets):
            node = recorder.producer_of(targets[number]) if number else first_node
        if node is None:
            node = f"loss:{number}"
            graph.add_node(node, type="Const", layer=None, meta=False)
        graph.nodes[node]["loss"] = True
        by_hand = call.optimizer is None and bool(assigned & set(call.results))
        calls.append(GradientCall(node, call.results, call.site, call.optimizer, by_hand))
    merged.first.produced.clear()
    handles = [node if graph.succ[node] else None for node in names]
    return StepsRecord(variables, graph, handles, calls, merged.applied, assigned,
                       frozenset(layer_calls.called),
                       _guarded(model, variables, branches.branches), steps=progress.steps,
                       trained_late=progress.trained_late, deferred=progress.deferred())


class _Merged:
    """The gradient calls and optimizer hand-outs of every step, as one list of calls."""

    def __init__(self, first, count: int):
        self.first = first
        self.calls = [_Call(call.site, dict(call.results), call.optimizer) for call in first.calls]
        self._keys = _keys(first.calls)
        self.applied: dict[int, list[AppliedGradient]] = {}
        self._add_handed(first, list(range(len(first.calls))))

    def add(self, record, step: int) -> None:
        numbers = []
        for key, call in zip(_keys(record.calls), record.calls):
            if key in self._keys:
                number = self._keys.index(key)
                mine = self.calls[number]
                for index, verdict in call.results.items():
                    mine.results[index] = _combined(mine.results.get(index), verdict)
                mine.optimizer = mine.optimizer or call.optimizer
            else:
                number = len(self.calls)
                self._keys.append(key)
                self.calls.append(_Call(call.site, dict(call.results), call.optimizer))
            numbers.append(number)
        self._add_handed(record, numbers)

    def _add_handed(self, record, numbers: list[int]) -> None:
        for index, handed in record.handed.items():
            self.applied.setdefault(index, []).extend(
                AppliedGradient(h.optimizer, h.result, None if h.call is None else numbers[h.call])
                for h in handed)

    def trained(self) -> set[int]:
        """Variables some optimizer was handed a finite gradient tensor for, in some step."""
        return {index for index, handed in self.applied.items()
                if any(not h.verdict.none and h.verdict.finite for h in handed)}

    def computed(self) -> set[int]:
        """Variables some gradient call returned a tensor for, in some step."""
        return {index for call in self.calls for index, verdict in call.results.items()
                if not verdict.none}


@dataclass
class _Call:
    site: object
    results: dict
    optimizer: str | None


def _keys(calls) -> list[tuple]:
    """A key per call: its line, and how many calls at that line came before it in the step."""
    seen: dict[tuple, int] = {}
    keys = []
    for call in calls:
        line = (getattr(call.site, "path", None), getattr(call.site, "line", None))
        keys.append((*line, seen.get(line, 0)))
        seen[line] = seen.get(line, 0) + 1
    return keys


def _combined(old: TapeVerdict | None, new: TapeVerdict) -> TapeVerdict:
    """One verdict over two steps: a tensor if either gave one; nonfinite only if every tensor
    was (a loss-scale optimizer skips the steps whose scaled gradients overflow, then trains);
    zero only if every finite tensor was."""
    if old is None or old.none or (not old.finite and new.finite):
        return new
    if new.none or (old.finite and not new.finite):
        return old
    return TapeVerdict(none=False, zero=old.zero and new.zero, finite=old.finite)


class _Progress:
    """Which variables the steps trained so far, and whether another step may show more."""

    def __init__(self, merged: _Merged, changed: set[int], branched: bool):
        self.merged, self.steps, self.trained_late = merged, 1, False
        self.changed = set(changed)
        self._trained = merged.trained() | self.changed
        self._new, self._branched = bool(self._trained), branched

    def step(self, changed: set[int], branched: bool) -> None:
        self.steps += 1
        self.changed |= changed
        trained = self.merged.trained() | self.changed
        self._new = bool(trained - self._trained)
        self.trained_late = self.trained_late or self._new
        self._trained, self._branched = trained, branched

    def deferred(self) -> set[int]:
        """Computed but never applied, while a branch of the step may still apply them."""
        waiting = self.merged.computed() - self._trained
        return waiting if self._branched else set()

    def goes_on(self) -> bool:
        return self.steps < MIN_STEPS or self._new or bool(self.deferred())


def _compiled_zeros(model, data, variables: list, record: StepsRecord, name) -> set[int]:
    """Variables None from every eager call that the compiled step (``fit``'s ``tf.function``)
    hands a gradient: read only inside control flow on a path these inputs did not run, where
    the graph's gradient is exact zeros.  Traced once, nothing executed or applied."""
    import tensorflow as tf

    eager_none = {index for call in record.calls for index, verdict in call.results.items()
                  if verdict.none}
    eager_none -= {index for call in record.calls for index, verdict in call.results.items()
                   if not verdict.none}
    if not eager_none:
        return set()
    try:
        with PreservedState(model), StepInterceptor(variables, lambda grad: grad is None,
                                                     name) as seen:
            tf.function(model.train_step).get_concrete_function(data)
    except Exception:  # the step does not trace (Python side effects): no conclusion
        return set()
    in_graph = {index for call in seen.record.calls for index, none in call.results.items()
                if not none}
    return eager_none & in_graph
