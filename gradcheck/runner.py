"""Analyze sources in worker processes: per-source timeouts, crash isolation, ``-j N``.

A model file is untrusted and a factory is arbitrary code: either may hang in C, exhaust memory,
call ``os._exit(0)`` or write to file descriptor 1.  None of that may end the run, silence the
gate or corrupt the report, so the CLI never loads a model in its own process.  Each worker is
a spawned interpreter that imports TensorFlow once and analyzes the sources it is handed, one at
a time, reporting each stage.  The parent only waits: a source that outlives ``--timeout`` or
whose worker dies becomes that source's error, the worker is replaced, and the others go on.
Reports come back in the order of the sources, so ``-j 2`` prints what ``-j 1`` prints.

Workers are kept for the life of the process, so a test suite (or ``gradcheck.check`` called
in a loop) pays for TensorFlow's import once, as it did in-process.  None outlives it: the pool
kills every worker it started at exit (and ``run_sources`` the busy ones when it is interrupted),
and a worker whose parent dies exits at once (``lifetime``).  Each worker's temporary files go
to a folder the parent owns and removes.
"""

from __future__ import annotations

import atexit
import gc
import multiprocessing
import os
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path

from gradcheck.lifetime import Scratch, use_folder, watch_parent
from gradcheck.problems import ErrorKind
from gradcheck.results import ModelReport, SourceError

#: Stack of the thread that analyzes: Keras builds deep models (a 1000-layer Sequential)
#: recursively, which the default 8 MiB stack and recursion limit cannot hold.
WORKER_STACK = 512 * 2**20
WORKER_RECURSION_LIMIT = 60_000
#: How often the parent wakes to refresh the progress line and check deadlines.
TICK_S = 0.1
#: Memory a worker needs besides the model (TensorFlow itself), for ``--jobs auto``.
WORKER_BASE_MEMORY = 2 * 2**30

_CONTEXT = multiprocessing.get_context("spawn")


@dataclass
class Event:
    """What the runner tells the progress display."""

    kind: str  #: ``start`` (a source was handed out), ``stage``, ``done``
    index: int  #: position of the source on the command line
    source: str
    stage: str = ""  #: for ``stage``: ``starting TensorFlow``, ``loading``, ``analyzing``
    report: ModelReport | None = None  #: for ``done``
    seconds: float = 0.0  #: for ``done``: how long the source took
    reads: tuple[tuple[str, str], ...] | None = None  #: for ``done``: the user's files read, with
    #: their digests (``cache.reads``); None when unknown (the worker died or timed out)
    cached: bool = False  #: for ``done``: the report came from the cache, no worker ran


def auto_jobs(count: int) -> int:
    """``--jobs auto``: one worker per core, as many as memory allows, no more than sources."""
    from gradcheck.budget import machine_memory

    by_memory = max(1, machine_memory() // (2 * WORKER_BASE_MEMORY))
    return max(1, min(os.cpu_count() or 1, by_memory, count))


def prestart(count: int) -> None:
    """Start ``count`` workers now, so their TensorFlow import overlaps the caller's own set-up."""
    while len(_pool.idle) < count:
        _pool.idle.append(_pool.fresh())


def run_sources(sources: Sequence[str], options, *, jobs: int, timeout: float | None,
                on_event: Callable[[Event], None] = lambda event: None) -> list[ModelReport]:
    """Analyze ``sources`` in ``jobs`` workers; one report per source, in the given order."""
    reports: list[ModelReport | None] = [None] * len(sources)
    pending = list(range(len(sources)))
    workers = [_pool.take() for _ in range(max(1, min(jobs, len(sources))))]
    try:
        while pending or any(w.task is not None for w in workers):
            for slot, worker in enumerate(workers):
                if worker.task is None and pending:
                    if not worker.alive():  # killed (timeout) or died: a fresh one takes over
                        worker.kill()  # reaps it and removes its folder
                        workers[slot] = worker = _pool.fresh()
                    index = pending.pop(0)
                    worker.start(index, sources[index], options)
                    on_event(Event("start", index, sources[index], stage=worker.stage))
            _wait_and_collect(workers, sources, reports, timeout, on_event)
    except BaseException:
        for worker in workers:
            worker.kill()
        raise
    for worker in workers:
        _pool.give_back(worker)
    return [report for report in reports if report is not None]


def _wait_and_collect(workers, sources, reports, timeout, on_event) -> None:
    busy = [w for w in workers if w.task is not None]
    wait([w.connection for w in busy] + [w.process.sentinel for w in busy], timeout=TICK_S)
    for worker in busy:
        index = worker.task
        outcome = worker.poll(timeout)
        if outcome is None:
            continue
        if isinstance(outcome, str):  # a new stage
            on_event(Event("stage", index, sources[index], stage=outcome))
            continue
        report, reads = outcome if isinstance(outcome, tuple) else (outcome, None)
        reports[index] = report
        on_event(Event("done", index, sources[index], report=report,
                       seconds=time.monotonic() - worker.started, reads=reads))
        worker.task = None


class _Worker:
    """One spawned analysis process, its scratch folder and the source it is working on."""

    def __init__(self, folder: Path | None):
        import threading

        parent, child = _CONTEXT.Pipe()
        self.connection = parent
        self.folder = folder
        kernel_watch = threading.current_thread() is threading.main_thread()
        self.process = _CONTEXT.Process(target=worker_main, daemon=True, name="gradcheck-worker",
                                        args=(child, os.getpid(), folder, kernel_watch))
        self.process.start()
        child.close()
        self.task: int | None = None
        self.source = ""
        self.started = 0.0
        self.stage = "starting TensorFlow"
        self.ready = False

    def start(self, index: int, source: str, options) -> None:
        self.task, self.source, self.started = index, source, time.monotonic()
        self.stage = "loading" if self.ready else "starting TensorFlow"
        self.connection.send((source, options, os.getcwd()))  # relative paths: the caller's

    def poll(self, timeout: float | None):
        """A stage name, (the finished report, its reads), an error report, or None (working)."""
        try:
            while self.connection.poll():
                message = self.connection.recv()
                if message == "ready":  # TensorFlow is imported: the source's clock starts
                    self.ready, self.started, self.stage = True, time.monotonic(), "loading"
                    continue
                kind, payload = message
                if kind == "stage":
                    self.stage = payload
                    return payload
                return payload  # "done": (report, reads)
        except (EOFError, OSError):
            pass  # the process is gone: its exit code tells why
        if not self.process.is_alive():
            self.process.join()
            return _failed(self.source, ErrorKind.CRASHED, _death_sentence(self.source,
                                                                   self.process.exitcode))
        if timeout is not None and time.monotonic() - self.started > timeout:
            self.kill()
            return _failed(self.source, ErrorKind.TIMEOUT, f"{self.source}: the analysis did not finish "
                           f"within {timeout:g} s (while {self.stage}) and was stopped; if the "
                           "model is just large, raise --timeout.")
        return None

    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        """Kill the process (if alive), reap it and remove its folder; safe to call twice."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.connection.close()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        _pool.live.discard(self)


def _death_sentence(source: str, exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else str(-exitcode)
        hint = " (probably out of memory)" if -exitcode == signal.SIGKILL else ""
        return (f"{source}: the process analyzing it was killed by {name}{hint} before it "
                "finished; the file may be crafted to crash TensorFlow, or it needs more memory.")
    return (f"{source}: the process analyzing it exited (code {exitcode}) before it finished: "
            "code run while loading the model or in its step ended the process.")


def _failed(source: str, kind, message: str) -> ModelReport:
    from gradcheck.problems import SourceProblem

    return ModelReport(source=source, ok=False,
                       error=SourceError(kind.value, SourceProblem(kind, message).message))


class _Pool:
    """Idle workers kept between runs of the same process, and every worker still alive."""

    def __init__(self):
        self.idle: list[_Worker] = []
        self.live: set[_Worker] = set()
        self.scratch = Scratch()
        atexit.register(self.close)

    def take(self) -> _Worker:
        while self.idle:
            worker = self.idle.pop()
            if worker.alive():
                return worker
        return self.fresh()

    def fresh(self) -> _Worker:
        try:
            folder = self.scratch.new_folder()
        except OSError:  # no writable temporary directory: the worker uses the default
            folder = None
        worker = _Worker(folder)
        self.live.add(worker)
        return worker

    def give_back(self, worker: _Worker) -> None:
        if worker.alive() and worker.task is None:
            self.idle.append(worker)
        else:
            worker.kill()

    def close(self) -> None:
        """Stop every worker this process started (idle or not) and remove the scratch folder."""
        for worker in self.idle:
            try:
                worker.connection.send(None)
            except (OSError, ValueError):
                pass
        for worker in list(self.live):
            worker.kill()
        self.idle = []
        self.scratch.remove()


_pool = _Pool()


# --- in the worker process ----------------------------------------------------------------------


def worker_main(connection, parent: int, folder: Path | None, kernel_watch: bool) -> None:
    """Entry point of a worker: TensorFlow once, then one source per message until None.

    It exits when its parent dies (``lifetime.watch_parent``) and keeps its temporary files in
    ``folder``, which the parent removes."""
    import threading

    watch_parent(parent, folder, kernel=kernel_watch)
    use_folder(folder)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    real_stderr = _stdout_to_stderr()
    sys.setrecursionlimit(WORKER_RECURSION_LIMIT)
    threading.stack_size(WORKER_STACK)
    thread = threading.Thread(target=_serve, args=(connection, real_stderr), daemon=True)
    thread.start()
    thread.join()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip TensorFlow's teardown


def _stdout_to_stderr() -> int:
    """Point fd 1 and ``sys.stdout`` at stderr for good: stdout belongs to the parent's report.

    Returns a descriptor of the real stderr that stays put while fd 2 is silenced."""
    os.dup2(2, 1)
    real_stderr = os.dup(2)
    sys.stdout = sys.stderr = open(real_stderr, "w", buffering=1, closefd=False,  # noqa: SIM115
                                   encoding="utf-8", errors="backslashreplace")
    return real_stderr


def _serve(connection, real_stderr: int) -> None:
    """Answer the parent until it says None or goes away (then quietly: nobody is listening)."""
    try:
        _answer(connection, real_stderr)
    except (EOFError, BrokenPipeError, ConnectionResetError):  # the parent is gone
        return


def _answer(connection, real_stderr: int) -> None:
    from gradcheck.api import analyze_source, quiet_tensorflow
    from gradcheck.cache.reads import SourceReads
    from gradcheck.problems import SourceProblem

    quiet_tensorflow()
    with _native_stderr_silenced(real_stderr, silenced=True):
        import tensorflow  # noqa: F401  (its banners go to fd 2, silenced here)
    connection.send("ready")
    imported: dict[tuple[str, ...], tuple] = {}
    while True:
        message = connection.recv()
        if message is None:
            return
        source, options, folder = message
        os.chdir(folder)
        with _native_stderr_silenced(real_stderr, silenced=not options.debug), \
                warnings.catch_warnings():
            if not options.debug:  # Keras' UserWarnings about the user's model are not ours
                warnings.simplefilter("ignore")
            custom, custom_reads = _custom_objects(options, imported)
            with SourceReads(also=custom_reads or (), exclude=source) as reads:
                if isinstance(custom, SourceProblem):
                    report = _failed(source, custom.kind, f"{source}: {custom.message}")
                else:
                    report = analyze_source(
                        source, options, custom, contain_interrupts=True,
                        on_stage=lambda stage: connection.send(("stage", stage)))
        if not report.ok:  # a failed load leaves cycles (tracebacks) holding what it built
            gc.collect()
        digests = reads.digests() if custom_reads is not None else None
        connection.send(("done", (report, digests)))


def _custom_objects(options, imported: dict):
    """The ``--custom-objects`` classes (or the problem importing them) and the files that import
    read, imported once per worker and again when one of those files changed (``SourceReads``
    adds them to each source's reads)."""
    from gradcheck.api import tensorflow_quietly
    from gradcheck.cache.reads import SourceReads
    from gradcheck.load.user_code import import_custom_objects
    from gradcheck.problems import SourceProblem

    key = tuple(options.custom_objects)
    if key not in imported or not _unchanged(imported[key][1]):  # edited since: import it again
        tensorflow_quietly()
        with SourceReads() as reads:
            try:
                found = import_custom_objects(list(key))
            except SourceProblem as problem:
                found = problem
            except BaseException as exc:  # SystemExit or worse from the user's module
                found = SourceProblem(ErrorKind.IMPORT_FAILED, f"importing --custom-objects raised "
                                      f"{type(exc).__name__}: {exc}")
        imported[key] = (found, reads.digests())
    return imported[key]


def _unchanged(digests) -> bool:
    from gradcheck.cache.keys import regular_digest

    return digests is not None and all(regular_digest(path) == digest for path, digest in digests)


class _native_stderr_silenced:
    """fd 2 to /dev/null (TensorFlow's C++ logs) while ``sys.stderr`` keeps the real stderr."""

    def __init__(self, real_stderr: int, *, silenced: bool):
        self.real_stderr, self.silenced = real_stderr, silenced

    def __enter__(self):
        if self.silenced:
            sys.stderr.flush()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        return self

    def __exit__(self, *exc):
        if self.silenced:
            sys.stderr.flush()
            os.dup2(self.real_stderr, 2)
        return False
