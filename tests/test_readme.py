"""The README's promises that a test can hold: every flag and Action input documented, and every
snippet (Action, pre-commit, pip) naming the one release tag, the version gradcheck reports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gradcheck import __version__
from gradcheck.options import OPTIONS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_flag_is_in_the_options_table():
    table = README[README.index("## Options"):README.index("### Exit codes")]
    for spec in OPTIONS:
        assert f"`{spec.flag}" in table or f", {spec.flag}" in table, spec.flag


def test_every_action_input_is_documented():
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    section = README[README.index("### The GitHub Action"):]
    for name in action["inputs"]:
        assert f"| `{name}` |" in section, name


def test_every_snippet_names_the_release_tag():
    """The Action's ``uses: …@vX``, pre-commit's ``rev: vX`` and pip's ``…@vX`` all name the
    tag of this version (created when the release is merged)."""
    tags = re.findall(r"gradcheck/gradcheck@(v[\w.]+)", README)
    tags += re.findall(r"^\s*rev: (v[\w.]+)", README, re.MULTILINE)
    assert len(tags) >= 4  # two workflows, pip, pre-commit
    assert set(tags) == {f"v{__version__}"}


@pytest.mark.slow
def test_the_quickstart_shows_what_make_demo_prints():
    """The README's quickstart block is the real output of the demo command, byte for byte."""
    import shlex
    import subprocess
    import sys

    makefile = (ROOT / "Makefile").read_text()
    command = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    command = command.split("\n", 1)[1].replace("\\\n", " ").split(";")[0]
    args = shlex.split(command.replace("$(BIN)/gradcheck", ""))
    sources = [str(p.relative_to(ROOT)) for p in sorted(ROOT.glob("sample_models/*.keras"))]
    args = [a for a in args if a != "sample_models/*.keras"]
    run = subprocess.run([sys.executable, "-m", "gradcheck", "-q", "--no-cache", *sources, *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    start = README.index("```text\n", README.index("<!-- SECTION:quickstart -->")) + len("```text\n")
    assert run.stdout == README[start:README.index("```\n", start)]
