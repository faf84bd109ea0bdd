"""The one list of options: every flag, every ``[tool.gradcheck]`` key and every engine option.

Each ``OptionSpec`` says everything about one option: its default, what a value must be (one
check for the file and for typed flags), its flags and help for the CLI, whether a pyproject may
set it, and the engine field it becomes.  ``config`` validates and merges from this list,
``cli`` builds its typer parameters from it, and ``Options`` (what changes how a source is
analyzed) is generated from it: adding an option is one entry here.

No TensorFlow, no Keras: ``gradcheck --help`` reads this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: The output formats (``formats.Format`` holds the same values; a test keeps them equal).
FORMAT_CHOICES = ("text", "json", "github", "junit", "sarif", "markdown")
FAIL_ON_CHOICES = ("unconnected", "zero", "nonfinite")
COLOR_CHOICES = ("auto", "always", "never")


class OptionError(ValueError):
    """A value an option does not accept; the message completes "<where> …"."""


# --- what a value may be ----------------------------------------------------------------------

def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_allow_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, (str, dict)) for v in value)


def _is_size(value: object) -> bool:
    from gradcheck.budget import parse_size

    if value == "auto":
        return True
    try:
        parse_size(value)
    except ValueError:
        return False
    return True


def _one_of(choices: tuple[str, ...]) -> Callable[[object], None]:
    def check(value: object) -> None:
        if value not in choices:
            raise OptionError(f"must be one of {', '.join(choices)}, got '{value}'.")

    return check


def _fail_on_statuses(value: list) -> None:
    bad = [v for v in value if v not in FAIL_ON_CHOICES]
    if bad:
        raise OptionError(f"may only hold {', '.join(FAIL_ON_CHOICES)}, got '{bad[0]}'.")


def _at_least_one(value: int) -> None:
    if value < 1:
        raise OptionError(f"must be at least 1, got {value}.")


def _allow_rules(value: list) -> None:
    from gradcheck import gate

    for entry in value:
        try:
            gate.parse_allow(entry)
        except ValueError as exc:
            raise OptionError(f": {exc}") from exc


def _report_files(value: list) -> None:
    for entry in value:
        fmt, equals, path = entry.partition("=")
        if not equals or not path.strip():
            raise OptionError(f"takes FORMAT=FILE (e.g. sarif=gradcheck.sarif), got '{entry}'.")
        if fmt not in FORMAT_CHOICES:
            raise OptionError(f"'{entry}': the format must be one of {', '.join(FORMAT_CHOICES)}.")


def _shard(value: str) -> None:
    from gradcheck.shard import parse_shard

    try:
        parse_shard(value)
    except ValueError as exc:
        raise OptionError(str(exc)) from None


# --- how a typed flag becomes a value ---------------------------------------------------------

def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _bytes_or_none(value: str | int) -> int | None:
    from gradcheck.budget import parse_size

    return None if value == "auto" else parse_size(value)


def _jobs(text: str) -> int | str:
    if text != "auto" and (not text.isdigit() or int(text) < 1):
        raise OptionError(f"takes a positive number or auto, got '{text}'.")
    return text if text == "auto" else int(text)


@dataclass(frozen=True)
class OptionSpec:
    """One option of gradcheck, everywhere it appears."""

    name: str  #: the key in ``[tool.gradcheck]`` and in ``config.DEFAULTS`` (dashes allowed too)
    default: Any  #: the value when neither the file nor a flag sets it
    accepts: str  #: what a value must be, for the error message ("an integer")
    is_type: Callable[[object], bool]  #: the type check (file values and converted flags)
    flags: tuple[str, ...]  #: the CLI's flags, long first (``("--format", "-f")``)
    help: str  #: one line of ``--help``
    metavar: str | None = None  #: the flag's value in ``--help`` (None: a switch)
    check: Callable[[Any], None] | None = None  #: further rules; raises ``OptionError``
    from_flag: Callable[[Any], Any] | None = None  #: a typed flag's value -> the option's value
    flag_type: Any = str  #: what typer parses the flag as (``bool``, ``int``, ``list[str]`` …)
    in_file: bool = True  #: False: only the command line may set it (a protection, or ``--config``)
    field: str | None = None  #: the ``Options`` field it becomes (None: output, gate or CLI only)
    field_type: Any = None  #: that field's type, when it differs from the value's
    to_field: Callable[[Any], Any] | None = None  #: the option's value -> the field's value

    @property
    def flag(self) -> str:
        return self.flags[0]

    def validate(self, value: object) -> None:
        """Raise ``OptionError`` ("must be …") unless ``value`` is acceptable."""
        if not self.is_type(value):
            raise WrongType(self.accepts)
        if self.check is not None:
            self.check(value)


class WrongType(OptionError):
    """The value has the wrong type; ``accepts`` says what it should be."""

    def __init__(self, accepts: str):
        super().__init__(accepts)
        self.accepts = accepts


def _spec(name, default, accepts, is_type, flags, help, **kwargs) -> OptionSpec:  # noqa: A002
    return OptionSpec(name, default, accepts, is_type, tuple(flags), help, **kwargs)


_STRING = ("a string", _is_str)
_BOOL = ("a boolean", _is_bool)
_STRINGS = ("a list of strings", _is_str_list)

#: Every option, in the order ``--help`` lists them.
OPTIONS: tuple[OptionSpec, ...] = (
    _spec("format", "text", *_STRING, ["--format", "-f"], "text, json, github, junit, sarif or "
          "markdown.", metavar="FORMAT", check=_one_of(FORMAT_CHOICES)),
    _spec("output", None, *_STRING, ["--output", "-o"], "Write the report to FILE.",
          metavar="FILE"),
    _spec("report", [], *_STRINGS, ["--report"], "Also write the report in FORMAT to FILE, from the "
          "same analysis (repeatable; e.g. sarif=gradcheck.sarif).", metavar="FORMAT=FILE",
          check=_report_files, flag_type=list[str]),
    _spec("fail_on", ["unconnected"], *_STRINGS, ["--fail-on"], "Comma-separated statuses that "
          "fail the gate: unconnected,zero,nonfinite. [default: unconnected]", metavar="STATUSES",
          check=_fail_on_statuses, from_flag=_comma_list),
    _spec("allow", [], "a list of strings or tables", _is_allow_list, ["--allow"],
          "[SOURCE::]GLOB[=REASON]: variables meant not to learn (repeatable).", metavar="RULE",
          check=_allow_rules, flag_type=list[str]),
    _spec("baseline", None, *_STRING, ["--baseline"], "Fail only on findings not in FILE.",
          metavar="FILE"),
    _spec("write_baseline", None, *_STRING, ["--write-baseline"], "Record today's findings in "
          "FILE.", metavar="FILE"),
    _spec("custom_objects", [], *_STRINGS, ["--custom-objects"], "A .py file or module defining "
          "custom Keras classes (repeatable).", metavar="PATH_OR_MODULE", flag_type=list[str],
          field="custom_objects", field_type=tuple[str, ...]),
    _spec("unsafe", False, *_BOOL, ["--unsafe"], "Allow Lambda layers' Python bytecode (Keras "
          "safe mode off).", flag_type=bool, in_file=False, field="unsafe"),
    _spec("input", [], *_STRINGS, ["--input"], "NAME=DIM,DIM[:DTYPE][@LOW..HIGH|@VALUE]: an "
          "input's shape without the batch dim, its dtype (default: the model's) and values "
          "(repeatable).", metavar="NAME=DIMS[:DTYPE][@LOW..HIGH]", flag_type=list[str],
          field="inputs", field_type=tuple[str, ...]),
    _spec("batch_size", 2, "an integer", _is_int, ["--batch-size"], "Batch size of the synthetic "
          "inputs.", metavar="N", check=_at_least_one, flag_type=int, field="batch_size"),
    _spec("seed", 0, "an integer", _is_int, ["--seed"], "Seed for inputs, dropout and "
          "initializers.", metavar="N", flag_type=int, field="seed"),
    _spec("inference", False, *_BOOL, ["--inference"], "Run the step with training=False.",
          flag_type=bool, field="inference"),
    _spec("loss", None, *_STRING, ["--loss"], "module:fn or file.py:fn computing "
          "fn(model, inputs, outputs) -> scalar.", metavar="MODULE:FN", field="loss",
          field_type=str | None),
    _spec("data", None, *_STRING, ["--data"], "module:fn or file.py:fn returning the batch: x, "
          "(x, y) or (x, y, sample_weight).", metavar="MODULE:FN", field="data",
          field_type=str | None),
    _spec("real_weights", False, *_BOOL, ["--real-weights"], "Run the step on the stored weights "
          "(slower; finds zero/nonfinite gradients of a trained model).", flag_type=bool,
          field="real_weights"),
    _spec("graph", None, *_STRING, ["--graph"], "Write each source's op graph (GraphML, DOT, SVG "
          "if Graphviz is installed) to DIR.", metavar="DIR", field="graph_dir",
          field_type=str | None),
    _spec("color", "auto", *_STRING, ["--color"], "auto, always or never.", metavar="WHEN",
          check=_one_of(COLOR_CHOICES)),
    _spec("config", None, *_STRING, ["--config"], "Read [tool.gradcheck] from FILE instead of the "
          "nearest pyproject.toml.", metavar="FILE", in_file=False),
    _spec("timeout", 120, "a number of seconds", lambda v: _is_number(v) and v >= 0,
          ["--timeout"], "Stop a source that takes longer (0: no limit).", metavar="SECONDS",
          flag_type=float),
    _spec("max_memory", "auto", "a size such as \"4G\" or \"auto\"", _is_size, ["--max-memory"],
          "Refuse a source whose weights and inputs need more (e.g. 4G; auto: half the "
          "machine's memory).", metavar="SIZE", field="max_memory", field_type=int | None,
          to_field=_bytes_or_none),
    _spec("no_cache", False, *_BOOL, ["--no-cache"], "Analyze every source; neither read nor "
          "write the result cache.", flag_type=bool),
    _spec("cache_dir", None, *_STRING, ["--cache-dir"], "Keep the result cache in DIR (default: "
          "the user's cache directory, ~/.cache/gradcheck).", metavar="DIR"),
    _spec("shard", None, *_STRING, ["--shard"], "Analyze only part K of N of the sources, chosen by "
          "a hash of each source (a CI matrix of N jobs covers each once).", metavar="K/N",
          check=_shard, in_file=False),
    _spec("jobs", 1, "a positive integer or \"auto\"", lambda v: v == "auto" or (_is_int(v) and
          v >= 1), ["--jobs", "-j"], "Analyze N sources at once in worker processes (auto: one "
          "per core).", metavar="N", from_flag=_jobs),
    _spec("quiet", False, *_BOOL, ["--quiet", "-q"], "No progress on stderr.", flag_type=bool),
    _spec("debug", False, *_BOOL, ["--debug"], "Show tracebacks and TensorFlow's logs.",
          flag_type=bool, field="debug"),
    _spec("verbose", False, *_BOOL, ["--verbose", "-v"], "Show every variable in the text report, "
          "not only the findings.", flag_type=bool),
)

BY_NAME: dict[str, OptionSpec] = {spec.name: spec for spec in OPTIONS}

#: What each option is when nobody sets it (the file's keys; ``--config`` is the CLI's alone).
DEFAULTS: dict[str, object] = {spec.name: spec.default for spec in OPTIONS if spec.in_file
                               or spec.field is not None}

#: Options a pyproject.toml may not set, with the flag to use instead.
COMMAND_LINE_ONLY: dict[str, str] = {spec.name: spec.flag for spec in OPTIONS
                                     if not spec.in_file and spec.field is not None}


def _field_value(spec: OptionSpec, value: Any) -> Any:
    if spec.to_field is not None:
        return spec.to_field(value)
    return tuple(value) if isinstance(value, list) else value


def _field(spec: OptionSpec) -> tuple[str, Any, dataclasses.Field]:
    default = _field_value(spec, spec.default)
    return spec.field, spec.field_type or type(default), dataclasses.field(default=default)


#: Everything that changes how a source is analyzed: the engine's view of the options above
#: (lists become tuples; ``max_memory`` is bytes for one worker, None: derived from the machine).
Options = dataclasses.make_dataclass(
    "Options", [_field(spec) for spec in OPTIONS if spec.field is not None], frozen=True)
Options.__module__ = __name__  # pickled to the workers by name
Options.__doc__ = ("Everything that changes how a source is analyzed (generated from "
                   "``options.OPTIONS``: the CLI's flags minus output, gate and runner).")


def engine_options(settings: dict, **overrides: Any) -> Options:
    """The ``Options`` of merged ``settings`` (``config.merge``); ``overrides`` win (bytes of
    ``max_memory`` per worker, computed by the CLI)."""
    fields = {spec.field: _field_value(spec, settings.get(spec.name, spec.default))
              for spec in OPTIONS if spec.field is not None}
    return Options(**{**fields, **overrides})
