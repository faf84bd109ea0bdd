"""SARIF 2.1.0 for code-scanning dashboards: one result per finding and per source error."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from gradcheck.diagnose import messages
from gradcheck.formats import words
from gradcheck.results import ModelReport, VariableResult

if TYPE_CHECKING:  # the formats read a Report; report.py shows itself through them
    from gradcheck.report import Report

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_RULE_INDEX = {rule.id: i for i, rule in enumerate(messages.RULES)}


def render(report: Report, *, color: bool = False) -> str:
    """Render the report as a SARIF 2.1.0 log; ``color`` is ignored."""
    return json.dumps(to_dict(report), indent=2) + "\n"


def to_dict(report: Report) -> dict:
    """The SARIF log as plain JSON data."""
    results = []
    for model in report.models:
        results += _model_results(report, model)
    run = {
        "tool": {"driver": _driver(report.version)},
        "results": results,
        "properties": {
            "summary": words.summary_dict(report),
            "staleAllows": [words.stale_allow_message(r) for r in report.stale_allows],
            "fixed": [words.fixed_message(e) for e in report.fixed],
            "inputs": {m.source: words.inputs_line(m) for m in report.models if m.inputs},
        },
    }
    notifications = [_notification(model, text) for model in report.models
                     for text in words.warning_messages(model)]
    if notifications:  # warnings about the analysis itself, not findings: SARIF's notifications
        run["invocations"] = [{"executionSuccessful": True,
                               "toolExecutionNotifications": notifications}]
    return {"$schema": SCHEMA, "version": "2.1.0", "runs": [run]}


def _notification(model: ModelReport, text: str) -> dict:
    uri = words.artifact_path(model.source).replace("\\", "/")
    return {"level": "warning", "message": {"text": text},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": uri}}}]}


def _driver(version: str) -> dict:
    return {
        "name": "gradcheck",
        "version": version,
        "informationUri": words.INFORMATION_URI,
        "rules": [_rule(rule) for rule in messages.RULES],
    }


def _rule(rule: messages.Rule) -> dict:
    return {
        "id": rule.id,
        "name": rule.name,
        "shortDescription": {"text": rule.short},
        "fullDescription": {"text": f"{rule.full} {rule.help}"},
        "help": {"text": rule.help},
        "defaultConfiguration": {"level": "error"},
    }


def _model_results(report: Report, model: ModelReport) -> list[dict]:
    if not model.ok:
        message = words.source_error_message(model)
        return [_result(messages.SOURCE_ERROR, "error", message, model.source)]
    results = []
    for v in words.findings(model):
        level = "error" if report.failing(v) else "warning"
        result = _result(messages.rule_for(v), level, words.finding_message(v), model.source, v)
        results.append(result)
    return results


def _result(rule: messages.Rule, level: str, message: str, source: str,
            v: VariableResult | None = None) -> dict:
    location: dict = {
        "physicalLocation": {
            # Models are binary files; line 1 is the only region code scanning can show.
            "artifactLocation": {"uri": words.artifact_path(source).replace("\\", "/")},
            "region": {"startLine": 1},
        }
    }
    key = f"{source}::{rule.id}"
    if v is not None:
        location["logicalLocations"] = [
            {"name": v.path, "fullyQualifiedName": f"{source}::{v.path}", "kind": "member"}
        ]
        key = f"{source}::{v.path}::{v.status.value}"
    result = {
        "ruleId": rule.id,
        "ruleIndex": _RULE_INDEX[rule.id],
        "level": level,
        "message": {"text": message},
        "locations": [location],
        # Binary artifacts give code scanning nothing to fingerprint; name the finding instead.
        "partialFingerprints": {"gradcheckFinding/v1": key},
    }
    user_line = words.annotated_location(v) if v is not None else None
    if user_line is not None:
        _point_at_user_code(result, user_line)
    upstream = words.finding_location(v) if v is not None else None
    if upstream is not None and upstream.package is not None:
        _relate_package_code(result, upstream)
    if v is not None and words.gate_note(v):
        result["suppressions"] = [{"kind": "external", "justification": words.gate_note(v)}]
    return result


def _relate_package_code(result: dict, location) -> None:
    """A line inside an installed package: a related location (the repository does not hold the
    file, so it cannot be the primary one), named with the package to report it to."""
    related = result.setdefault("relatedLocations", [])
    related.append({
        "id": len(related) + 1,
        "physicalLocation": {"artifactLocation": {"uri": location.path},
                             "region": {"startLine": location.line}},
        "message": {"text": f"in {location.package}"},
    })


def _point_at_user_code(result: dict, location) -> None:
    """The user's line becomes the first physical location; the model file a related location."""
    first = result["locations"][0]
    model_file = first["physicalLocation"]
    first["physicalLocation"] = {
        "artifactLocation": {"uri": location.path},
        "region": {"startLine": location.line},
    }
    result["relatedLocations"] = [{
        "id": 1,
        "physicalLocation": model_file,
        "message": {"text": "the model source"},
    }]
