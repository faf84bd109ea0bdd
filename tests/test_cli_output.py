"""Where the CLI's words go: the report on stdout, source errors once, the GitHub job summary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gradcheck.cli import app
from gradcheck.report import ExitCode

ROOT = Path(__file__).resolve().parents[1]
TWO_HEADS = str(ROOT / "sample_models" / "two_heads.keras")
MISSING = "no_such_model.keras"
MISSING_MESSAGE = f"{MISSING}: no such file or directory"


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    return {**env, "PYTHONPATH": path}


COMMAND = (sys.executable, "-m", "gradcheck")
ERROR_LINE = f"gradcheck: error: {MISSING_MESSAGE}; check the path."


def _error_lines(text: str) -> list[str]:
    """gradcheck's own error sentences (progress lines may share the stream)."""
    return [line for line in text.splitlines() if line.startswith("gradcheck: error:")]


# --- a source error is said once where stdout and stderr meet ----------------------------------


@pytest.mark.parametrize("color", [False, True], ids=["pipe", "pty"])
def test_pre_commit_shows_a_source_error_once(tmp_path, monkeypatch, color):
    """Through pre-commit's own runner: stderr=STDOUT into a pipe, or one pty for both."""
    lang_base = pytest.importorskip("pre_commit.lang_base")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "environ", _env())
    code, output = lang_base.run_xargs(COMMAND, [MISSING], require_serial=True, color=color)
    text = output.decode()
    assert code == ExitCode.SOURCE_ERROR, text
    assert text.count(MISSING_MESSAGE) == 1, text
    assert _error_lines(text) == []  # the report said it, stderr did not repeat it
    assert "1 error" in text.splitlines()[-1]


def test_separate_streams_get_the_error_on_both(tmp_path):
    run = subprocess.run([*COMMAND, MISSING], cwd=tmp_path, env=_env(), capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == ExitCode.SOURCE_ERROR
    assert run.stdout.count(MISSING_MESSAGE) == 1  # the report holds it
    assert _error_lines(run.stderr) == [ERROR_LINE]
    assert run.stderr.count(MISSING_MESSAGE) == 1


def test_merged_streams_with_the_report_in_a_file_still_get_the_error(tmp_path):
    run = subprocess.run([*COMMAND, MISSING, "-o", "report.txt"], cwd=tmp_path, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert run.returncode == ExitCode.SOURCE_ERROR
    assert _error_lines(run.stdout) == [ERROR_LINE]
    assert run.stdout.count(MISSING_MESSAGE) == 1
    assert (tmp_path / "report.txt").read_text().count(MISSING_MESSAGE) == 1


# --- the GitHub Actions job summary -----------------------------------------------------------


def test_job_summary_is_the_markdown_report_appended(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    summary = tmp_path / "step_summary.md"
    summary.write_text("# an earlier step\n")
    args = [TWO_HEADS, MISSING]
    assert app([*args, "-f", "markdown"], standalone_mode=False) == ExitCode.SOURCE_ERROR
    markdown = capsys.readouterr().out
    assert "### Findings" in markdown and "critic/kernel" in markdown

    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    for _ in range(2):
        assert app([*args, "-f", "github"], standalone_mode=False) == ExitCode.SOURCE_ERROR
        out = capsys.readouterr().out
        assert out and all(line.startswith("::") for line in out.splitlines())  # stdout unchanged
    assert summary.read_text() == "# an earlier step\n" + ("\n" + markdown) * 2


def test_unwritable_job_summary_is_a_warning_not_a_new_exit_code(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "no" / "such" / "dir.md"))
    assert app([MISSING], standalone_mode=False) == ExitCode.SOURCE_ERROR
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("gradcheck: warning: cannot append the job summary to ")
    assert err[-1].endswith("No such file or directory.")


def test_job_summary_keeps_under_githubs_limit(tmp_path, hand_report):
    from gradcheck import job_summary
    from gradcheck.formats import markdown

    full = ("\n" + markdown.render(hand_report)).encode()
    short = ("\n" + markdown.render(hand_report, full_table=False)).encode()
    assert len(short) < len(full) and b"<details>" not in short
    assert markdown.TABLE_LEFT_OUT.encode() in short and b"### Findings" in short
    summary = tmp_path / "summary.md"
    summary.write_bytes(b"x" * 100)
    job_summary.append(hand_report, str(summary), limit=100 + len(full))  # fits exactly
    assert summary.read_bytes() == b"x" * 100 + full
    summary.write_bytes(b"x" * 100)
    job_summary.append(hand_report, str(summary), limit=100 + len(full) - 1)
    assert summary.read_bytes() == b"x" * 100 + short  # the findings, without the full table
    summary.write_bytes(b"x" * 100)
    with pytest.raises(job_summary.SummaryTooLarge):
        job_summary.append(hand_report, str(summary), limit=100 + len(short) - 1)
    assert summary.read_bytes() == b"x" * 100  # nothing written: GitHub would drop it all


# --- -v/--verbose and its [tool.gradcheck] key --------------------------------------------------


def test_verbose_flag_and_key_show_every_variable(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    connected = "  torso/kernel   (8, 16)  tensor  nonzero  connected"
    assert app([TWO_HEADS], standalone_mode=False) == ExitCode.FINDINGS
    concise = capsys.readouterr().out
    assert "torso/kernel" not in concise and "critic/kernel" in concise
    assert app([TWO_HEADS, "-v"], standalone_mode=False) == ExitCode.FINDINGS
    assert connected in capsys.readouterr().out.splitlines()
    (tmp_path / "pyproject.toml").write_text("[tool.gradcheck]\nverbose = true\n")
    assert app([TWO_HEADS], standalone_mode=False) == ExitCode.FINDINGS
    verbose = capsys.readouterr().out
    assert connected in verbose.splitlines()
    assert verbose.splitlines()[-1] == concise.splitlines()[-1]


def test_a_hostile_source_name_cannot_forge_stderr_lines(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    source = "evil\n0 sources, 0 variables\x1b[2J.keras"
    assert app([source], standalone_mode=False) == ExitCode.SOURCE_ERROR
    captured = capsys.readouterr()
    assert all(line.isprintable() for line in captured.err.splitlines())  # progress lines too
    (line,) = _error_lines(captured.err)
    assert line.startswith("gradcheck: error: evil\\n0 sources, 0 variables\\x1b[2J.keras: ")
    assert "\x1b" not in captured.out and len(captured.out.splitlines()) == 2  # error, count
