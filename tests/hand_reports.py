"""Hand-built reports for the format, config and gate tests (no TensorFlow).

``hand_models`` are raw analysis results (no allow/baseline marks); ``hand_report``
is the same run after the gate, with the marks set by hand so format tests do not
depend on ``gate.apply``.  Fixtures are registered by importing them in conftest.py.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from gradcheck.report import (
    AllowRule,
    BaselineEntry,
    Cause,
    CauseKind,
    Cut,
    LossKind,
    ModelReport,
    Report,
    SourceError,
    Status,
    VariableResult,
)

TOY = "models/toy.keras"
BROKEN = "models/broken.keras"
FACTORY = "models/build.py:make_empty"


def _var(path: str, status: Status, cause: Cause | None = None, **extra) -> VariableResult:
    unconnected = status is Status.UNCONNECTED
    return VariableResult(
        path=path,
        shape=extra.pop("shape", (4, 8)),
        layer=path.rsplit("/", 1)[0],
        dtype="float32",
        none=unconnected,
        zero=status in (Status.UNCONNECTED, Status.ZERO),
        status=status,
        cause=cause,
        **extra,
    )


BLOCKED_MESSAGE = (
    "quant/kernel: every path to the loss, 'out_a', is cut by ArgMax in quant: "
    "use a straight-through estimator or softmax instead of argmax."
)


def toy_variables() -> tuple[VariableResult, ...]:
    """One variable per verdict: connected, each cause, zero, nonfinite, and two to mark."""
    return (
        _var("dense/kernel", Status.CONNECTED),
        _var("dense/bias", Status.CONNECTED, shape=(8,)),
        _var("extra/kernel", Status.UNCONNECTED, Cause(
            CauseKind.UNUSED, "extra/kernel is never read: use it in call() or stop creating it.",
            layer="extra")),
        _var("head_b/kernel", Status.UNCONNECTED, Cause(
            CauseKind.DETACHED,
            "head_b/kernel only reaches out_b, which has no loss: give it a loss.",
            reaches=("out_b",))),
        _var("quant/kernel", Status.UNCONNECTED, Cause(
            CauseKind.BLOCKED, BLOCKED_MESSAGE, op_type="ArgMax", op="toy/quant/ArgMax",
            layer="quant", cuts=(Cut("ArgMax", "toy/quant/ArgMax", "quant"),
                                 Cut("Cast", "toy/quant/Cast", "quant")))),
        _var("mystery/kernel", Status.UNCONNECTED, Cause(
            CauseKind.UNKNOWN, "the tape finds no gradient for mystery/kernel: inspect the layer."),
            graph_agrees=False),
        _var("relu_dead/kernel", Status.ZERO),
        _var("nan/kernel", Status.NONFINITE),
        _var("frozen/kernel", Status.UNCONNECTED, Cause(
            CauseKind.BLOCKED, "frozen/kernel is cut by StopGradient: remove it or allow it.",
            op_type="StopGradient", op="toy/frozen/StopGradient", layer="frozen",
            cuts=(Cut("StopGradient", "toy/frozen/StopGradient", "frozen"),))),
        _var("legacy/kernel", Status.UNCONNECTED, Cause(
            CauseKind.UNUSED, "legacy/kernel is never read: use it in call() or stop creating it.",
            layer="legacy")),
    )


def hand_model_list() -> tuple[ModelReport, ...]:
    """A model with every verdict, a source error, and a model with no variables and a note."""
    return (
        ModelReport(source=TOY, ok=True, loss=LossKind.COMPILED, model_name="toy",
                    loss_detail="out_a: mse; out_b: no loss", variables=toy_variables(),
                    op_count=57),
        ModelReport(source=BROKEN, ok=False, error=SourceError(
            "corrupt",
            "models/broken.keras is not a Keras archive: re-save it with model.save().")),
        ModelReport(source=FACTORY, ok=True, loss=LossKind.PROJECTION, model_name="empty",
                    loss_detail="random projection of 1 output", op_count=3,
                    notes=("no trainable variables",)),
    )


ALLOW_FROZEN = AllowRule(pattern="frozen/*", reason="frozen on purpose")
STALE_RULE = AllowRule(pattern="gone/*", reason="old head", source="*.keras")
LEGACY_ENTRY = BaselineEntry(source=TOY, path="legacy/kernel", status="unconnected")
FIXED_ENTRY = BaselineEntry(source=TOY, path="old/kernel", status="unconnected")

#: what hand_report must count: failing = extra, head_b, quant, mystery;
#: warnings = relu_dead (zero), nan (nonfinite), frozen (allowed), legacy (baselined).
EXPECTED_FAILING = {"extra/kernel", "head_b/kernel", "quant/kernel", "mystery/kernel"}
EXPECTED_WARNINGS = {"relu_dead/kernel", "nan/kernel", "frozen/kernel", "legacy/kernel"}


def _gated(v: VariableResult) -> VariableResult:
    if v.path == "frozen/kernel":
        return replace(v, allowed=ALLOW_FROZEN.reason)
    if v.path == "legacy/kernel":
        return replace(v, baselined=True)
    return v


def hand_report_value() -> Report:
    """The run of ``hand_model_list`` after the gate, marks set by hand."""
    toy, broken, factory = hand_model_list()
    toy = replace(toy, variables=tuple(_gated(v) for v in toy.variables))
    return Report(
        version="9.9.9",
        models=(toy, broken, factory),
        fail_on=frozenset({Status.UNCONNECTED}),
        stale_allows=(STALE_RULE,),
        fixed=(FIXED_ENTRY,),
    )


@pytest.fixture
def hand_models() -> tuple[ModelReport, ...]:
    """Raw analysis results, before the gate."""
    return hand_model_list()


@pytest.fixture
def hand_report() -> Report:
    """A gated report covering every verdict, cause, mark, error, note, stale rule and fix."""
    return hand_report_value()
