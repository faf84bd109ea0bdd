"""What a gradcheck run finds, as plain data: frozen dataclasses and enums, no TensorFlow.

The engine fills these in; ``report.Report`` gathers them for a run; formats render them; the
CLI turns them into an exit code.  Everything here is plain data so it can be built by hand in
tests and serialized deterministically.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Status(str, enum.Enum):
    """What ``tape.gradient`` said about one trainable variable."""

    CONNECTED = "connected"  #: a tensor under NONE, not all zeros under ZERO
    UNCONNECTED = "unconnected"  #: None under NONE, zeros under ZERO
    ZERO = "zero"  #: a tensor under NONE, but exactly zero on this input
    NONFINITE = "nonfinite"  #: a tensor with NaN or Inf


class CauseKind(str, enum.Enum):
    """Why an unconnected variable gets no gradient."""

    UNUSED = "unused"  #: never read in the step
    DETACHED = "detached"  #: read, but nothing it feeds reaches the loss
    BLOCKED = "blocked"  #: a path to the loss exists, every path is cut
    UNKNOWN = "unknown"  #: the tape says None but the op graph finds a path (tape wins)
    NOT_TRAINED = "not-trained"  #: the train_step never asks a gradient for it or never applies one


class LossKind(str, enum.Enum):
    """Which scalar the step differentiated."""

    COMPILED = "compiled"
    PROJECTION = "projection"
    CUSTOM = "custom"
    TRAIN_STEP = "train_step"  #: the model's own ``train_step``, run once with every call recorded
    COMPUTE_LOSS = "compute_loss"  #: Keras' training step with the model's own ``compute_loss``
    LOOP = "loop"  #: one step of the user's own training loop (``train.py:train_step``), intercepted


@dataclass(frozen=True)
class Cut:
    """An op that takes a floating tensor from the variable's side and passes no gradient back."""

    op_type: str  #: TensorFlow op type, e.g. ``ArgMax``
    op: str  #: op name in the traced graph
    layer: str | None  #: the Keras layer whose name scope holds the op, if any


@dataclass(frozen=True)
class SourceLocation:
    """A line of code: the user's own (outside TensorFlow, Keras and installed packages), or,
    with ``package`` set, a line inside an installed package that the user can report upstream."""

    path: str  #: relative to the repository root (nearest pyproject.toml / .git), else the cwd;
    #: in an installed package, relative to the folder that holds the package (``rkan/pade.py``)
    line: int  #: 1-based line number
    function: str  #: the enclosing function, e.g. ``call``
    package: str | None = None  #: None for the user's own code, else e.g. ``"rkan 0.0.3"``


class CauseDetail(str, enum.Enum):
    """What exactly happened, refining ``unused`` / ``detached`` / ``blocked`` / ``not-trained``."""

    LAYER_NOT_CALLED = "layer-not-called"  #: the owning layer's call() never ran in the step
    WEIGHT_NOT_READ = "weight-not-read"  #: the layer ran, but its call() does not read the weight
    INFERENCE_ONLY = "inference-only"  #: read (and reaching the loss) only with training=False
    OTHER_BRANCH = "other-branch"  #: read only on a branch these inputs did not take
    ADD_LOSS_ONLY = "add-loss-only"  #: reaches only an ``add_loss`` term the judged loss leaves out
    UNTRACKED = "untracked"  #: a ``tf.Variable`` read in the step that the model does not track
    LEFT_TENSORFLOW = "left-tensorflow"  #: its value leaves TensorFlow (``.numpy()``, ``predict`` …)
    OUTSIDE_TAPE = "outside-tape"  #: read before the tape of the gradient call started recording
    #: its gradient was asked under ``UnconnectedGradients.ZERO``: the None became zeros that an
    #: optimizer applies, so it never learns and nothing says so
    ZERO_FILLED = "zero-filled"
    NOT_WATCHED = "not-watched"  #: the tape asked for its gradient never watched it


class ZeroKind(str, enum.Enum):
    """Why a connected variable's gradient is exactly zero, where the op graph shows it."""

    ZERO_PARTNER = "zero-partner"  #: multiplied by a weight that is all zeros (LoRA B, zero init)
    DEAD_ACTIVATION = "dead-activation"  #: an activation is zero on every element of the batch
    ZERO_LOSS_WEIGHT = "zero-loss-weight"  #: it only feeds outputs whose loss weight is 0
    CANCELLATION = "cancellation"  #: it reaches both sides of a subtraction that cancels exactly
    OTHER_BRANCH = "other-branch"  #: read only in a tf.cond branch (in a tf.function) not taken
    ONE_ELEMENT_SOFTMAX = "one-element-softmax"  #: through a softmax over one element (constant)
    SHIFT_REMOVED = "shift-removed"  #: a shift the normalization after it subtracts again


@dataclass(frozen=True)
class ZeroReason:
    """The explanation attached to a ``zero`` variable, when the op graph shows one."""

    kind: ZeroKind
    message: str  #: one sentence: what makes the gradient zero and what to do about it
    op: str | None = None  #: the op where it happens (the product, activation or subtraction)
    location: SourceLocation | None = None  #: the line of user code that decides it, if known


@dataclass(frozen=True)
class Cause:
    """The explanation attached to an unconnected variable."""

    kind: CauseKind
    message: str  #: one sentence: what happened and what to do about it
    op_type: str | None = None  #: primary cut's op type (``blocked`` only)
    op: str | None = None  #: primary cut's op name (``blocked`` only)
    layer: str | None = None  #: primary cut's layer (``blocked``), or the owning layer (``unused``)
    cuts: tuple[Cut, ...] = ()  #: every cut between the variable and the loss
    reaches: tuple[str, ...] = ()  #: ``detached``: the outputs / final ops the variable does reach
    detail: CauseDetail | None = None  #: what exactly happened, when the step shows it
    location: SourceLocation | None = None  #: the line of user code to change, if it is user code


@dataclass(frozen=True)
class GradientCallSite:
    """The ``tape.gradient`` call of a training step that gave a variable its gradient."""

    location: str  #: ``file.py:LINE`` of the call in the user's code
    optimizer: str | None = None  #: the model attribute holding the optimizer that applied it
    site: SourceLocation | None = None  #: the same call, with its path (for SARIF and GitHub)


@dataclass(frozen=True)
class VariableResult:
    """One trainable variable's verdict."""

    path: str  #: Keras ``Variable.path``, e.g. ``dense_1/kernel``
    shape: tuple[int, ...]
    layer: str  #: owning layer (the path without its last component)
    dtype: str
    none: bool  #: ``tape.gradient`` returned None under UnconnectedGradients.NONE
    zero: bool  #: the gradient under UnconnectedGradients.ZERO is all zeros
    status: Status
    cause: Cause | None = None  #: set for ``unconnected`` variables
    graph_agrees: bool = True  #: False when the op graph and the tape disagree (the tape wins)
    allowed: str | None = None  #: the allow rule's reason ("" if none given) when an allow rule matches
    baselined: bool = False  #: the finding is recorded in the baseline file
    gradient_call: GradientCallSite | None = None  #: train_step/compute_loss plans: who trained it
    zero_reason: ZeroReason | None = None  #: set for ``zero`` variables when the op graph shows why


@dataclass(frozen=True)
class SourceError:
    """Why a source could not be analyzed."""

    type: str  #: short machine-readable kind, e.g. ``missing``, ``corrupt``, ``custom-object``
    message: str  #: one sentence naming the problem and the remedy


@dataclass(frozen=True)
class InputUsed:
    """One input the step was run on, as the report states it."""

    name: str  #: the model's name for the input
    shape: tuple[int, ...]  #: the full shape, batch dim included
    dtype: str
    low: float | None = None  #: the smallest value in the batch (None: not numeric)
    high: float | None = None  #: the largest value in the batch (None: not numeric)


@dataclass(frozen=True)
class ModelReport:
    """The result for one source given on the command line."""

    source: str  #: the source exactly as the user gave it
    ok: bool
    error: SourceError | None = None
    loss: LossKind | None = None
    loss_detail: str = ""  #: human description of the loss, e.g. which outputs have losses
    model_name: str = ""
    variables: tuple[VariableResult, ...] = ()
    op_count: int = 0  #: ops in the traced forward graph
    notes: tuple[str, ...] = ()  #: extra remarks (e.g. "no trainable variables")
    inputs: tuple[InputUsed, ...] = ()  #: the synthetic (or given) inputs the step ran on
    warnings: tuple[str, ...] = ()  #: the analysis is weaker than asked (e.g. a loss fallback)
    steps: int = 1  #: steps of training run (a model's own train_step runs several)


@dataclass(frozen=True)
class AllowRule:
    """An allowlist entry: a glob on variable paths, optionally scoped to a source."""

    pattern: str
    reason: str = ""
    source: str | None = None  #: glob on the source string; None means every source


@dataclass(frozen=True)
class BaselineEntry:
    """A finding recorded in a baseline file."""

    source: str
    path: str
    status: str


class ExitCode(enum.IntEnum):
    """The process exit codes, documented in the README."""

    OK = 0  #: every source analyzed, nothing fails the gate
    FINDINGS = 1  #: some variable fails the gate (by default: unconnected)
    USAGE = 2  #: bad command line or configuration
    SOURCE_ERROR = 3  #: some source could not be analyzed (the others still were)
    INTERRUPTED = 130  #: Ctrl-C (SIGINT): the run stopped, no report written
    TERMINATED = 143  #: SIGTERM: the run stopped as for Ctrl-C


def exit_code(report) -> ExitCode:
    """Source errors outrank findings: a gate that could not look must not pass or merely warn."""
    if report.errors:
        return ExitCode.SOURCE_ERROR
    if report.failures:
        return ExitCode.FINDINGS
    return ExitCode.OK
