"""The ``gradcheck`` command: parse, merge configuration, wire the engine, pick the exit code.

TensorFlow is imported only once a source is analyzed, so ``--help`` and ``--version`` are instant.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
from pathlib import Path

import typer

from gradcheck import __version__
from gradcheck.problems import printable
from gradcheck.results import ExitCode

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


HELP = (
    "Find the trainable variables of Keras models that get no gradient, and say why.\n\n"
    "SOURCE is a .keras or .h5 model file, or a factory path/to/file.py:fn or package.module:fn "
    "returning a built model.  Exit codes: 0 nothing fails, 1 some variable fails the gate, 2 "
    "usage error, 3 some source could not be analyzed.\n\n"
    "How a model is judged: --loss if given; else a model that overrides train_step (GAN/VAE "
    "trainers) or compute_loss is run through its own training step once, every tape.gradient "
    "and optimizer apply recorded, nothing applied; else the compiled loss on synthetic targets; "
    "else a fixed random projection of the outputs.")


def main(ctx: typer.Context, sources: list[str], **flags) -> None:
    """The command; its options are ``options.OPTIONS`` (see ``_signature``)."""
    from gradcheck.config import ConfigError, check_flag, find_pyproject, load_file, merge
    from gradcheck.options import BY_NAME, OptionError

    typed = {name: value for name, value in flags.items() if _typed(ctx, name)}
    try:
        for name, value in typed.items():
            spec = BY_NAME[name]
            try:
                value = spec.from_flag(value) if spec.from_flag else value
            except OptionError as exc:
                raise ConfigError(f"{spec.flag} {exc}") from None
            check_flag(name, value)
            typed[name] = value
        config, shard = typed.pop("config", None), typed.pop("shard", None)  # flags, not keys
        path = Path(config) if config is not None else find_pyproject(Path.cwd())
        if config is not None and not path.is_file():
            raise ConfigError(f"--config {config}: no such file.")
        settings = {**merge(load_file(path) if path else {}, typed), "shard": shard}
    except ConfigError as exc:
        raise _usage_error(str(exc)) from None
    from gradcheck.lifetime import terminate_as_interrupt

    try:
        with terminate_as_interrupt():
            code = run(sources, settings)
    except KeyboardInterrupt as stop:  # Ctrl-C (the workers ignore it) or SIGTERM: ours
        code = _stopped(stop, settings)
    raise typer.Exit(code)


def _stopped(stop: KeyboardInterrupt, settings: dict) -> int:
    """Say that the run was stopped, and remove the reports it would have replaced (``-o`` and
    every ``--report`` file): an older report must not be taken for this run's."""
    from gradcheck.lifetime import Terminated

    outputs = [settings["output"]] if settings["output"] else []
    outputs += [entry.partition("=")[2] for entry in settings.get("report", ())]
    for output in outputs:
        with contextlib.suppress(OSError):
            if Path(output).is_file():
                Path(output).unlink()
    terminated = isinstance(stop, Terminated)
    typer.echo(f"gradcheck: {'terminated' if terminated else 'interrupted'}", err=True)
    return ExitCode.TERMINATED if terminated else ExitCode.INTERRUPTED


def _signature() -> inspect.Signature:
    """``main``'s parameters as typer reads them: SOURCE..., then one per ``OPTIONS`` entry."""
    from gradcheck.options import OPTIONS

    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        inspect.Parameter("sources", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=list[str],
                          default=typer.Argument(..., metavar="SOURCE...", show_default=False)),
    ]
    for spec in OPTIONS:
        default = spec.default
        if spec.flag_type is str and isinstance(default, list):
            default = None  # a comma-separated flag; its help names the default
        elif spec.flag_type is str and default is not None:
            default = str(default)
        annotation = spec.flag_type if default is not None or spec.flag_type is not str \
            else str | None
        minimum = {"batch_size": 1, "timeout": 0}.get(spec.name)
        option = typer.Option(default, *spec.flags, metavar=spec.metavar, help=spec.help,
                              min=minimum)
        parameters.append(inspect.Parameter(spec.name, keyword, default=option,
                                            annotation=annotation))
    parameters.append(inspect.Parameter(
        "version", keyword, annotation=bool, default=typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Show the version and exit.")))
    return inspect.Signature(parameters)


main.__signature__ = _signature()
main.__annotations__ = {p.name: p.annotation for p in main.__signature__.parameters.values()}
app.command(cls=_FileNamesAreNotOptions, help=HELP)(main)


def _typed(ctx: typer.Context, name: str) -> bool:
    """Did the user type this flag?  (Compared by name: typer may ship its own click.)"""
    source = ctx.get_parameter_source(name)
    return getattr(source, "name", None) == "COMMANDLINE"


def run(sources: list[str], settings: dict) -> int:
    """Take what the cache holds, analyze the rest in worker processes, gate, render and write;
    return the exit code."""
    from gradcheck import gate
    from gradcheck.options import engine_options
    from gradcheck.results import Status, exit_code

    try:
        rules = [gate.parse_allow(entry) for entry in settings["allow"]]
        known = gate.read_baseline(Path(settings["baseline"])) if settings["baseline"] else None
        from gradcheck.plans.inputs import parse_override

        for text in settings["input"]:
            parse_override(text)
        destinations = _report_destinations(settings)
        sources = _shard_of(sources, settings)
    except (ValueError, OSError) as exc:
        typer.echo(f"gradcheck: error: {printable(str(exc))}", err=True)
        return ExitCode.USAGE
    fail_on = frozenset(Status(s) for s in settings["fail_on"])
    options = engine_options(settings)
    models = _analyze(sources, options, settings, _open_cache(settings, options))
    report = gate.apply(models, version=__version__, fail_on=fail_on, allow=rules, baseline=known)
    if settings["output"] or not _stdout_is_stderr():  # else the report below says it once
        for model in report.errors:
            typer.echo(f"gradcheck: error: {printable(model.error.message)}", err=True)
    try:
        _write_reports(report, settings, destinations)
        if settings["write_baseline"]:
            gate.write_baseline(report, Path(settings["write_baseline"]))
    except OSError as exc:
        typer.echo(f"gradcheck: error: cannot write {printable(str(exc.filename or ''))}: "
                   f"{exc.strerror or exc}.", err=True)
        return ExitCode.USAGE
    _warn_if_no_pictures(settings, report)
    _append_job_summary(report)
    return exit_code(report)


def _report_destinations(settings: dict) -> list[tuple[str, Path]]:
    """``--report FORMAT=FILE`` entries as (format, path); two outputs to one file are refused."""
    destinations = [(fmt, Path(path)) for fmt, _, path in
                    (entry.partition("=") for entry in settings["report"])]
    claimed: dict[str, str] = {}
    if settings["output"]:
        claimed[os.path.abspath(settings["output"])] = f"--output {settings['output']}"
    for (_, path), entry in zip(destinations, settings["report"]):
        where = os.path.abspath(path)
        if where in claimed:
            raise ValueError(f"--report {entry} and {claimed[where]} both write {path}; give each "
                             "report its own file.")
        claimed[where] = f"--report {entry}"
    return destinations


def _shard_of(sources: list[str], settings: dict) -> list[str]:
    """``--shard K/N``'s part of the sources (all of them without it)."""
    if not settings["shard"]:
        return sources
    from gradcheck.shard import parse_shard, select

    if settings["write_baseline"]:
        raise ValueError("--write-baseline records every finding and --shard sees only part of "
                         "them; write the baseline in one run without --shard.")
    part, parts = parse_shard(settings["shard"])
    chosen = select(sources, part, parts)
    if not settings["quiet"]:
        typer.echo(f"gradcheck: shard {part}/{parts}: {len(chosen)} of {len(sources)} sources",
                   err=True)
    return chosen


def _write_reports(report, settings: dict, destinations: list[tuple[str, Path]]) -> None:
    """The report on stdout (or ``-o``) and in every ``--report`` file, each written whole."""
    from gradcheck.formats import Format, render

    text = render(report, Format(settings["format"]),
                  color=_use_color(settings["color"], settings["output"]),
                  verbose=settings["verbose"])
    if settings["output"]:
        _write_file(Path(settings["output"]), text)
    else:
        sys.stdout.buffer.write(text.encode("utf-8", "backslashreplace"))
        sys.stdout.flush()
    for fmt, path in destinations:
        _write_file(path, render(report, Format(fmt), verbose=settings["verbose"]))


def _write_file(path: Path, text: str) -> None:
    """Write ``text`` whole; an ``OSError`` names ``path``, not the temporary file beside it."""
    from gradcheck.files import write_atomically

    try:
        write_atomically(path, text)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


def _open_cache(settings: dict, options):
    """The result cache, or None: switched off, or bypassed because the output of the analysis
    itself is wanted (``--graph`` files, ``--debug`` tracebacks), or no key is available."""
    from gradcheck.cache import KEY_VARIABLE, CacheUnavailable, open_cache

    try:
        if settings["no_cache"] or settings["graph"] or settings["debug"]:
            return None
        return open_cache(options, directory=settings["cache_dir"])
    except CacheUnavailable as exc:
        typer.echo(f"gradcheck: warning: the result cache is off: {printable(str(exc))}.",
                   err=True)
        return None
    finally:  # the analyzed code (in the workers) never sees the key
        os.environ.pop(KEY_VARIABLE, None)


def _warn_if_no_pictures(settings: dict, report) -> None:
    """``--graph`` draws the unconnected part with Graphviz; say once when it could not."""
    import shutil

    from gradcheck.results import Status

    if not settings["graph"] or shutil.which("dot") is not None:
        return
    if any(v.status is Status.UNCONNECTED for m in report.models for v in m.variables):
        typer.echo(f"gradcheck: warning: --graph wrote no .svg pictures to "
                   f"{printable(settings['graph'])}: Graphviz's dot is not on PATH (apt-get install "
                   "graphviz, brew install graphviz); the .graphml and .dot files are there.",
                   err=True)


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


def _analyze(sources: list[str], options, settings: dict, cache) -> list:
    """Each source's report: from ``cache`` where it holds one, else from one of the worker
    processes (``--jobs``), with progress on stderr unless --quiet.  The cache is looked up before
    any worker starts: when it holds every source, none starts and TensorFlow is not imported."""
    import contextlib
    import dataclasses

    from gradcheck.runner import Event, auto_jobs, prestart, run_sources

    found = [cache.lookup(source) if cache is not None else None for source in sources]
    todo = [index for index, report in enumerate(found) if report is None]
    workers = max(1, auto_jobs(len(todo)) if settings["jobs"] == "auto"
                  else min(settings["jobs"], len(todo)))
    if todo:
        prestart(workers)  # TensorFlow loads in the workers while we set up
    options = dataclasses.replace(
        options, max_memory=_memory_per_worker(settings["max_memory"], workers))
    progress = contextlib.nullcontext(lambda event: None)
    if not settings["quiet"]:
        from gradcheck.progress import Progress

        live = sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
        progress = Progress(len(sources), live=live, verbose=settings["verbose"])
    with progress as show:
        for index, report in enumerate(found):
            if report is not None:
                show(Event("done", index, sources[index], report=report, cached=True))

        def relay(event: Event) -> None:
            event.index = todo[event.index]
            if event.kind == "done" and cache is not None:
                cache.add(event.source, event.report, event.reads)
            show(event)

        if todo:
            reports = run_sources([sources[i] for i in todo], options, jobs=workers,
                                  timeout=settings["timeout"] or None, on_event=relay)
            for index, report in zip(todo, reports):
                found[index] = report
    if cache is not None:
        cache.close()
        if settings["verbose"] and not settings["quiet"]:
            typer.echo(f"gradcheck: {len(sources) - len(todo)} of {len(sources)} sources from the "
                       f"cache in {printable(str(cache.directory))}", err=True)
    return found


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
    except KeyboardInterrupt as stop:
        sys.exit(_stopped(stop, None))
