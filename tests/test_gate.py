"""Allow rules and baselines on hand-built analysis results."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hand_reports import (
    ALLOW_FROZEN,
    BROKEN,
    EXPECTED_FAILING,
    FIXED_ENTRY,
    LEGACY_ENTRY,
    STALE_RULE,
    TOY,
    hand_report_value,
)

from gradcheck import gate
from gradcheck.report import AllowRule, BaselineEntry, ExitCode, Status, exit_code

UNCONNECTED = frozenset({Status.UNCONNECTED})


def _apply(models, allow=(), baseline=None, fail_on=UNCONNECTED):
    return gate.apply(models, version="9.9.9", fail_on=fail_on, allow=allow, baseline=baseline)


def _toy(report):
    return {v.path: v for v in report.models[0].variables}


# --- parse_allow -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("dense_*", AllowRule("dense_*")),
        ("head_b/*=second head is unused", AllowRule("head_b/*", "second head is unused")),
        ("models/*.keras::frozen/*=frozen", AllowRule("frozen/*", "frozen", "models/*.keras")),
        ("a.keras::x = why", AllowRule("x", "why", "a.keras")),
        ({"pattern": "x/*", "reason": "r", "source": "a.keras"}, AllowRule("x/*", "r", "a.keras")),
        ({"pattern": "x/*"}, AllowRule("x/*")),
    ],
)
def test_parse_allow(entry, expected):
    assert gate.parse_allow(entry) == expected


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("", "no variable pattern"),
        ("=because", "no variable pattern"),
        ("::dense/*", "empty source"),
        ("a.keras::", "no variable pattern"),
        ({"patern": "x"}, "unknown key 'patern'"),
        ({"pattern": 3}, "'pattern' must be a string"),
        ({"reason": "r"}, "no variable pattern"),
        (42, "must be a string"),
    ],
)
def test_parse_allow_rejects_bad_entries(entry, words):
    with pytest.raises(ValueError, match=words):
        gate.parse_allow(entry)


# --- apply -----------------------------------------------------------------------------------


def test_apply_reproduces_the_hand_gated_report(hand_models):
    report = _apply(hand_models, allow=[ALLOW_FROZEN, STALE_RULE],
                    baseline=[LEGACY_ENTRY, FIXED_ENTRY])
    assert report == hand_report_value()
    assert {v.path for _, v in report.failures} == EXPECTED_FAILING


def test_allow_marks_only_findings(hand_models):
    report = _apply(hand_models, allow=[AllowRule("dense/*", "no")])
    assert all(v.allowed is None for v in report.models[0].variables)
    assert report.stale_allows == (AllowRule("dense/*", "no"),)


def test_allow_reason_and_empty_reason(hand_models):
    report = _apply(hand_models, allow=[gate.parse_allow("extra/*"), ALLOW_FROZEN])
    toy = _toy(report)
    assert toy["extra/kernel"].allowed == ""
    assert toy["frozen/kernel"].allowed == "frozen on purpose"
    assert toy["head_b/kernel"].allowed is None
    assert "extra/kernel" not in {v.path for _, v in report.failures}


@pytest.mark.parametrize(
    ("source_glob", "allowed"),
    [("models/toy.keras", True), ("toy.keras", True), ("*.keras", True), ("other.keras", False)],
)
def test_allow_source_scope(hand_models, source_glob, allowed):
    report = _apply(hand_models, allow=[AllowRule("head_b/*", "why", source_glob)])
    assert (_toy(report)["head_b/kernel"].allowed is not None) is allowed


def test_stale_allows_are_judged_only_for_analyzed_sources(hand_models):
    for_broken = AllowRule("*", "broken one", BROKEN)
    for_other = AllowRule("*", "not in this run", "other.keras")
    typo = AllowRule("extr/*", "typo")
    report = _apply(hand_models, allow=[ALLOW_FROZEN, for_broken, for_other, typo])
    assert report.stale_allows == (typo,)


def test_overlapping_rules_are_both_used(hand_models):
    wide = AllowRule("*/kernel", "all")
    report = _apply(hand_models, allow=[ALLOW_FROZEN, wide])
    assert report.stale_allows == ()
    assert _toy(report)["frozen/kernel"].allowed == "frozen on purpose"  # first rule wins


def test_baseline_needs_same_source_path_and_status(hand_models):
    baseline = [
        BaselineEntry("./" + TOY, "extra/kernel", "unconnected"),
        BaselineEntry(TOY, "head_b/kernel", "zero"),
        BaselineEntry("elsewhere.keras", "quant/kernel", "unconnected"),
    ]
    toy = _toy(_apply(hand_models, baseline=baseline))
    assert toy["extra/kernel"].baselined is True
    assert toy["head_b/kernel"].baselined is False
    assert toy["quant/kernel"].baselined is False


def test_fixed_entries(hand_models):
    now_connected = BaselineEntry(TOY, "dense/kernel", "unconnected")
    broken_source = BaselineEntry(BROKEN, "x/kernel", "unconnected")
    not_run = BaselineEntry("other.keras", "x/kernel", "unconnected")
    changed = BaselineEntry(TOY, "relu_dead/kernel", "unconnected")  # now zero: still a finding
    report = _apply(hand_models, baseline=[LEGACY_ENTRY, FIXED_ENTRY, now_connected,
                                           broken_source, not_run, changed])
    assert report.fixed == (FIXED_ENTRY, now_connected)


def test_fail_on_decides_what_fails(hand_models):
    report = _apply(hand_models, fail_on=frozenset({Status.UNCONNECTED, Status.ZERO}))
    assert "relu_dead/kernel" in {v.path for _, v in report.failures}
    assert "nan/kernel" in {v.path for _, v in report.warnings}


# --- baseline files --------------------------------------------------------------------------


def test_baseline_round_trip(tmp_path, hand_models):
    path = tmp_path / "baseline.json"
    gate.write_baseline(_apply(hand_models), path)
    data = json.loads(path.read_text())
    assert data["gradcheck_baseline"] == 1
    assert data["findings"] == sorted(data["findings"], key=lambda f: (f["source"], f["path"]))
    assert len(data["findings"]) == 8  # every non-connected variable
    entries = gate.read_baseline(path)
    assert BaselineEntry(TOY, "relu_dead/kernel", "zero") in entries
    rerun = _apply(hand_models, baseline=entries)
    assert rerun.failures == [] and rerun.fixed == ()
    assert exit_code(rerun) is ExitCode.SOURCE_ERROR  # the broken source still counts


def test_write_baseline_is_deterministic(tmp_path, hand_models):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    gate.write_baseline(_apply(hand_models), first)
    models = (replace(hand_models[0], variables=hand_models[0].variables[::-1]),
              *hand_models[1:])
    gate.write_baseline(_apply(models), second)
    assert first.read_text() == second.read_text()
    assert first.read_text().endswith("}\n")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", "not valid JSON"),
        ('{"findings": []}', "not a gradcheck baseline"),
        ('{"gradcheck_baseline": 1}', "no \"findings\" list"),
        ('{"gradcheck_baseline": 1, "findings": [{"source": "a"}]}', "finding 0 must have"),
        ('{"gradcheck_baseline": 1, "findings": [{"source": "a", "path": "b", "status": "ok"}]}',
         "status 'ok'"),
    ],
)
def test_read_baseline_rejects_bad_files(tmp_path, content, words):
    path = tmp_path / "baseline.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=words) as info:
        gate.read_baseline(path)
    assert str(path) in str(info.value)


def test_read_baseline_missing_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read baseline file"):
        gate.read_baseline(tmp_path / "nope.json")
