"""The README's promises that a test can hold: every flag and Action input documented, and every
snippet (Action, pre-commit, pip) naming the one release tag, the version gradcheck reports."""

from __future__ import annotations

import re
from pathlib import Path

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
