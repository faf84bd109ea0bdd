"""One run for CI: several reports from one analysis (``--report``), a stable part of the sources
(``--shard``), and a word when ``--graph`` cannot draw its pictures."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gradcheck.cli import app
from gradcheck.report import ExitCode
from gradcheck.shard import parse_shard, part_of, select

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
_DONE = re.compile(r"^gradcheck: \[\d+/\d+\] (.+?): .* \((cached|\d+\.\d s)\)$", re.M)


@pytest.fixture
def models(tmp_path, monkeypatch) -> list[str]:
    for name in ("two_heads.keras", "clean.keras"):
        shutil.copy2(SAMPLES / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return ["two_heads.keras", "clean.keras"]


# --- --report FORMAT=FILE ----------------------------------------------------------------------


def test_one_analysis_writes_every_report(models, capsys, tmp_path):
    files = {"sarif": "out/r.sarif", "json": "out/r.json", "junit": "out/r.xml",
             "markdown": "out/r.md", "text": "out/r.txt", "github": "out/r.github"}
    (tmp_path / "out").mkdir()
    reports = [arg for fmt, path in files.items() for arg in ("--report", f"{fmt}={path}")]
    code = app(["-f", "github", "--no-cache", *reports, *models], standalone_mode=False)
    out, err = capsys.readouterr()
    assert code == ExitCode.FINDINGS
    assert [s for s, took in _DONE.findall(err)] == models  # each source analyzed once
    assert all(line.startswith("::") for line in out.splitlines())
    for fmt, path in files.items():  # each file is what -f FORMAT prints for the same analysis
        assert app(["-f", fmt, "--color", "always", *models], standalone_mode=False) == code
        assert (tmp_path / path).read_text() == capsys.readouterr().out.replace(
            "\033[31m", "").replace("\033[32m", "").replace("\033[0m", "")
    sarif = json.loads((tmp_path / files["sarif"]).read_text())
    assert {r["ruleId"] for r in sarif["runs"][0]["results"]} == {"GC002"}
    assert "\033" not in (tmp_path / files["text"]).read_text()  # files are never coloured


@pytest.mark.parametrize("args, words", [
    (["--report", "json=a.json", "--report", "sarif=a.json"],
     "--report sarif=a.json and --report json=a.json both write a.json"),
    (["-o", "r.txt", "--report", "json=./r.txt"], "--report json=./r.txt and --output r.txt"),
    (["--report", "xml=a.xml"], "--report 'xml=a.xml': the format must be one of text, json"),
    (["--report", "sarif"], "--report takes FORMAT=FILE"),
])
def test_two_outputs_to_one_file_or_a_bad_report_are_usage_errors(models, capsys, args, words):
    assert app([*args, *models], standalone_mode=False) == ExitCode.USAGE
    out, err = capsys.readouterr()
    assert out == "" and words in err and "Traceback" not in err


def test_a_report_that_cannot_be_written_is_a_usage_error(models, capsys):
    code = app(["--report", "json=no/such/dir/r.json", *models], standalone_mode=False)
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE
    assert "gradcheck: error: cannot write no/such/dir/r.json: No such file or directory." in err


# --- --shard K/N -------------------------------------------------------------------------------


@given(st.lists(st.text(min_size=1, max_size=30), max_size=40), st.integers(1, 6),
       st.randoms(use_true_random=False))
def test_shards_partition_the_sources_whatever_their_order(sources, parts, rng):
    shuffled = list(sources)
    rng.shuffle(shuffled)
    chosen = [select(shuffled, part, parts) for part in range(1, parts + 1)]
    assert sorted(s for shard in chosen for s in shard) == sorted(sources)  # each exactly once
    for part, shard in enumerate(chosen, start=1):
        assert shard == [s for s in shuffled if s in shard]  # the order given is kept
        assert set(shard) == set(select(sources, part, parts))  # the glob order does not matter


def test_shard_of_a_source_is_a_property_of_its_name():
    assert [part_of(f"models/m{i}.keras", 3) for i in range(8)] == [
        part_of(f"models/m{i}.keras", 3) for i in range(8)]
    assert parse_shard(" 2 / 3 ") == (2, 3)
    for bad in ("0/3", "4/3", "1/0", "a/b", "1", "1/2/3"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_three_jobs_check_each_source_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sources = [f"m{i}.keras" for i in range(7)]  # missing files: quick errors, never cached
    seen = []
    for part in (1, 2, 3):
        code = app(["-f", "json", "--shard", f"{part}/3", *sources], standalone_mode=False)
        out, err = capsys.readouterr()
        checked = [m["source"] for m in json.loads(out)["models"]]
        assert f"gradcheck: shard {part}/3: {len(checked)} of 7 sources" in err
        assert checked == [s for s in sources if s in checked]
        assert code == (ExitCode.SOURCE_ERROR if checked else ExitCode.OK)
        seen += checked
    assert sorted(seen) == sorted(sources)


@pytest.mark.parametrize("args, words", [
    (["--shard", "4/3"], "--shard K/N needs 1 <= K <= N, got '4/3'."),
    (["--shard", "1/2", "--write-baseline", "b.json"], "--write-baseline records every finding"),
])
def test_bad_shards_are_usage_errors(models, capsys, args, words):
    assert app([*args, *models], standalone_mode=False) == ExitCode.USAGE
    assert words in capsys.readouterr().err


# --- --graph without Graphviz --------------------------------------------------------------------


@pytest.mark.parametrize("dot", [None, "/usr/bin/dot"], ids=["no-graphviz", "graphviz"])
def test_graph_without_graphviz_says_so_once(models, capsys, monkeypatch, tmp_path, dot):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which",
                        lambda name, *a, **k: dot if name == "dot" else real_which(name, *a, **k))
    code = app(["--graph", "graphs", *models], standalone_mode=False)
    err = capsys.readouterr().err
    assert code == ExitCode.FINDINGS  # unchanged by the warning
    warning = "gradcheck: warning: --graph wrote no .svg pictures to graphs: Graphviz's dot"
    assert err.count(warning) == (1 if dot is None else 0)
    assert (tmp_path / "graphs" / "two_heads.unconnected.dot").is_file()
    # a run where nothing is unconnected would draw no picture anyway: nothing to say
    assert app(["--graph", "graphs", "clean.keras"], standalone_mode=False) == ExitCode.OK
    assert "warning" not in capsys.readouterr().err
