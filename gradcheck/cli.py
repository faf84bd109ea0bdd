"""The ``gradcheck`` command: parse, merge configuration, wire the engine, pick the exit code.

TensorFlow is imported only once a source is analyzed, so ``--help`` and ``--version`` are instant.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from gradcheck import __version__
from gradcheck.report import ExitCode

app = typer.Typer(add_completion=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]})


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gradcheck {__version__}")
        raise typer.Exit(ExitCode.OK)


def _usage_error(message: str) -> typer.Exit:
    typer.echo(f"gradcheck: error: {message}", err=True)
    return typer.Exit(ExitCode.USAGE)


@app.command(help="Find the trainable variables of Keras models that get no gradient, and say why.\n\n"
             "SOURCE is a .keras or .h5 model file, or a factory path/to/file.py:fn or "
             "package.module:fn returning a built model.  Exit codes: 0 nothing fails, 1 some "
             "variable fails the gate, 2 usage error, 3 some source could not be analyzed.\n\n"
             "How a model is judged: --loss if given; else a model that overrides train_step "
             "(GAN/VAE trainers) or compute_loss is run through its own training step once, "
             "every tape.gradient and optimizer apply recorded, nothing applied; else the "
             "compiled loss on synthetic targets; else a fixed random projection of the outputs.")
def main(
    ctx: typer.Context,
    sources: list[str] = typer.Argument(..., metavar="SOURCE...", show_default=False),
    format: str = typer.Option("text", "--format", "-f", metavar="FORMAT", help="text, json, github, junit or sarif."),
    output: Path | None = typer.Option(None, "--output", "-o", metavar="FILE", help="Write the report to FILE."),
    fail_on: str | None = typer.Option(None, "--fail-on", metavar="STATUSES", help="Comma-separated statuses that "
                                          "fail the gate: unconnected,zero,nonfinite. [default: unconnected]"),
    allow: list[str] = typer.Option([], "--allow", metavar="RULE", help="[SOURCE::]GLOB[=REASON]: variables meant "
                                    "not to learn (repeatable)."),
    baseline: Path | None = typer.Option(None, "--baseline", metavar="FILE",
                                         help="Fail only on findings not in FILE."),
    write_baseline: Path | None = typer.Option(None, "--write-baseline", metavar="FILE",
                                               help="Record today's findings in FILE."),
    custom_objects: list[str] = typer.Option([], "--custom-objects", metavar="PATH_OR_MODULE",
                                             help="A .py file or module defining custom Keras "
                                             "classes (repeatable)."),
    unsafe: bool = typer.Option(False, "--unsafe", help="Allow Lambda layers' Python bytecode "
                                "(Keras safe mode off)."),
    input: list[str] = typer.Option([], "--input", metavar="NAME=DIMS[:DTYPE]",
                                    help="NAME=DIM,DIM[:DTYPE]: an input's shape without the "
                                    "batch dim (repeatable)."),
    batch_size: int = typer.Option(2, "--batch-size", metavar="N", min=1, help="Batch size of the synthetic inputs."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Seed for inputs, dropout and initializers."),
    inference: bool = typer.Option(False, "--inference", help="Run the step with training=False."),
    loss: str | None = typer.Option(None, "--loss", metavar="MODULE:FN", help="module:fn or file.py:fn computing "
                                       "fn(model, inputs, outputs) -> scalar."),
    data: str | None = typer.Option(None, "--data", metavar="MODULE:FN", help="module:fn or file.py:fn "
                                    "returning the batch: x, (x, y) or (x, y, sample_weight)."),
    real_weights: bool = typer.Option(False, "--real-weights", help="Run the step on the stored "
                                      "weights (slower; finds zero/nonfinite gradients of a trained model)."),
    graph: Path | None = typer.Option(None, "--graph", metavar="DIR", help="Write each source's op graph "
                                         "(GraphML, DOT, SVG if Graphviz is installed) to DIR."),
    color: str = typer.Option("auto", "--color", metavar="WHEN", help="auto, always or never."),
    config: Path | None = typer.Option(None, "--config", metavar="FILE", help="Read [tool.gradcheck] from FILE "
                                          "instead of the nearest pyproject.toml."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and TensorFlow's logs."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Show the version and exit."),
) -> None:
    given = dict(locals())  # every parameter's value; keep only the flags the user typed
    from gradcheck.config import ConfigError, find_pyproject, load_file, merge

    typed = {name: value for name, value in given.items()
             if name not in ("ctx", "sources", "config", "version")
             and _typed(ctx, name)}
    if "fail_on" in typed:
        typed["fail_on"] = [s.strip() for s in typed["fail_on"].split(",") if s.strip()]
    for key in ("output", "baseline", "write_baseline", "graph"):
        if typed.get(key) is not None:
            typed[key] = str(typed[key])
    try:
        path = config if config is not None else find_pyproject(Path.cwd())
        if config is not None and not config.is_file():
            raise ConfigError(f"--config {config}: no such file.")
        settings = merge(load_file(path) if path else {}, typed)
        settings = _validated(settings)
    except ConfigError as exc:
        raise _usage_error(str(exc)) from None
    raise typer.Exit(run(sources, settings))


def _typed(ctx: typer.Context, name: str) -> bool:
    """Did the user type this flag?  (Compared by name: typer may ship its own click.)"""
    source = ctx.get_parameter_source(name)
    return getattr(source, "name", None) == "COMMANDLINE"


def _validated(settings: dict) -> dict:
    from gradcheck.config import COLOR_CHOICES, FAIL_ON_CHOICES, FORMAT_CHOICES, ConfigError

    if settings["format"] not in FORMAT_CHOICES:
        raise ConfigError(f"--format must be one of {', '.join(FORMAT_CHOICES)}, got "
                          f"'{settings['format']}'.")
    if settings["color"] not in COLOR_CHOICES:
        raise ConfigError(f"--color must be one of {', '.join(COLOR_CHOICES)}.")
    bad = [s for s in settings["fail_on"] if s not in FAIL_ON_CHOICES]
    if bad:
        raise ConfigError(f"--fail-on accepts {', '.join(FAIL_ON_CHOICES)}, got '{bad[0]}'.")
    return settings


def run(sources: list[str], settings: dict) -> int:
    """Analyze, gate, render and write; return the exit code."""
    from gradcheck import gate
    from gradcheck.api import Options, analyze_sources, quiet_tensorflow
    from gradcheck.formats import Format, render
    from gradcheck.report import Status, exit_code

    debug = settings["debug"]
    if not debug:
        quiet_tensorflow()
    try:
        rules = [gate.parse_allow(entry) for entry in settings["allow"]]
        known = gate.read_baseline(Path(settings["baseline"])) if settings["baseline"] else None
        from gradcheck.inputs import parse_override

        for text in settings["input"]:
            parse_override(text)
    except (ValueError, OSError) as exc:
        typer.echo(f"gradcheck: error: {exc}", err=True)
        return ExitCode.USAGE
    fail_on = frozenset(Status(s) for s in settings["fail_on"])
    options = Options(custom_objects=tuple(settings["custom_objects"]), unsafe=settings["unsafe"],
                      inputs=tuple(settings["input"]), batch_size=settings["batch_size"],
                      seed=settings["seed"], inference=settings["inference"],
                      loss=settings["loss"], real_weights=settings["real_weights"],
                      data=settings["data"],
                      fail_on=fail_on, graph_dir=settings["graph"], debug=debug)
    with _quiet_native_stderr(enabled=not debug):
        models = analyze_sources(sources, options)
    report = gate.apply(models, version=__version__, fail_on=fail_on, allow=rules, baseline=known)
    for model in report.errors:
        typer.echo(f"gradcheck: error: {model.error.message}", err=True)
    fmt = Format(settings["format"])
    text = render(report, fmt, color=_use_color(settings["color"], settings["output"]))
    if settings["output"]:
        Path(settings["output"]).write_text(text)
    else:
        sys.stdout.write(text)
    if settings["write_baseline"]:
        gate.write_baseline(report, Path(settings["write_baseline"]))
    return exit_code(report)


def _use_color(mode: str, output: str | None) -> bool:
    if mode != "auto":
        return mode == "always"
    if output or os.environ.get("NO_COLOR"):
        return False
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


class _quiet_native_stderr:
    """Send file descriptor 2 to /dev/null while TensorFlow runs, unless --debug.

    TensorFlow's C++ runtime writes banners straight to fd 2, past Python's ``sys.stderr``;
    gradcheck's own messages are printed after this block.
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        if self.enabled:
            sys.stderr.flush()
            self._saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        return self

    def __exit__(self, *exc):
        if self.enabled:
            sys.stderr.flush()
            os.dup2(self._saved, 2)
            os.close(self._saved)
        return False


def entry() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("gradcheck: interrupted", err=True)
        sys.exit(130)
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else None)
        if code is None or "tensorflow" not in sys.modules:
            raise
        # Everything is written; tearing down TensorFlow and Keras would only cost the user
        # another half second.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
