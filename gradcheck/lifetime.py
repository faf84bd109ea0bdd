"""A worker never outlives the run that started it, and leaves no files behind it.

The parent owns a scratch directory per process (``gradcheck-<pid>-…`` under the system's
temporary directory) and one folder in it per worker; a worker points ``tempfile`` (and
``TMPDIR``) there, so whatever loading extracts (a model's assets) lands inside, and the parent
removes a worker's folder when it kills or retires that worker, even if the worker was killed in
the middle of a source.

A worker watches its parent: on Linux the kernel sends it SIGKILL when the parent dies
(``PR_SET_PDEATHSIG``, set first thing and checked against the parent's pid, so a parent that
died before it was set is noticed too); elsewhere, and as a second line, a thread compares
``os.getppid()`` with the parent's pid every ``WATCH_S`` and removes the worker's folder before
it exits.  Scratch directories whose process is gone (a parent killed with SIGKILL cannot clean
up) are removed by the next run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

#: How often a worker's watch thread checks that its parent is alive.
WATCH_S = 0.1
#: Scratch directories of dead runs younger than this are left alone (a run in another pid
#: namespace sharing /tmp could look dead).
STALE_AFTER_S = 60.0
PREFIX = "gradcheck-"
_PR_SET_PDEATHSIG = 1


class Scratch:
    """The parent's scratch directory and its workers' folders (created on first use)."""

    def __init__(self):
        self.root: Path | None = None

    def new_folder(self) -> Path:
        """A fresh, empty folder for one worker."""
        if self.root is None or not self.root.is_dir():
            sweep_stale()
            self.root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
        return Path(tempfile.mkdtemp(prefix="worker-", dir=self.root))

    def remove(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


def sweep_stale(now: float | None = None) -> None:
    """Remove scratch directories left by runs whose process no longer exists."""
    now = time.time() if now is None else now
    base = Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        for entry in os.scandir(base):
            pid = _owner_pid(entry.name)
            if pid is None or pid == os.getpid() or _alive(pid):
                continue
            with contextlib.suppress(OSError):
                info = entry.stat(follow_symlinks=False)
                mine = not hasattr(os, "getuid") or info.st_uid == os.getuid()
                if mine and entry.is_dir(follow_symlinks=False) and now - info.st_mtime > STALE_AFTER_S:
                    shutil.rmtree(entry.path, ignore_errors=True)


def _owner_pid(name: str) -> int | None:
    if not name.startswith(PREFIX):
        return None
    pid = name[len(PREFIX):].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: someone else's process
        return True
    return True


# --- in the worker ------------------------------------------------------------------------------


def watch_parent(parent: int, folder: Path | None, *, kernel: bool) -> None:
    """Exit this worker (removing ``folder``) as soon as the process ``parent`` is gone.

    ``kernel``: also ask Linux to SIGKILL this process when its parent dies, which works even
    while a C call holds the GIL; only valid when the parent spawned us from its main thread
    (the kernel tracks the spawning thread, not the process).
    """
    if kernel and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # died before the watch was set: nobody will signal us
        _leave(folder)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCH_S)
        _leave(folder)

    threading.Thread(target=watch, name="gradcheck-parent-watch", daemon=True).start()


def use_folder(folder: Path | None) -> None:
    """Send this process's temporary files (``tempfile``, and TMPDIR for native code) there,
    and Keras' settings file too when there is none to read: Keras writes ``~/.keras/keras.json``
    with its defaults on import when it is missing, a file outside the run's folder.  Keras
    imports matplotlib when it is installed, which writes a font cache into ``~/.cache``: that
    goes to the run's folder as well, unless the user chose a place for it."""
    if folder is None:
        return
    tempfile.tempdir = str(folder)
    os.environ["TMPDIR"] = str(folder)
    os.environ.setdefault("MPLCONFIGDIR", str(folder / "matplotlib"))
    if "KERAS_HOME" not in os.environ:
        home = os.path.expanduser("~")
        keras_dir = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
        if not os.path.exists(os.path.join(keras_dir, "keras.json")):
            os.environ["KERAS_HOME"] = str(folder / "keras-home")  # the same defaults, read


def _leave(folder: Path | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
    os._exit(0)  # nobody is left to read a report: no teardown, no traceback


# --- in the parent ------------------------------------------------------------------------------


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is, so that it ends as Ctrl-C does (workers stopped, no
    report left behind) with its own exit code."""


@contextlib.contextmanager
def terminate_as_interrupt():
    """While active, SIGTERM raises ``Terminated`` in the main thread (once: a second one
    during the clean-up is ignored).  Outside the main thread, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
