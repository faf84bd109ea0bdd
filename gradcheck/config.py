"""Configuration: ``DEFAULTS`` < ``[tool.gradcheck]`` in pyproject.toml < flags the user typed.

As in vulture, ``DEFAULTS`` is the one list of options: a key that is not in it, or
a value of the wrong type, is rejected with one sentence naming the key.
"""

from __future__ import annotations

import copy
import difflib
import tomllib
from collections.abc import Callable
from pathlib import Path

from gradcheck import gate
from gradcheck.formats import Format

DEFAULTS: dict[str, object] = {
    "format": Format.TEXT.value,  # text | json | github | junit | sarif | markdown
    "output": None,  # write the report to this file instead of stdout
    "fail_on": ["unconnected"],  # statuses that fail the gate
    "allow": [],  # allow rules: "[SOURCE::]PATTERN[=REASON]" or {pattern, reason, source}
    "baseline": None,  # baseline file whose findings do not fail
    "write_baseline": None,  # write the current findings to this file
    "custom_objects": [],  # modules to import for custom Keras objects
    "unsafe": False,  # allow Lambda deserialization and factory code
    "input": [],  # input overrides "NAME=DIM,DIM[:DTYPE]"
    "batch_size": 2,
    "seed": 0,
    "inference": False,  # run the step with training=False
    "loss": None,  # "module:fn" computing the loss
    "graph": None,  # write each source's op graph (GraphML, DOT, SVG) into this directory
    "color": "auto",  # auto | always | never
    "debug": False,  # show tracebacks
    "real_weights": False,  # keep the saved weights instead of re-initializing
    "timeout": 120,  # seconds one source may take (loading and the step); 0 = no limit
    "max_memory": "auto",  # memory one source may claim ("4G", "512M", bytes); auto = half the machine's
    "jobs": 1,  # worker processes; "auto" = one per core, as memory allows
    "quiet": False,  # no progress on stderr
    "verbose": False,  # text report: every variable, not only the findings
    "data": None,  # "module:fn" returning the batch: x, (x, y) or (x, y, sample_weight)
}

#: Options a pyproject.toml may not set: they switch a protection off, and a pull request can
#: edit pyproject.toml as easily as it adds a model file.
COMMAND_LINE_ONLY = {"unsafe": "--unsafe"}

FAIL_ON_CHOICES = ("unconnected", "zero", "nonfinite")
COLOR_CHOICES = ("auto", "always", "never")
FORMAT_CHOICES = tuple(f.value for f in Format)


class ConfigError(Exception):
    """A configuration problem the user can fix; the message is one sentence."""


def find_pyproject(start: Path) -> Path | None:
    """The nearest ``pyproject.toml`` in ``start`` or one of its parents, or None."""
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def load_file(path: Path) -> dict:
    """Read and validate ``[tool.gradcheck]`` from ``path``; a missing table gives {}."""
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read {_display(path)}: {exc.strerror or exc}.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{_display(path)} is not valid TOML: {exc}.") from exc
    tool = document.get("tool", {})
    table = tool.get("gradcheck", {}) if isinstance(tool, dict) else {}
    if not isinstance(table, dict):
        raise ConfigError(f"{_display(path)}: [tool.gradcheck] must be a table.")
    values = {}
    for raw_key, value in table.items():
        key = raw_key.replace("-", "_")
        if key in values:
            raise ConfigError(f"{_display(path)}: [tool.gradcheck] sets '{key}' twice.")
        _check(path, raw_key, key, value)
        values[key] = value
    return values


def _display(path: Path) -> str:
    """The path relative to the working directory when it is below it, as users typed it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def merge(file_values: dict, typed_flags: dict) -> dict:
    """The effective options: DEFAULTS, overridden by the file, overridden by typed flags.

    ``typed_flags`` must hold only the flags the user actually typed, so that an
    untyped flag's default never hides a value from the file.
    """
    for key in (*file_values, *typed_flags):
        if key not in DEFAULTS:
            raise ConfigError(f"unknown option '{key}'.")
    return copy.deepcopy({**DEFAULTS, **file_values, **typed_flags})


# What each option accepts: a description for the error message and a check.
def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_allow_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, (str, dict)) for v in value)


_TYPES: dict[str, tuple[str, Callable[[object], bool]]] = {
    "format": ("a string", _is_str),
    "output": ("a string", _is_str),
    "fail_on": ("a list of strings", _is_str_list),
    "allow": ("a list of strings or tables", _is_allow_list),
    "baseline": ("a string", _is_str),
    "write_baseline": ("a string", _is_str),
    "custom_objects": ("a list of strings", _is_str_list),
    "unsafe": ("a boolean", _is_bool),
    "input": ("a list of strings", _is_str_list),
    "batch_size": ("an integer", _is_int),
    "seed": ("an integer", _is_int),
    "inference": ("a boolean", _is_bool),
    "loss": ("a string", _is_str),
    "graph": ("a string", _is_str),
    "color": ("a string", _is_str),
    "debug": ("a boolean", _is_bool),
    "real_weights": ("a boolean", _is_bool),
    "timeout": ("a number of seconds", lambda v: _is_number(v) and v >= 0),
    "max_memory": ("a size such as \"4G\" or \"auto\"", lambda v: _is_size(v)),
    "jobs": ("a positive integer or \"auto\"", lambda v: v == "auto" or (_is_int(v) and v >= 1)),
    "quiet": ("a boolean", _is_bool),
    "verbose": ("a boolean", _is_bool),
    "data": ("a string", _is_str),
}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_size(value: object) -> bool:
    from gradcheck.budget import parse_size

    if value == "auto":
        return True
    try:
        parse_size(value)
    except ValueError:
        return False
    return True

_TOML_TYPE_NAMES = {"str": "string", "dict": "table", "list": "array", "bool": "boolean"}


def _check(path: Path, raw_key: str, key: str, value: object) -> None:
    where = f"{_display(path)}: [tool.gradcheck] key '{raw_key}'"
    if key in COMMAND_LINE_ONLY:
        raise ConfigError(f"{where} is not allowed: it switches a protection off, and a pull "
                          "request can edit this file; pass "
                          f"{COMMAND_LINE_ONLY[key]} on the command line instead.")
    if key not in DEFAULTS:
        close = difflib.get_close_matches(key, list(DEFAULTS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(DEFAULTS)}."
        raise ConfigError(f"{_display(path)}: [tool.gradcheck] has unknown key '{raw_key}'{hint}")
    expected, accepts = _TYPES[key]
    if not accepts(value):
        got = _TOML_TYPE_NAMES.get(type(value).__name__, type(value).__name__)
        raise ConfigError(f"{where} must be {expected}, got {got}.")
    _check_value(where, key, value)


def _check_value(where: str, key: str, value: object) -> None:
    choices = {"format": FORMAT_CHOICES, "color": COLOR_CHOICES}.get(key)
    if choices and value not in choices:
        raise ConfigError(f"{where} must be one of {', '.join(choices)}, got '{value}'.")
    if key == "fail_on":
        bad = [v for v in value if v not in FAIL_ON_CHOICES]
        if bad:
            raise ConfigError(
                f"{where} may only hold {', '.join(FAIL_ON_CHOICES)}, got '{bad[0]}'."
            )
    if key == "batch_size" and value < 1:
        raise ConfigError(f"{where} must be at least 1, got {value}.")
    if key == "allow":
        for entry in value:
            try:
                gate.parse_allow(entry)
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from exc
