"""Machine-readable report with a fixed field order (the JSON contract in the README)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from gradcheck.formats import words
from gradcheck.results import (
    Cause,
    Cut,
    InputUsed,
    ModelReport,
    SourceLocation,
    VariableResult,
    ZeroReason,
)

if TYPE_CHECKING:  # the formats read a Report; report.py shows itself through them
    from gradcheck.report import Report


def render(report: Report, *, color: bool = False) -> str:
    """Render the report as indented, deterministic JSON; ``color`` is ignored."""
    return json.dumps(to_dict(report), indent=2, sort_keys=False) + "\n"


def to_dict(report: Report) -> dict:
    """The report as plain JSON data, fields in contract order."""
    return {
        "version": report.version,
        "models": [_model(report, m) for m in report.models],
        "summary": words.summary_dict(report),
        "stale_allows": [
            {"pattern": r.pattern, "reason": r.reason, "source": r.source,
             "message": words.stale_allow_message(r)}
            for r in report.stale_allows
        ],
        "fixed": [
            {"source": e.source, "path": e.path, "status": e.status}
            for e in report.fixed
        ],
    }


def _model(report: Report, model: ModelReport) -> dict:
    error = None
    if model.error is not None or not model.ok:
        error = {
            "type": model.error.type if model.error else "unknown",
            "message": words.error_message(model.error),
        }
    return {
        "source": model.source,
        "ok": model.ok,
        "error": error,
        "loss": model.loss.value if model.loss is not None else None,
        "loss_detail": model.loss_detail,
        "model_name": model.model_name,
        "op_count": model.op_count,
        "steps": model.steps,
        "notes": list(model.notes),
        "variables": [_variable(report, v) for v in model.variables],
        "inputs": [_input(used) for used in model.inputs],
        "warnings": list(model.warnings),
    }


def _input(used: InputUsed) -> dict:
    return {"name": used.name, "shape": list(used.shape), "dtype": used.dtype,
            "low": used.low, "high": used.high}


def _variable(report: Report, v: VariableResult) -> dict:
    return {
        "path": v.path,
        "shape": list(v.shape),
        "layer": v.layer,
        "dtype": v.dtype,
        "none": v.none,
        "zero": v.zero,
        "status": v.status.value,
        "cause": _cause(v.cause) if v.cause is not None else None,
        "failing": report.failing(v),
        "allowed": {"reason": v.allowed} if v.allowed is not None else None,
        "baselined": v.baselined,
        "graph_agrees": v.graph_agrees,
        "gradient_call": ({"location": v.gradient_call.location,
                           "optimizer": v.gradient_call.optimizer}
                          if v.gradient_call is not None else None),
        "zero_reason": _zero_reason(v.zero_reason) if v.zero_reason is not None else None,
    }


def _cause(cause: Cause) -> dict:
    return {
        "kind": cause.kind.value,
        "op_type": cause.op_type,
        "op": cause.op,
        "layer": cause.layer,
        "cuts": [_cut(c) for c in cause.cuts],
        "reaches": list(cause.reaches),
        "message": cause.message,
        "detail": cause.detail.value if cause.detail is not None else None,
        "location": _location(cause.location) if cause.location is not None else None,
    }


def _location(location: SourceLocation) -> dict:
    return {"path": location.path, "line": location.line, "function": location.function,
            "package": location.package}


def _zero_reason(reason: ZeroReason) -> dict:
    return {"kind": reason.kind.value, "op": reason.op, "message": reason.message,
            "location": _location(reason.location) if reason.location is not None else None}


def _cut(cut: Cut) -> dict:
    return {"op_type": cut.op_type, "op": cut.op, "layer": cut.layer}
