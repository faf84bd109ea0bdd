"""Allowlists and baselines: decide which findings fail the gate, after analysis.

An allow rule says "this variable is meant not to learn"; a baseline records the
findings that existed when the gate was introduced.  Both mirror vulture's
whitelists: a rule that matches nothing, or a baseline entry that is fixed, is
reported so it can be removed.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence
from dataclasses import replace
from fnmatch import fnmatchcase
from pathlib import Path

from gradcheck.report import Report
from gradcheck.results import AllowRule, BaselineEntry, ModelReport, Status, VariableResult

BASELINE_MARKER = "gradcheck_baseline"
BASELINE_VERSION = 1
_ALLOW_KEYS = {"pattern", "reason", "source"}


def parse_allow(entry: str | dict) -> AllowRule:
    """Parse an allow entry: ``[SOURCE::]PATTERN[=REASON]`` or a table {pattern, reason, source}."""
    if isinstance(entry, dict):
        return _allow_from_table(entry)
    if not isinstance(entry, str):
        raise ValueError(
            f"allow entry {entry!r} must be a string '[SOURCE::]PATTERN[=REASON]' or a table."
        )
    source = None
    rest = entry
    if "::" in entry:
        source, rest = entry.split("::", 1)
        if not source.strip():
            raise ValueError(f"allow entry {entry!r} has an empty source before '::'.")
    pattern, _, reason = rest.partition("=")
    return _allow_rule(entry, pattern, reason, source)


def _allow_from_table(entry: dict) -> AllowRule:
    unknown = sorted(set(entry) - _ALLOW_KEYS)
    if unknown:
        raise ValueError(
            f"allow table has unknown key '{unknown[0]}'; expected pattern, reason and source."
        )
    for key in _ALLOW_KEYS & set(entry):
        if not isinstance(entry[key], str):
            raise ValueError(f"allow table key '{key}' must be a string.")
    return _allow_rule(entry, entry.get("pattern", ""), entry.get("reason", ""),
                       entry.get("source"))


def _allow_rule(entry: str | dict, pattern: str, reason: str, source: str | None) -> AllowRule:
    if not pattern.strip():
        raise ValueError(f"allow entry {entry!r} has no variable pattern.")
    clean_source = source.strip() if source is not None else None
    return AllowRule(pattern=pattern.strip(), reason=reason.strip(), source=clean_source or None)


def apply(
    models: Sequence[ModelReport],
    *,
    version: str,
    fail_on: frozenset[Status],
    allow: Sequence[AllowRule],
    baseline: Sequence[BaselineEntry] | None,
) -> Report:
    """Mark allowed and baselined findings, and collect stale allow rules and fixed entries.

    A rule is stale when it matched no finding, judged only when its source glob
    matches some source analyzed in this run (so running on a subset of the
    models does not flag rules written for the others).
    """
    known = {_baseline_key(e.source, e.path, e.status) for e in baseline or ()}
    used: set[AllowRule] = set()
    marked = tuple(_mark_model(m, allow, known, used) for m in models)
    analyzed = [m for m in models if m.ok]
    stale = tuple(
        rule for rule in dict.fromkeys(allow)
        if rule not in used and any(_source_matches(rule, m.source) for m in analyzed)
    )
    return Report(
        version=version,
        models=marked,
        fail_on=frozenset(fail_on),
        stale_allows=stale,
        fixed=_fixed(analyzed, baseline or ()),
    )


def _mark_model(model: ModelReport, allow: Sequence[AllowRule], known: set,
                used: set) -> ModelReport:
    if not model.ok:
        return model
    variables = tuple(_mark_variable(model.source, v, allow, known, used) for v in model.variables)
    return replace(model, variables=variables)


def _mark_variable(source: str, v: VariableResult, allow: Sequence[AllowRule], known: set,
                   used: set) -> VariableResult:
    if v.status is Status.CONNECTED:
        return replace(v, allowed=None, baselined=False)
    matching = [rule for rule in allow if _matches(rule, source, v.path)]
    used.update(matching)
    allowed = matching[0].reason if matching else None
    baselined = _baseline_key(source, v.path, v.status.value) in known
    return replace(v, allowed=allowed, baselined=baselined)


def _matches(rule: AllowRule, source: str, path: str) -> bool:
    return _source_matches(rule, source) and fnmatchcase(path, rule.pattern)


def _source_matches(rule: AllowRule, source: str) -> bool:
    if rule.source is None:
        return True
    return any(fnmatchcase(name, rule.source) for name in (source, posixpath.basename(source)))


def _fixed(analyzed: Sequence[ModelReport],
           baseline: Sequence[BaselineEntry]) -> tuple[BaselineEntry, ...]:
    """Baseline entries of analyzed sources whose variable is now connected or gone."""
    open_findings = {
        (_norm(m.source), v.path)
        for m in analyzed
        for v in m.variables
        if v.status is not Status.CONNECTED
    }
    sources = {_norm(m.source) for m in analyzed}
    return tuple(
        e for e in baseline
        if _norm(e.source) in sources and (_norm(e.source), e.path) not in open_findings
    )


def _norm(source: str) -> str:
    # "./m.keras" and "m.keras" name the same file; factory specs pass through unchanged.
    return posixpath.normpath(source.replace("\\", "/"))


def _baseline_key(source: str, path: str, status: str) -> tuple[str, str, str]:
    return (_norm(source), path, status)


def write_baseline(report: Report, path: Path) -> None:
    """Write every non-connected variable of ``report`` to ``path`` as a sorted JSON baseline."""
    from gradcheck.files import write_atomically

    write_atomically(Path(path), baseline_text(report))


def baseline_text(report: Report) -> str:
    """The baseline file's JSON for ``report``'s findings, sorted."""
    findings = sorted(
        {(m.source, v.path, v.status.value)
         for m in report.models for v in m.variables if v.status is not Status.CONNECTED}
    )
    data = {
        BASELINE_MARKER: BASELINE_VERSION,
        "findings": [{"source": s, "path": p, "status": st} for s, p, st in findings],
    }
    return json.dumps(data, indent=2) + "\n"


def read_baseline(path: Path) -> list[BaselineEntry]:
    """Read a baseline written by ``write_baseline``; a bad file raises ValueError naming it."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read baseline file {path}: {exc.strerror or exc}.") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"baseline file {path} is not valid JSON (line {exc.lineno}).") from exc
    if not isinstance(data, dict) or data.get(BASELINE_MARKER) != BASELINE_VERSION:
        raise ValueError(
            f"{path} is not a gradcheck baseline (expected \"{BASELINE_MARKER}\": "
            f"{BASELINE_VERSION}); write one with --write-baseline."
        )
    findings = data.get("findings")
    if not isinstance(findings, list):
        raise ValueError(f"baseline file {path} has no \"findings\" list.")
    return [_baseline_entry(path, i, item) for i, item in enumerate(findings)]


_STATUSES = {s.value for s in Status if s is not Status.CONNECTED}


def _baseline_entry(path: Path, index: int, item: object) -> BaselineEntry:
    fields = ("source", "path", "status")
    if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in fields):
        raise ValueError(
            f"baseline file {path}: finding {index} must have string source, path and status."
        )
    if item["status"] not in _STATUSES:
        raise ValueError(
            f"baseline file {path}: finding {index} has status '{item['status']}', "
            f"expected one of {', '.join(sorted(_STATUSES))}."
        )
    return BaselineEntry(source=item["source"], path=item["path"], status=item["status"])
