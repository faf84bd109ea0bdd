"""Configuration: ``DEFAULTS`` < ``[tool.gradcheck]`` in pyproject.toml < flags the user typed.

As in vulture, one list of options (``gradcheck.options``) is the truth: a key that is not in
it, or a value of the wrong type, is rejected with one sentence naming the key; a typed flag is
checked by the same rule and named by its flag.
"""

from __future__ import annotations

import copy
import difflib
import tomllib
from pathlib import Path

from gradcheck import options

#: The option list's defaults and the keys only the command line may set (``options.OPTIONS``).
DEFAULTS = options.DEFAULTS
COMMAND_LINE_ONLY = options.COMMAND_LINE_ONLY


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


_TOML_TYPE_NAMES = {"str": "string", "dict": "table", "list": "array", "bool": "boolean"}


def _check(path: Path, raw_key: str, key: str, value: object) -> None:
    where = f"{_display(path)}: [tool.gradcheck] key '{raw_key}'"
    if key in COMMAND_LINE_ONLY:
        raise ConfigError(f"{where} is not allowed: it switches a protection off, and a pull "
                          "request can edit this file; pass "
                          f"{COMMAND_LINE_ONLY[key]} on the command line instead.")
    if key in options.BY_NAME and key not in DEFAULTS:
        raise ConfigError(f"{where} is not allowed: {options.BY_NAME[key].flag} is a command-line "
                          "flag only.")
    if key not in DEFAULTS:
        close = difflib.get_close_matches(key, list(DEFAULTS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(DEFAULTS)}."
        raise ConfigError(f"{_display(path)}: [tool.gradcheck] has unknown key '{raw_key}'{hint}")
    try:
        options.BY_NAME[key].validate(value)
    except options.OptionError as exc:
        raise ConfigError(_sentence(where, exc, value)) from None


def check_flag(name: str, value: object) -> None:
    """Validate the value of a typed flag by the option's own rule (``ConfigError`` if not)."""
    spec = options.BY_NAME[name]
    try:
        spec.validate(value)
    except options.OptionError as exc:
        raise ConfigError(_sentence(spec.flag, exc, value)) from None


def _sentence(where: str, exc: options.OptionError, value: object) -> str:
    """``<where> must be …`` for a wrong type (naming the TOML type), else the rule's words."""
    if isinstance(exc, options.WrongType):
        got = (f"'{value}'" if where.startswith("-") else  # a flag: its text; a key: its type
               _TOML_TYPE_NAMES.get(type(value).__name__, type(value).__name__))
        return f"{where} must be {exc.accepts}, got {got}."
    text = str(exc)
    return f"{where}{text}" if text.startswith(":") else f"{where} {text}"
