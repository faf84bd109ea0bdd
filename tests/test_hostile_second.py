"""The second hostile sweep: memory through config objects and activations, files inside
directory models, the disk, and workers that must not outlive their run.

Every crafted file is built at test time (``tests/crafted.py``) and run through the real command
in a subprocess under a 6 GiB address-space limit (``ulimit -v 6291456``), next to a good
source: each bad one gets one honest sentence and exit 3, the good ones are still analyzed,
nothing hangs or runs out of memory, and no file appears outside the run's temporary directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import crafted
import pytest

pytest.importorskip("tensorflow")

REPO = Path(__file__).resolve().parents[1]
GOOD = f"{REPO / 'sample_models' / 'factories.py'}:clean_mlp"
ADDRESS_SPACE = 6291456 * 1024  # ulimit -v 6291456

#: The wrapper runs gradcheck under the limit and reports the peak RSS of its processes.
WRAPPER = (
    "import resource, subprocess, sys\n"
    f"resource.setrlimit(resource.RLIMIT_AS, ({ADDRESS_SPACE}, {ADDRESS_SPACE}))\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "sys.stderr.write(f'peak-rss-kib {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n')\n"
    "sys.exit(code)\n")


def run_limited(*args: str, cwd: Path, tmp: Path, home: Path | None = None, timeout: float = 300):
    """``gradcheck ARGS`` under the address-space limit: (run, stderr lines, peak RSS in MiB)."""
    command = [sys.executable, "-c", WRAPPER, sys.executable, "-m", "gradcheck", *args]
    env = {**os.environ, "TMPDIR": str(tmp)}
    if home is not None:  # a home without ~/.keras, which Keras writes on import
        env["HOME"] = str(home)
        env.pop("KERAS_HOME", None)
    run = subprocess.run(command, cwd=cwd, capture_output=True, timeout=timeout, env=env)
    lines = run.stderr.decode("utf-8", "replace").splitlines()
    peak = int(lines.pop().split()[-1]) / 1024
    return run, lines, peak


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every path below ``folder`` (symlinks not followed) with its type, size and mtime."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root, name)
            info = path.lstat()
            found[str(path.relative_to(folder))] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return found


#: crafted source -> (error type, words its message must hold); None: analyzed, no error
SWEEP = {
    "lambda_args_bomb.keras": ("too-large", "`arguments.threshold` of Lambda 'scale'"),
    "loss_weights_bomb.keras": ("too-large", "`compile_config.loss_weights` of Functional"),
    "void_dtype_bomb.keras": ("too-large", "dtype 'V2000000000'"),
    "node_kwargs_bomb.keras": ("too-large", "`inbound_nodes[0].kwargs.unused` of Dense 'head'"),
    "training_bomb.h5": ("too-large", "training_config"),
    "long_config.h5": ("too-large", "model_config attribute takes 40.0 MiB"),
    "lambda_activation.keras": ("unsafe-lambda", "`activation` of Dense 'hidden'"),
    "lambda_loss.keras": ("unsafe-lambda", "`compile_config.loss` of Functional"),
    "repeat_vector.keras": ("too-large", "'repeat' (RepeatVector) outputs (2, 400000000, 8)"),
    "upsampling.keras": ("too-large", "'upsample' (UpSampling2D) outputs (2, 40000, 40000, 1)"),
    "upsampling_dynamic.keras": ("too-large", "(UpSampling2D) outputs (2, 160000, 160000, 1)"),
    "long_attention.keras": ("too-large", "inside the layer 'mha' (MultiHeadAttention) is "
                                          "(2, 4, 100000, 100000) float32"),
    "devzero_vocab": ("unsafe-content", "vocabulary.txt is a symlink to /dev/zero"),
    "escaping_weights": ("unsafe-content", "outside the model's folder"),
    "fifo_weights": ("not-a-file", "model.weights.h5 is a named pipe"),
    "fifo_vocab": ("not-a-file", "vocabulary.txt is a named pipe"),
    "many_assets.keras": ("too-large", "assets/ files declare 320.0 MiB"),
    "good_dir.keras": None,
    "vocab.keras": None,
}


@pytest.fixture(scope="session")
def sweep_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sweep")
    base = folder / "base.keras"
    crafted.tiny_model().save(base)
    crafted.lambda_arguments_bomb(folder)
    crafted.loss_weights_bomb(base, folder)
    crafted.loss_weights_bomb(base, folder, dtype="V2000000000")
    crafted.node_kwargs_bomb(base, folder)
    crafted.lambda_activation(base, folder)
    crafted.lambda_loss(base, folder)
    crafted.h5_training_config_bomb(folder)
    crafted.h5_long_vlen_config(folder)
    crafted.repeat_vector(folder)
    crafted.upsampling(folder)
    crafted.upsampling(folder, dynamic=True)
    crafted.long_attention(folder)
    crafted.directory_model(folder, "good_dir.keras")
    crafted.vocabulary_archive(folder / "vocab.keras")
    crafted.directory_with(folder, "devzero_vocab", "vocabulary.txt", "symlink")
    crafted.directory_with(folder, "fifo_weights", "model.weights.h5", "fifo")
    crafted.directory_with(folder, "fifo_vocab", "vocabulary.txt", "fifo")
    (folder / "outside.h5").write_bytes(b"the attacker wants this read")
    crafted.directory_with(folder, "escaping_weights", "model.weights.h5", "symlink",
                           str(folder / "outside.h5"))
    crafted.many_assets(base, folder, count=40, size=8 * 2**20)
    return folder


@pytest.fixture(scope="session")
def sweep(sweep_dir, tmp_path_factory):
    """Every crafted source in one --real-weights run, under the limit, with a good factory."""
    tmp, home = tmp_path_factory.mktemp("run_tmp"), tmp_path_factory.mktemp("home")
    before = snapshot(sweep_dir)
    started = time.monotonic()
    run, stderr, peak = run_limited("-f", "json", "-q", "--real-weights", "--timeout", "60",
                                    "-o", "report.json", "--", *SWEEP, GOOD,
                                    cwd=sweep_dir, tmp=tmp, home=home)
    seconds = time.monotonic() - started
    report = json.loads((sweep_dir / "report.json").read_text())
    (sweep_dir / "report.json").unlink()
    return {"run": run, "stderr": stderr, "peak": peak, "seconds": seconds, "tmp": tmp, "home": home,
            "report": {m["source"]: m for m in report["models"]}, "before": before,
            "after": snapshot(sweep_dir)}


@pytest.mark.parametrize("name", list(SWEEP))
def test_each_crafted_source_is_refused_with_what_it_did(sweep, name):
    model = sweep["report"][name]
    if SWEEP[name] is None:
        assert model["ok"] and model["variables"], model
        return
    kind, words = SWEEP[name]
    error = model["error"]
    assert error["type"] == kind, error
    assert words in error["message"], error["message"]
    assert "compatible Keras version" not in error["message"]
    assert "\n" not in error["message"]


def test_the_sweep_analyzes_the_good_sources_and_stays_small(sweep):
    run, stderr = sweep["run"], sweep["stderr"]
    assert run.returncode == 3 and run.stdout == b""
    assert sweep["report"][GOOD]["ok"]
    assert all(line.startswith("gradcheck: error: ") for line in stderr), stderr  # no traceback
    assert len(stderr) == sum(1 for expected in SWEEP.values() if expected is not None)
    assert sweep["seconds"] < 150  # nothing hung until --timeout
    assert sweep["peak"] < 2048, f"peak RSS {sweep['peak']:.0f} MiB"  # nothing was allocated


def test_the_sweep_writes_nothing_beside_its_inputs_or_in_tmp(sweep):
    assert sweep["after"] == sweep["before"]  # not a file added, removed or touched
    assert list(sweep["tmp"].iterdir()) == []  # assets extracted there were removed
    # no ~/.keras/keras.json either: the only files in the home folder are gradcheck's own
    # authenticated result cache and its key (README "The result cache")
    written = {p.relative_to(sweep["home"]).parts[:2] for p in sweep["home"].rglob("*") if p.is_file()}
    assert written <= {(".cache", "gradcheck"), (".config", "gradcheck")}, written


def test_the_same_bombs_are_refused_without_real_weights(sweep_dir, tmp_path):
    names = ["lambda_args_bomb.keras", "loss_weights_bomb.keras", "node_kwargs_bomb.keras",
             "lambda_loss.keras", "repeat_vector.keras", "upsampling.keras", "training_bomb.h5",
             "devzero_vocab", "fifo_vocab"]
    run, _, peak = run_limited("-f", "json", "-q", "--", *names, GOOD, cwd=sweep_dir, tmp=tmp_path)
    models = {m["source"]: m for m in json.loads(run.stdout)["models"]}
    assert run.returncode == 3 and models[GOOD]["ok"]
    assert [models[name]["error"]["type"] for name in names] == [SWEEP[name][0] for name in names]
    assert peak < 2048


@pytest.mark.slow
def test_weights_keras_would_extract_beside_the_input_are_read_in_place(tmp_path):
    """680 MB of declared weights: Keras' own loader extracts them next to the input file."""
    folder, tmp = tmp_path / "in", tmp_path / "tmp"
    folder.mkdir()
    tmp.mkdir()
    crafted.sparse_big_weights(folder)
    before = snapshot(folder)
    run, stderr, peak = run_limited("-f", "json", "-q", "--real-weights", "declares_680mb.keras",
                                    cwd=folder, tmp=tmp)
    assert run.returncode == 0, stderr  # analyzed under the limit (the weights are all zeros)
    assert json.loads(run.stdout)["models"][0]["variables"]
    assert snapshot(folder) == before and list(tmp.iterdir()) == []


# --- workers never outlive their run -------------------------------------------------------------


def descendants(pid: int) -> set[int]:
    """Every process whose parent chain leads to ``pid`` (read from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def running(pids: set[int]) -> set[int]:
    """The ``pids`` still running (a zombie has ended)."""
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize(("sent", "code", "said"), [
    (signal.SIGTERM, 143, "gradcheck: terminated"), (signal.SIGINT, 130, "gradcheck: interrupted"),
    (signal.SIGKILL, -9, None)])
def test_no_process_of_the_run_outlives_a_signal_to_its_pid(tmp_path, sent, code, said):
    (tmp_path / "slow.py").write_text("import time\n\ndef build():\n    time.sleep(3600)\n")
    (tmp_path / "report.txt").write_text("an older report\n")
    (tmp_path / "report.json").write_text("{}\n")
    process = subprocess.Popen([sys.executable, "-m", "gradcheck", "slow.py:build", "-q",
                                "-o", "report.txt", "--report", "json=report.json"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "TMPDIR": str(tmp_path)})
    time.sleep(7)  # the worker imported TensorFlow and sleeps in the factory
    family = descendants(process.pid)
    assert family, "no worker was started"
    process.send_signal(sent)
    sent_at = time.monotonic()
    while running(family) and time.monotonic() - sent_at < 2:
        time.sleep(0.05)
    left = running(family)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes of the run still running 2 s after {sent.name}"
    out, err = process.communicate(timeout=10)  # every writer of its pipes has exited
    assert process.returncode == code
    assert b"Traceback" not in err and b"BrokenPipeError" not in err
    if said is not None:
        assert err.decode().splitlines()[-1] == said
        assert not (tmp_path / "report.txt").exists()  # no older report left looking current
        assert not (tmp_path / "report.json").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith("gradcheck-")]


def test_stale_scratch_folders_of_dead_runs_are_swept(tmp_path, monkeypatch):
    import tempfile

    from gradcheck import lifetime

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    old, young, alive = (tmp_path / f"gradcheck-{dead}-old", tmp_path / f"gradcheck-{dead}-new",
                         tmp_path / f"gradcheck-{os.getppid()}-live")
    for folder in (old, young, alive):
        (folder / "worker-x").mkdir(parents=True)
        os.utime(folder, (time.time() - 3600,) * 2 if folder is not young else None)
    lifetime.sweep_stale()
    assert not old.exists() and young.exists() and alive.exists()


def test_a_worker_whose_parent_dies_leaves_within_a_second_without_the_kernel(tmp_path):
    """The watch thread alone (as off Linux): its folder is removed and it exits."""
    folder = tmp_path / "worker"
    folder.mkdir()
    child = textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from gradcheck.lifetime import watch_parent
        watch_parent(os.getppid(), Path({str(folder)!r}), kernel=False)
        print(os.getpid(), flush=True)
        time.sleep(60)
    """)
    middle = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time\n"
                               f"subprocess.Popen([sys.executable, '-c', {child!r}])\n"
                               "time.sleep(60)\n"], stdout=subprocess.PIPE, text=True)
    worker = int(middle.stdout.readline())
    middle.send_signal(signal.SIGKILL)
    middle.wait()
    deadline = time.monotonic() + 1.5
    while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    gone = not Path(f"/proc/{worker}").exists() or "Z" in Path(f"/proc/{worker}/stat").read_text()
    if not gone:
        os.kill(worker, signal.SIGKILL)
    assert gone and not folder.exists()
