"""``[tool.gradcheck]``: discovery, validation, and DEFAULTS < file < typed flags."""

from __future__ import annotations

import textwrap

import pytest

from gradcheck import config
from gradcheck.config import DEFAULTS, ConfigError, find_pyproject, load_file, merge


def _write(folder, body: str):
    path = folder / "pyproject.toml"
    path.write_text(textwrap.dedent(body))
    return path


def test_defaults_cover_every_option():
    assert DEFAULTS == {
        "format": "text", "output": None, "fail_on": ["unconnected"], "allow": [],
        "baseline": None, "write_baseline": None, "custom_objects": [], "unsafe": False,
        "input": [], "batch_size": 2, "seed": 0, "inference": False, "loss": None,
        "graph": None, "color": "auto", "debug": False, "real_weights": False,
        "timeout": 120, "max_memory": "auto", "jobs": 1, "quiet": False,
        "verbose": False,
        "data": None, "report": [], "no_cache": False, "cache_dir": None,
    }



def test_one_option_list_drives_the_file_the_flags_and_the_engine():
    """``options.OPTIONS`` is the only list: the CLI's flags, the file's keys and the engine's
    ``Options`` fields are all read from it."""
    import dataclasses

    from typer.main import get_command

    from gradcheck import options
    from gradcheck.cli import app
    from gradcheck.formats import Format

    command = get_command(app)
    flags = {opt for param in command.params for opt in param.opts if opt.startswith("--")}
    assert flags == {spec.flag for spec in options.OPTIONS} | {"--version"}
    assert set(DEFAULTS) == {s.name for s in options.OPTIONS if s.in_file or s.field}
    assert {f.name for f in dataclasses.fields(options.Options)} == {
        s.field for s in options.OPTIONS if s.field}
    assert options.FORMAT_CHOICES == tuple(f.value for f in Format)
    assert config.COMMAND_LINE_ONLY == {"unsafe": "--unsafe"}


# --- find_pyproject --------------------------------------------------------------------------


def test_find_pyproject_walks_up_to_the_nearest(tmp_path):
    outer = _write(tmp_path, "")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_pyproject(deep) == outer.resolve()
    inner = _write(tmp_path / "a", "")
    assert find_pyproject(deep) == inner.resolve()
    assert find_pyproject(inner) == inner.resolve()  # a file starts from its own folder


def test_find_pyproject_none_below(tmp_path):
    found = find_pyproject(tmp_path)
    assert found is None or tmp_path.resolve() not in found.parents


# --- load_file -------------------------------------------------------------------------------


def test_missing_table_gives_nothing(tmp_path):
    assert load_file(_write(tmp_path, "[project]\nname = 'x'\n")) == {}
    assert load_file(_write(tmp_path, "[tool.other]\na = 1\n")) == {}


def test_keys_with_dashes_or_underscores(tmp_path):
    path = _write(tmp_path, """
        [tool.gradcheck]
        fail-on = ["unconnected", "zero"]
        batch_size = 4
        real-weights = true
        format = "sarif"
        input = ["tokens=1,16:int32"]
        allow = [
            "frozen/*=intended",
            {pattern = "head_b/*", reason = "unused head", source = "a.keras"},
        ]
        """)
    assert load_file(path) == {
        "fail_on": ["unconnected", "zero"],
        "batch_size": 4,
        "real_weights": True,
        "format": "sarif",
        "input": ["tokens=1,16:int32"],
        "allow": ["frozen/*=intended",
                  {"pattern": "head_b/*", "reason": "unused head", "source": "a.keras"}],
    }


def test_unknown_key_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, "[tool.gradcheck]\nfial-on = ['zero']\n")
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert str(info.value) == (
        "pyproject.toml: [tool.gradcheck] has unknown key 'fial-on'; did you mean 'fail_on'?")


def test_wrong_type_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, "[tool.gradcheck]\nfail_on = 1\n")
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert str(info.value) == (
        "pyproject.toml: [tool.gradcheck] key 'fail_on' must be a list of strings, got int.")


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("batch_size = true", "'batch_size' must be an integer, got boolean"),
        ("batch_size = 0", "'batch_size' must be at least 1"),
        ("seed = '3'", "'seed' must be an integer, got string"),
        ("unsafe = true", "'unsafe' is not allowed: it switches a protection off.*--unsafe on "
                          "the command line"),
        ("unsafe = false", "'unsafe' is not allowed"),
        ("timeout = -1", "'timeout' must be a number of seconds"),
        ("max_memory = '4 bananas'", "'max_memory' must be a size"),
        ("jobs = 0", "'jobs' must be a positive integer or \"auto\""),
        ("custom_objects = ['a', 2]", "'custom_objects' must be a list of strings"),
        ("fail_on = ['zeros']",
         "'fail_on' may only hold unconnected, zero, nonfinite, got 'zeros'"),
        ("format = 'xml'", "'format' must be one of text, json, github, junit, sarif, markdown"),
        ("color = 'sometimes'", "'color' must be one of auto, always, never"),
        ("allow = [3]", "'allow' must be a list of strings or tables, got array"),
        ("allow = [{pattern = 'x', why = 'y'}]", "'allow'.*unknown key 'why'"),
        ("allow = ['=no pattern']", "'allow'.*no variable pattern"),
        ("output = {a = 1}", "'output' must be a string, got table"),
        ("verbose = 1", "'verbose' must be a boolean, got int"),
        ("report = ['sarif']", "'report' takes FORMAT=FILE"),
        ("report = ['xml=a.xml']", "'report' 'xml=a.xml': the format must be one of text"),
        ("no-cache = 'yes'", "'no-cache' must be a boolean, got string"),
        ("cache-dir = 1", "'cache-dir' must be a string, got int"),
        # a pull request can edit pyproject.toml: it must not hide models from the gate
        ("shard = '1/2'", "'shard' is not allowed: --shard is a command-line flag only"),
        ("config = 'other.toml'", "'config' is not allowed: --config is a command-line flag only"),
    ],
)
def test_bad_values_are_rejected(tmp_path, line, words):
    with pytest.raises(ConfigError, match=words):
        load_file(_write(tmp_path, f"[tool.gradcheck]\n{line}\n"))


def test_invalid_toml_names_the_file(tmp_path):
    path = _write(tmp_path, "[tool.gradcheck\nformat = 'json'\n")
    with pytest.raises(ConfigError, match="pyproject.toml is not valid TOML"):
        load_file(path)


def test_same_key_twice(tmp_path):
    path = _write(tmp_path, "[tool.gradcheck]\nfail-on = ['zero']\nfail_on = ['zero']\n")
    with pytest.raises(ConfigError, match="'fail_on' twice"):
        load_file(path)


# --- merge -----------------------------------------------------------------------------------


def test_precedence_default_file_flag(tmp_path):
    path = _write(tmp_path, "[tool.gradcheck]\nformat = 'json'\nseed = 3\n")
    options = merge(load_file(path), {"seed": 5})
    assert options["seed"] == 5  # typed flag beats the file
    assert options["format"] == "json"  # file beats the default
    assert options["batch_size"] == 2  # default when nobody says otherwise
    assert set(options) == set(DEFAULTS)


def test_merge_returns_copies():
    options = merge({}, {})
    options["fail_on"].append("zero")
    assert DEFAULTS["fail_on"] == ["unconnected"]


def test_merge_rejects_unknown_options():
    with pytest.raises(ConfigError, match="'colour'"):
        merge({}, {"colour": "never"})


def test_verbose_from_the_file_and_from_the_flag(tmp_path):
    path = _write(tmp_path, "[tool.gradcheck]\nverbose = true\nformat = 'markdown'\n")
    assert load_file(path) == {"verbose": True, "format": "markdown"}
    assert merge(load_file(path), {})["verbose"] is True
    assert merge({}, {})["verbose"] is False
