"""The ``gradcheck`` command: parse, merge configuration, wire the engine, pick the exit code.

TensorFlow is imported only once a source is analyzed, so ``--help`` and ``--version`` are instant.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from gradcheck import __version__
from gradcheck.problems import printable
from gradcheck.report import ExitCode

app = typer.Typer(add_completion=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]})


class _FileNamesAreNotOptions(typer.core.TyperCommand):
    """Refuse an option-like argument that is also the name of an existing file.

    A changed-files list passed without ``--`` would let a file named ``--config=evil.toml`` or
    ``--unsafe`` set options of the gate that checks it.  Everything after ``--`` is a source.
    """

    def parse_args(self, ctx, args):
        for arg in args:
            if arg == "--":
                break
            if arg.startswith("-") and len(arg) > 1 and os.path.lexists(arg):
                raise _usage_error(f"'{printable(arg)}' is the name of a file, but it stands "
                                   "where options go; put -- before file names: gradcheck "
                                   "[OPTIONS] -- SOURCE...")
        return super().parse_args(ctx, args)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gradcheck {__version__}")
        raise typer.Exit(ExitCode.OK)


def _usage_error(message: str) -> typer.Exit:
    typer.echo(f"gradcheck: error: {message}", err=True)
    return typer.Exit(ExitCode.USAGE)


@app.command(cls=_FileNamesAreNotOptions,
             help="Find the trainable variables of Keras models that get no gradient, and say why.\n\n"
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
    format: str = typer.Option("text", "--format", "-f", metavar="FORMAT",
                               help="text, json, github, junit, sarif or markdown."),
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
    input: list[str] = typer.Option([], "--input", metavar="NAME=DIMS[:DTYPE][@LOW..HIGH]",
                                    help="NAME=DIM,DIM[:DTYPE][@LOW..HIGH|@VALUE]: an input's "
                                    "shape without the batch dim, its dtype (default: the "
                                    "model's) and values (repeatable)."),
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
    timeout: float = typer.Option(120, "--timeout", metavar="SECONDS", min=0,
                                  help="Stop a source that takes longer (0: no limit)."),
    max_memory: str = typer.Option("auto", "--max-memory", metavar="SIZE",
                                   help="Refuse a source whose weights and inputs need more "
                                   "(e.g. 4G; auto: half the machine's memory)."),
    jobs: str = typer.Option("1", "--jobs", "-j", metavar="N", help="Analyze N sources at once "
                             "in worker processes (auto: one per core)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and TensorFlow's logs."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show every variable in the text "
                                 "report, not only the findings."),
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
    if "jobs" in typed and typed["jobs"] != "auto":
        if not typed["jobs"].isdigit() or int(typed["jobs"]) < 1:
            raise _usage_error(f"--jobs takes a positive number or auto, got '{typed['jobs']}'.")
        typed["jobs"] = int(typed["jobs"])
    try:
        path = config if config is not None else find_pyproject(Path.cwd())
        if config is not None and not config.is_file():
            raise ConfigError(f"--config {config}: no such file.")
        settings = merge(load_file(path) if path else {}, typed)
        settings = _validated(settings)
    except ConfigError as exc:
        raise _usage_error(str(exc)) from None
    try:
        code = run(sources, settings)
    except KeyboardInterrupt:  # a real Ctrl-C: the workers ignore it, so it is ours
        typer.echo("gradcheck: interrupted", err=True)
        code = 130
    raise typer.Exit(code)


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
    if settings["max_memory"] != "auto":
        from gradcheck.budget import parse_size

        try:
            parse_size(settings["max_memory"])
        except ValueError as exc:
            raise ConfigError(f"--max-memory: {exc}") from None
    return settings


def run(sources: list[str], settings: dict) -> int:
    """Analyze (in worker processes), gate, render and write; return the exit code."""
    from gradcheck import gate
    from gradcheck.api import Options
    from gradcheck.files import write_atomically
    from gradcheck.formats import Format, render
    from gradcheck.report import Status, exit_code

    try:
        rules = [gate.parse_allow(entry) for entry in settings["allow"]]
        known = gate.read_baseline(Path(settings["baseline"])) if settings["baseline"] else None
        from gradcheck.inputs import parse_override

        for text in settings["input"]:
            parse_override(text)
    except (ValueError, OSError) as exc:
        typer.echo(f"gradcheck: error: {printable(str(exc))}", err=True)
        return ExitCode.USAGE
    from gradcheck.runner import auto_jobs, prestart

    workers = (auto_jobs(len(sources)) if settings["jobs"] == "auto"
               else min(settings["jobs"], len(sources)))
    prestart(workers)  # TensorFlow loads in the workers while we set up
    fail_on = frozenset(Status(s) for s in settings["fail_on"])
    options = Options(custom_objects=tuple(settings["custom_objects"]), unsafe=settings["unsafe"],
                      inputs=tuple(settings["input"]), batch_size=settings["batch_size"],
                      seed=settings["seed"], inference=settings["inference"],
                      loss=settings["loss"], real_weights=settings["real_weights"],
                      data=settings["data"],
                      fail_on=fail_on, graph_dir=settings["graph"], debug=settings["debug"],
                      max_memory=_memory_per_worker(settings["max_memory"], workers))
    models = _analyze(sources, options, settings, workers)
    report = gate.apply(models, version=__version__, fail_on=fail_on, allow=rules, baseline=known)
    if settings["output"] or not _stdout_is_stderr():  # else the report below says it once
        for model in report.errors:
            typer.echo(f"gradcheck: error: {printable(model.error.message)}", err=True)
    fmt = Format(settings["format"])
    text = render(report, fmt, color=_use_color(settings["color"], settings["output"]),
                  verbose=settings["verbose"])
    try:
        if settings["output"]:
            write_atomically(Path(settings["output"]), text)
        else:
            sys.stdout.buffer.write(text.encode("utf-8", "backslashreplace"))
            sys.stdout.flush()
        if settings["write_baseline"]:
            gate.write_baseline(report, Path(settings["write_baseline"]))
    except OSError as exc:
        typer.echo(f"gradcheck: error: cannot write {printable(str(exc.filename or ''))}: "
                   f"{exc.strerror or exc}.", err=True)
        return ExitCode.USAGE
    _append_job_summary(report)
    return exit_code(report)


def _stdout_is_stderr() -> bool:
    """True when stdout and stderr are one file, pipe or terminal.

    pre-commit runs a hook with ``stderr=subprocess.STDOUT`` (a pty for both with colour), so
    a source error printed on stderr and held by the report would show twice in its output.
    """
    try:
        out, err = os.fstat(sys.stdout.fileno()), os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):  # io.UnsupportedOperation: a stream with no file descriptor
        return False
    return (out.st_dev, out.st_ino) == (err.st_dev, err.st_ino)


def _append_job_summary(report) -> None:
    """In GitHub Actions, add the Markdown report to the job summary as well."""
    from gradcheck import job_summary

    path = job_summary.summary_path(os.environ)
    if path is None:
        return
    try:
        job_summary.append(report, path)
    except (OSError, job_summary.SummaryTooLarge) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        typer.echo(f"gradcheck: warning: cannot append the job summary to {path}: {reason}.",
                   err=True)


def _analyze(sources: list[str], options, settings: dict, jobs: int):
    """Each source in one of ``jobs`` worker processes, with progress on stderr unless --quiet."""
    from gradcheck.progress import Progress
    from gradcheck.runner import run_sources

    timeout = settings["timeout"] or None
    live = sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    if settings["quiet"]:
        return run_sources(sources, options, jobs=jobs, timeout=timeout)
    with Progress(len(sources), live=live) as progress:
        return run_sources(sources, options, jobs=jobs, timeout=timeout, on_event=progress)


def _memory_per_worker(setting: str | int, workers: int) -> int:
    """``--max-memory`` in bytes for one worker: the budget shared by the workers that run."""
    from gradcheck.budget import default_budget, parse_size

    total = default_budget() if setting == "auto" else parse_size(setting)
    return max(total // workers, 1)


def _use_color(mode: str, output: str | None) -> bool:
    if mode != "auto":
        return mode == "always"
    if output or os.environ.get("NO_COLOR"):
        return False
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


def entry() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("gradcheck: interrupted", err=True)
        sys.exit(130)
