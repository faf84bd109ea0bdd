"""A training step — a model's own ``train_step`` or one step of the user's loop (``Steps``) —
run for as many steps as training needs to show what it touches.

One step misses what later steps do: a target network that follows the online one by an EMA
``assign`` moves only once the online weights have moved; gradient accumulation applies on
step k only; a LoRA adapter's A gets a gradient once B has left zero.  So the step runs
``MIN_STEPS`` times at least, eagerly, with the optimizers' updates **really applied**
(``hooks.interception`` with ``apply=True``), and goes on while a step trains a variable no
step trained before, or while gradients were computed that no optimizer applied yet and the step
ran a branch of its own (a ``tf.cond`` / an ``if`` on a tensor that may apply them on a later
step), up to ``MAX_STEPS``.  Everything is restored afterwards: the owner's variables (the
model's, or those of everything the loop's code reaches), the metrics' and the RNGs
(``plans.state.PreservedState``), every optimizer that applied, unbuilt again if the step built
it (``plans.state.ObjectsRestored``), and every other variable the steps wrote
(``hooks.variables.VariableWrites``: accumulators and counters Keras does not track).

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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gradcheck.hooks.eager import FunctionsRunEagerly
from gradcheck.hooks.interception import StepInterceptor
from gradcheck.hooks.layers import BranchRecorder
from gradcheck.hooks.variables import VariableWrites
from gradcheck.plans.base import AppliedGradient, TapeVerdict
from gradcheck.plans.intercepted import Recorded, Recording
from gradcheck.plans.recorded import sublayers, tape_verdict
from gradcheck.plans.state import ObjectsRestored, PreservedState
from gradcheck.plans.variables import judged_variables, underlying

#: Every model judged by its own step runs at least this many steps: the second shows what
#: the first one's updates set in motion (an EMA target, a weight whose partner left zero).
MIN_STEPS = 2


#: No more steps than this: a gradient applied only after it is said in the report (a warning),
#: and judged by the gradient the steps computed.
MAX_STEPS = 8


class StepsRecord(Recorded):
    """What the steps showed, in ``StepRun`` terms (a ``Recorded`` of the first step's graph and
    of every step's calls and hand-outs)."""

    def __init__(self, *args, steps: int = 1, trained_late: bool = False,
                 deferred: set[int] | None = None, rebuilt: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = steps  #: how many steps ran
        self.trained_late = trained_late  #: a later step trained a variable none trained before
        self.deferred = deferred or set()  #: computed, never applied within MAX_STEPS
        self.compiled_zero: set[int] = set()  #: None eagerly, zeros in fit's graph
        self.rebuilt = rebuilt  #: the first step created trainable variables: run again


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


@dataclass
class Steps:
    """What ``run_steps`` runs: ``step()`` (one step, no argument: a model's ``train_step`` on
    its batch, the user's loop step on its arguments) and what it needs to know of it."""

    step: Callable[[], Any]
    owner: Any  #: whose state (``plans.state``) the steps may change: a model, a ``StepSource``
    name_optimizer: Callable[[Any], str]
    layer_names: Callable[[], set[str]]  #: the layers that name nodes of the op graph
    #: given the first step's interceptor record and the variables watched: did the variables
    #: to judge change (built lazily, found by the step)?  Then the steps run again.
    rebuilt: Callable[[Any, list], bool]
    named_inputs: dict | None = None
    #: the step traced as ``fit`` compiles it, nothing executed (None: not compiled by ``fit``)
    traced: Callable[[], Any] | None = None


def model_steps(model, data) -> Steps:
    """A model's own ``model.train_step(data)``, as ``run_steps`` runs it."""
    import tensorflow as tf

    return Steps(lambda: model.train_step(data), model, _namer(model),
                 lambda: {layer.name for layer in sublayers(model)},
                 rebuilt=lambda first, watched: _ids(judged_variables(model)) != _ids(watched),
                 traced=lambda: tf.function(model.train_step).get_concrete_function(data))


def run_steps(steps: Steps, variables: list, *, seed: int | None) -> StepsRecord:
    """Run ``steps.step()`` for the steps training needs (see the module docstring); the owner
    is left unchanged.  ``seed`` None: the RNGs as they are (restored after)."""
    import keras

    name, restored = steps.name_optimizer, ObjectsRestored()
    recording = Recording(steps.owner, variables, name, steps.named_inputs, apply=True,
                          before_apply=restored.add,
                          while_applying=lambda: _Paused(recording.recorder))
    with PreservedState(steps.owner) as preserved, restored, \
            VariableWrites(while_reading=lambda: _Paused(recording.recorder)):
        if seed is not None:
            keras.utils.set_random_seed(seed)
        with recording:
            steps.step()
        first = recording.seen.record
        if steps.rebuilt(first, variables):
            return StepsRecord(variables, None, [], [], {}, set(), frozenset(), [], rebuilt=True)
        merged = _Merged(first, len(variables))
        progress = _Progress(merged, preserved.changed(variables), _branched(recording.branches))
        while progress.steps < MAX_STEPS and progress.goes_on():
            with FunctionsRunEagerly(), BranchRecorder(_NoOps()) as later_branches, \
                    StepInterceptor(variables, tape_verdict, name, apply=True,
                                    before_apply=restored.add) as later:
                steps.step()
            merged.add(later.record, progress.steps + 1)
            progress.step(preserved.changed(variables), _branched(later_branches))
    record = _record(steps, recording, variables, merged, progress)
    record.compiled_zero = _compiled_zeros(steps, variables, record)
    return record


def steps_said(record: StepsRecord) -> int | None:
    """The step count the loss line states: when a step after the first showed something (or
    the bound was reached); a step that trains everything at once needs no mention."""
    shown = record.trained_late or record.deferred or record.steps > MIN_STEPS
    return record.steps if shown else None


def _ids(variables: list) -> list[int]:
    return [id(underlying(v)) for v in variables]


@contextlib.contextmanager
def nothing_applied(model, variables: list, name_optimizer: Callable[[Any], str] | None = None):
    """A block that runs (part of) the step again for a probe: nothing applied, every value it
    writes (weights, accumulators, RNGs) put back; ``model`` is the owner of the state."""
    with PreservedState(model), VariableWrites(), \
            StepInterceptor(variables, lambda grad: None, name_optimizer or _namer(model)):
        yield


def _guarded(steps: Steps, variables: list, branches: list) -> list:
    """The branches, their sides not taken run under ``nothing_applied`` when a probe runs them
    (the side not taken of a step's cond may apply an optimizer)."""
    def guard(side):
        def run():
            with nothing_applied(steps.owner, variables, steps.name_optimizer):
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


def _record(steps: Steps, recording: Recording, variables, merged, progress) -> StepsRecord:
    """The op graph of the first step, with every merged gradient call anchored in it."""
    assigned = progress.changed - merged.trained()  # changed by the step's own code
    graph, calls, handles = recording.anchored(variables, merged.calls, assigned,
                                               steps.layer_names())
    merged.first.produced.clear()
    merged.first.filled.clear()
    return StepsRecord(variables, graph, handles, calls, merged.applied, assigned,
                       frozenset(recording.layer_calls.called),
                       _guarded(steps, variables, recording.branches.branches),
                       merged.first.unjudged.values(), recording.boundaries(),
                       steps=progress.steps, trained_late=progress.trained_late,
                       deferred=progress.deferred())


class _Merged:
    """The gradient calls and optimizer hand-outs of every step, as one list of calls."""

    def __init__(self, first, count: int):
        self.first = first
        self.calls = [_Call.of(call) for call in first.calls]
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
                mine.merge_requests(call)
            else:
                number = len(self.calls)
                self._keys.append(key)
                self.calls.append(_Call.of(call))
            numbers.append(number)
        self._add_handed(record, numbers)

    def _add_handed(self, record, numbers: list[int]) -> None:
        for index, handed in record.handed.items():
            self.applied.setdefault(index, []).extend(
                AppliedGradient(h.optimizer, h.result, None if h.call is None else numbers[h.call],
                                h.filled)
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
    """One gradient call over the steps: the first step's (its tape's watched variables), with
    every step's results and ZERO requests merged in."""

    site: object
    results: dict
    optimizer: str | None
    watched: tuple | None = None
    zero_requested: bool = False
    filled: set = field(default_factory=set)
    raises: bool = False
    not_watched: set = field(default_factory=set)

    @classmethod
    def of(cls, call) -> _Call:
        return cls(call.site, dict(call.results), call.optimizer, call.watched,
                   call.zero_requested, set(call.filled), call.raises, set(call.not_watched))

    def merge_requests(self, call) -> None:
        """A later step's call at the same line: its ZERO fills and unwatched sources count."""
        self.zero_requested = self.zero_requested or call.zero_requested
        self.filled |= call.filled
        self.raises = self.raises or call.raises
        self.not_watched |= call.not_watched


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


def _compiled_zeros(steps: Steps, variables: list, record: StepsRecord) -> set[int]:
    """Variables None from every eager call that the compiled step (``fit``'s ``tf.function``)
    hands a gradient: read only inside control flow on a path these inputs did not run, where
    the graph's gradient is exact zeros.  Traced once, nothing executed or applied."""
    eager_none = {index for call in record.calls for index, verdict in call.results.items()
                  if verdict.none}
    eager_none -= {index for call in record.calls for index, verdict in call.results.items()
                   if not verdict.none}
    if not eager_none or steps.traced is None:
        return set()
    try:
        with PreservedState(steps.owner), StepInterceptor(
                variables, lambda grad: grad is None, steps.name_optimizer) as seen:
            steps.traced()
    except Exception:  # the step does not trace (Python side effects): no conclusion
        return set()
    in_graph = {index for call in seen.record.calls for index, none in call.results.items()
                if not none}
    return eager_none & in_graph
