"""What a plan is, and the ``StepRun`` every plan yields.

A *plan* is one way of judging a model: the step that trains it (gradcheck's own recorded tape
step on a loss, or the model's own ``train_step``), run once on a batch.  Whatever the plan, it
yields one ``StepRun``: the trainable variables it judged, the op graph of everything the step ran,
the gradient calls of the step (target, the variables each asked for and what it returned, the
optimizer that applied them), and what a diagnosis needs to look further (the layers called,
the branches taken, a way to run the step's forward computation again).  ``diagnose.verdicts``
turns a ``StepRun`` into the report's verdicts; it does not care which plan ran.

Adding a plan: a module with a ``Plan`` subclass (``applies`` and ``run``), its ``LossKind``
member, and its place in ``plans.PLANS``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import networkx as nx

from gradcheck.problems import ErrorKind, SourceProblem
from gradcheck.results import InputUsed, LossKind, SourceLocation


@dataclass(frozen=True)
class TapeVerdict:
    """What ``tape.gradient`` returned for one variable."""

    none: bool  #: None under UnconnectedGradients.NONE
    zero: bool  #: all zeros under UnconnectedGradients.ZERO (True whenever ``none``)
    finite: bool  #: no NaN/Inf in the gradient


#: The verdict of a variable no gradient call returned a tensor for.
NONE = TapeVerdict(none=True, zero=True, finite=True)


@dataclass
class GradientCall:
    """One gradient computation of the step: a ``tape.gradient`` call of the model's own training
    step, or gradcheck's own tape on the loss it judges by."""

    loss_node: str  #: the producer of the differentiated target in the op graph
    results: dict[int, TapeVerdict]  #: index of an asked-for variable -> what the tape returned
    site: SourceLocation | None = None  #: the line of the ``tape.gradient`` call (None: ours)
    optimizer: str | None = None  #: the optimizer that applied (some of) its gradients
    by_hand: bool = False  #: no optimizer applied its gradients, but the step changed its variables
    #: ``id(handle)`` of every variable its tape watched, when the tape watches what it reads
    #: (None: gradcheck's own tape, or one that watches by hand)
    watched: frozenset[int] | None = None
    zero_requested: bool = False  #: the call asked for ``unconnected_gradients=ZERO``
    filled: frozenset[int] = frozenset()  #: variables whose None ZERO turned into zeros
    raises: bool = False  #: the real call raises (ZERO had to fill a Keras 3 variable's None)
    not_watched: frozenset[int] = frozenset()  #: asked for, but its tape never watched it


@dataclass
class AppliedGradient:
    """One variable handed to an optimizer, with or without a gradient."""

    optimizer: str  #: the model attribute holding the optimizer (or the optimizer's name)
    verdict: TapeVerdict  #: of the gradient the optimizer was handed
    call: int | None  #: index of the gradient call that produced it, if known
    filled: bool = False  #: the zeros a ZERO request put in place of None (nothing to learn)


@dataclass
class StepRun:
    """Everything one plan's step showed, for the diagnosis and the report."""

    kind: LossKind  #: how the model was judged
    detail: str  #: the loss line's detail
    variables: list  #: the trainable variables judged, in report order
    graph: nx.DiGraph  #: every op the step ran (``plans.opgraph``)
    handles: list[str | None]  #: per variable, its handle node (None: never read in the step)
    calls: list[GradientCall]  #: the step's gradient computations, in order
    #: per variable index, what each optimizer was handed; None when the plan has no optimizer
    #: of its own to watch (a loss plan: ``fit`` applies every gradient the loss gives)
    applied: dict[int, list[AppliedGradient]] | None = None
    assigned: set[int] = field(default_factory=set)  #: variables the step changed itself
    called_layers: frozenset[int] = frozenset()  #: ``id`` of every Keras layer called
    branches: list = field(default_factory=list)  #: ``hooks.layers.Branch`` of every eager branch
    named_inputs: dict = field(default_factory=dict)  #: ``id(tensor)`` -> (tensor, input name)
    #: runs the step's forward computation again on the same inputs, recording nothing and
    #: changing nothing (for probes that watch what it reads); None: it cannot be run again
    replay: Callable[[], Any] | None = None
    #: per variable given, does a ``training=False`` step's loss give it a gradient?  None: the
    #: plan has no such step (a model's own ``train_step`` decides how it calls its layers)
    learns_at_inference: Callable[[list], list[bool]] | None = None
    loss_weights: dict[str, float] = field(default_factory=dict)  #: output -> compiled weight
    user_calls: bool = False  #: the calls are the model's own (the report names each one)
    inputs_used: tuple[InputUsed, ...] = ()  #: the inputs, as the report states them
    #: ``id(handle)`` -> ``hooks.boundaries.VariableRead`` of every trainable ``tf.Variable`` the step
    #: read, tracked by the model or not, with the tapes recording at each read
    reads: dict = field(default_factory=dict)
    #: ``hooks.boundaries.Departure`` of every value that left TensorFlow in the step, in order
    departures: list = field(default_factory=list)
    #: ``id(handle)`` of variables outside ``variables`` the step's own optimizers were handed a
    #: gradient for: the step trains them, though the model does not track them
    trained_others: frozenset[int] = frozenset()
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    steps: int = 1  #: how many steps of training ran (``plans.steps``)
    #: variables a gradient call computed that no optimizer applied within the steps run, while
    #: a branch of the step may apply them later (gradient accumulation): judged by the gradient
    deferred: set[int] = field(default_factory=set)
    #: variables None from every eager call that ``fit``'s compiled step hands exact zeros
    #: (read only on a control-flow path these inputs did not run)
    compiled_zero: set[int] = field(default_factory=set)


class Plan(abc.ABC):
    """One way of judging a model; ``plans.PLANS`` tries them in order."""

    kind: ClassVar[LossKind]

    @classmethod
    @abc.abstractmethod
    def applies(cls, model, options) -> bool:
        """Is this how ``fit`` (or the user's options) says the model is trained?"""

    @abc.abstractmethod
    def run(self, model, options) -> StepRun:
        """Run the step once, recorded, leaving the model as it was; raise ``SourceProblem``."""


class NoTargetsFit(SourceProblem):
    """A loss that refused every batch gradcheck could build: the model is judged by the
    projection instead, with a warning that names ``reason``."""

    def __init__(self, message: str, reason: str):
        super().__init__(ErrorKind.TRAIN_STEP_FAILED, message)
        self.reason = reason
