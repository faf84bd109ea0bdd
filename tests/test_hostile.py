"""Hostile model files: they never run code, silence the gate, hang it or exhaust its memory.

Each case is a file an attacker could put in a pull request, run through the real command in a
subprocess next to a good source: the bad one gets one honest sentence and exit 3, the good one
is still analyzed, stdout holds only the report.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

REPO = Path(__file__).resolve().parents[1]
GOOD = f"{REPO / 'sample_models' / 'factories.py'}:clean_mlp"


def gradcheck(*args: str, cwd: Path, env: dict | None = None, timeout: float = 120,
              **kwargs) -> subprocess.CompletedProcess:
    """The installed entry point, as CI runs it."""
    command = [sys.executable, "-m", "gradcheck", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, **kwargs)


@pytest.fixture(scope="session")
def base_keras(tmp_path_factory) -> Path:
    """A tiny compiled model saved as .keras: the starting point of every crafted file."""
    from gradcheck.api import quiet_tensorflow

    quiet_tensorflow()
    import keras

    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(hidden), name="base")
    model.compile(loss="mse")
    path = tmp_path_factory.mktemp("base") / "base.keras"
    model.save(path)
    return path


def rewrite(base: Path, target: Path, edit=None, *, config: bytes | None = None,
            extra: dict[str, bytes] | None = None, compress: int = zipfile.ZIP_STORED) -> Path:
    """Copy a .keras archive, editing its config.json (a function of the parsed JSON)."""
    with zipfile.ZipFile(base) as source, zipfile.ZipFile(target, "w", compress) as out:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "config.json":
                data = config if config is not None else json.dumps(edit(json.loads(data))).encode()
            out.writestr(info.filename, data)
        for name, data in (extra or {}).items():
            out.writestr(name, data)
    return target


def _layer(config: dict, name: str) -> dict:
    return next(layer for layer in config["config"]["layers"] if layer["name"] == name)


# --- one run over every crafted file --------------------------------------------------------


def _module(module):
    return lambda c: (_layer(c, "head").update(module=module, class_name="Evil",
                                              registered_name="Evil"), c)[1]


def _units(units):
    return lambda c: (_layer(c, "head")["config"].update(units=units), c)[1]


def _tfsm(config):
    head = _layer(config, "head")
    head.update(module="keras.layers", class_name="TFSMLayer", registered_name=None)
    head["config"] = {"name": "head", "filepath": "/tmp/exported", "trainable": True}
    return config


def _encrypted(base: Path, target: Path) -> Path:
    """The archive with the 'encrypted' flag set in every header, as an encrypting tool does."""
    data = bytearray(rewrite(base, target, lambda c: c).read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature)
        while at != -1:
            data[at + offset] |= 0x1
            at = data.find(signature, at + 4)
    target.write_bytes(bytes(data))
    return target


def _sparse_weights(target: Path) -> Path:
    """A legacy .h5 model with a chunked dataset declared at 10**10 floats: a few KB on disk."""
    import h5py
    import keras

    features = keras.Input((4,), name="features")
    keras.Model(features, keras.layers.Dense(2, name="head")(features)).save(target)
    with h5py.File(target, "a") as handle:
        handle.create_dataset("model_weights/padding", shape=(10**10,), dtype="f4", chunks=(1024,))
    return target


#: crafted file name -> (error type, words its message must hold)
CASES = {
    "prmodule.keras": ("custom-object", "not registered"),
    "unittest_main.keras": ("custom-object", "not registered"),
    "this.keras": ("custom-object", "not registered"),
    "bomb.keras": ("zip-bomb", "decompression bomb"),
    "config_bomb.keras": ("too-large", "config.json"),
    "pipe.keras": ("not-a-file", "named pipe"),
    "dirmodel": ("corrupt", "config.json is not a regular file"),
    "dense_1e8.keras": ("too-large", "'head/kernel'"),
    "dense_2e9.keras": ("too-large", "'head/kernel'"),
    "huge_input.keras": ("too-large", "synthetic input 'features'"),
    "deep_json.keras": ("corrupt", "nested too deeply"),
    "encrypted.keras": ("corrupt", "encrypted"),
    "tfsm.keras": ("unsafe-content", "TFSMLayer"),
    "mismatch.keras": ("architecture-mismatch", "'head/kernel': rebuilt (4, 3), stored (4, 2)"),
    "dropped_layer.keras": ("architecture-mismatch", "variables"),
    "evil\x1b[2J\nfake.keras": ("corrupt", "\\x1b[2J\\nfake.keras"),
    "--config=evil.toml": ("option-like", "looks like an option"),
    "many_members.keras": ("too-large", "members"),
    "sparse_weights.h5": ("too-large", "declares 37.3 GiB of weights"),
}


@pytest.fixture(scope="session")
def hostile(base_keras, tmp_path_factory):
    """Every crafted file in one run (after --), with a good source, JSON to an odd -o name."""
    import keras

    folder = tmp_path_factory.mktemp("hostile")
    marker = folder / "imported.txt"
    (folder / "prmodule.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n"
                                        "import os\nos._exit(0)\n")
    rewrite(base_keras, folder / "prmodule.keras", _module("prmodule"))
    rewrite(base_keras, folder / "unittest_main.keras", _module("unittest.__main__"))
    rewrite(base_keras, folder / "this.keras", _module("this"))
    rewrite(base_keras, folder / "bomb.keras", lambda c: c, compress=zipfile.ZIP_DEFLATED,
            extra={"assets/padding.bin": bytes(200 * 2**20)})
    rewrite(base_keras, folder / "config_bomb.keras", config=b" " * (40 * 2**20) + b"{}",
            compress=zipfile.ZIP_DEFLATED)
    os.mkfifo(folder / "pipe.keras")
    (folder / "dirmodel").mkdir()
    (folder / "dirmodel" / "config.json").symlink_to("/dev/zero")
    rewrite(base_keras, folder / "dense_1e8.keras", _units(10**8))
    rewrite(base_keras, folder / "dense_2e9.keras", _units(2 * 10**9))
    sequence = keras.Input((None, 4), name="features")
    keras.Model(sequence, keras.layers.Dense(2, name="head")(sequence)).save(folder / "seq.keras")
    rewrite(folder / "seq.keras", folder / "huge_input.keras",
            lambda c: (_layer(c, "features")["config"].update(batch_shape=[None, 10**8, 4]), c)[1])
    rewrite(base_keras, folder / "deep_json.keras", config=b"[" * 100000 + b"]" * 100000)
    _encrypted(base_keras, folder / "encrypted.keras")
    rewrite(base_keras, folder / "tfsm.keras", _tfsm)
    rewrite(base_keras, folder / "mismatch.keras", _units(3))
    rewrite(base_keras, folder / "dropped_layer.keras",
            lambda c: (_layer(c, "head")["config"].update(use_bias=False), c)[1])
    (folder / "evil\x1b[2J\nfake.keras").write_bytes(b"not a zip")
    (folder / "--config=evil.toml").write_bytes(base_keras.read_bytes())
    rewrite(base_keras, folder / "many_members.keras", lambda c: c,
            extra={f"assets/{i}": b"" for i in range(12_000)})
    _sparse_weights(folder / "sparse_weights.h5")
    output = os.fsdecode(b"report-\xff.json")
    started = time.monotonic()
    run = gradcheck("-f", "json", "-q", "--max-memory", "1G", "-o", output, "--", *CASES, GOOD,
                    cwd=folder, env={"PYTHONPATH": str(folder)}, timeout=300)
    return {"run": run, "seconds": time.monotonic() - started, "marker": marker,
            "report": json.loads((folder / output).read_text(errors="surrogateescape"))}


@pytest.mark.parametrize("name", list(CASES), ids=[n.encode("unicode_escape").decode()
                                                   for n in CASES])
def test_each_hostile_file_gets_one_honest_sentence(hostile, name):
    kind, words = CASES[name]
    models = {m["source"]: m for m in hostile["report"]["models"]}
    error = models[name]["error"]
    assert error["type"] == kind, error
    assert words in error["message"], error["message"]
    assert "\x1b" not in error["message"] and "\n" not in error["message"]


def test_the_hostile_run_still_analyzes_the_good_source_and_fails(hostile):
    run, report = hostile["run"], hostile["report"]
    assert run.returncode == 3
    assert run.stdout == b""  # the report went to the -o file, nothing else to stdout
    good = next(m for m in report["models"] if m["source"] == GOOD)
    assert good["ok"] and len(good["variables"]) == 4
    errors = [line for line in run.stderr.splitlines() if line.startswith(b"gradcheck: error")]
    assert len(errors) == len(CASES)  # one line each
    assert b"\x1b" not in run.stderr and b"Traceback" not in run.stderr
    assert not hostile["marker"].exists()  # no module named by a file was imported
    assert hostile["seconds"] < 120  # refused up front, not after inflating or allocating


def test_real_weights_that_declare_more_than_the_budget_are_refused_unread(base_keras, tmp_path):
    import h5py

    bad = tmp_path / "sparse.keras"
    with zipfile.ZipFile(base_keras) as source:
        weights = tmp_path / "model.weights.h5"
        weights.write_bytes(source.read("model.weights.h5"))
    with h5py.File(weights, "a") as handle:
        handle.create_dataset("padding", shape=(10**10,), dtype="f4", chunks=(1024,))
    rewrite(base_keras, bad, lambda c: c)
    with zipfile.ZipFile(bad, "a") as archive:  # a second member of that name is the one read
        archive.writestr("model.weights.h5", weights.read_bytes())
    run = gradcheck("-f", "json", "-q", "--real-weights", "--", bad.name, GOOD, cwd=tmp_path)
    assert run.returncode == 3
    models = {m["source"]: m for m in json.loads(run.stdout)["models"]}
    assert models[bad.name]["error"]["type"] == "too-large", models[bad.name]["error"]
    assert models[GOOD]["ok"]


# --- options a pull request must not set ----------------------------------------------------


def test_unsafe_cannot_come_from_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.gradcheck]\nunsafe = true\n")
    run = gradcheck(GOOD, "-q", cwd=tmp_path)
    assert run.returncode == 2
    assert b"--unsafe on the command line" in run.stderr


def test_a_file_named_like_an_option_cannot_set_options(base_keras, tmp_path):
    (tmp_path / "evil.toml").write_text("[tool.gradcheck]\nfail-on = []\n")
    (tmp_path / "--config=evil.toml").write_bytes(base_keras.read_bytes())
    run = gradcheck(GOOD, "--config=evil.toml", "-q", cwd=tmp_path)  # a file list without --
    assert run.returncode == 2
    assert b"put -- before file names" in run.stderr


# --- code that ends, hangs or prints ---------------------------------------------------------


FACTORIES = {
    "exits": "raise SystemExit(0)",
    "hard_exit": "import os; os._exit(0)",
    "interrupts": "raise KeyboardInterrupt",
    "fakes_a_report": "import sys; sys.stdout.write('{\"models\": []}\\n'); raise SystemExit(0)",
    "sleeps": "import time; time.sleep(3600)",
}


@pytest.fixture(scope="session")
def factories_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("factories")
    body = "".join(f"def {name}():\n    {code}\n\n\n" for name, code in FACTORIES.items())
    (folder / "factory.py").write_text(body + textwrap.dedent('''
        import keras

        class Loud(keras.layers.Layer):
            def call(self, x):
                print("inside call()")
                return x * 2.0

        def prints():
            print("factory speaking")
            inputs = keras.Input((3,))
            return keras.Model(inputs, keras.layers.Dense(2)(Loud()(inputs)))
    '''))
    # the hang gets a short --timeout; the rest a long one, so that a loaded machine (TensorFlow
    # starting slowly in each fresh worker) cannot turn their verdicts into timeouts
    sources = [f"factory.py:{name}" for name in FACTORIES if name != "sleeps"]
    run = gradcheck("-f", "json", "-q", "--timeout", "300", *sources, "factory.py:prints", GOOD,
                    cwd=folder)
    hang = gradcheck("-f", "json", "-q", "--timeout", "5", "factory.py:sleeps", cwd=folder)
    models = {m["source"]: m for m in json.loads(run.stdout)["models"]}
    models.update({m["source"]: m for m in json.loads(hang.stdout)["models"]})
    return run, models, hang


@pytest.mark.parametrize(("name", "kind"), [
    ("exits", "factory-failed"), ("hard_exit", "crashed"), ("interrupts", "interrupted"),
    ("fakes_a_report", "factory-failed"), ("sleeps", "timeout")])
def test_code_that_ends_or_hangs_the_process_is_that_sources_error(factories_run, name, kind):
    run, models, hang = factories_run
    assert run.returncode == 3 and hang.returncode == 3
    assert models[f"factory.py:{name}"]["error"]["type"] == kind
    assert models[GOOD]["ok"] and models["factory.py:prints"]["ok"]


def test_prints_from_a_factory_and_a_layer_call_go_to_stderr(factories_run):
    run, _, _ = factories_run
    assert b"inside call()" in run.stderr and b"factory speaking" in run.stderr
    assert b'{"models": []}' not in run.stdout and b'{"models": []}' in run.stderr
    assert json.loads(run.stdout)["models"]


# --- in process -------------------------------------------------------------------------------


def test_a_deep_sequential_is_built_once_per_load(tmp_path):
    """Keras' Sequential.from_config rebuilds the stack after every layer (n² calls)."""
    import keras
    from keras.src.models.sequential import Sequential

    from gradcheck.load import load_source

    model = keras.Sequential([keras.Input((2,))] + [keras.layers.Dense(2) for _ in range(60)])
    model.save(tmp_path / "deep.keras")
    builds = []
    original = Sequential.build
    Sequential.build = lambda self, *a, **k: (builds.append(1), original(self, *a, **k))[1]
    try:
        loaded = load_source(str(tmp_path / "deep.keras"), custom_objects={}, safe_mode=True,
                             weights=False)
    finally:
        Sequential.build = original
    assert len(loaded.trainable_variables) == 120
    assert len(builds) <= 2


def test_out_of_memory_is_named_as_such():
    from gradcheck.load import translate_load_error

    problem = translate_load_error("m.keras", MemoryError())
    assert problem.kind == "out-of-memory" and "compatible Keras version" not in problem.message


# --- signals and files written -----------------------------------------------------------------


def test_sigint_stops_the_run_and_leaves_no_half_report(tmp_path):
    (tmp_path / "slow.py").write_text("import time\n\ndef build():\n    time.sleep(3600)\n")
    process = subprocess.Popen([sys.executable, "-m", "gradcheck", "slow.py:build", "-q",
                                "-o", "report.txt"], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    time.sleep(6)  # TensorFlow importing or the factory sleeping: either way mid-run
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err.decode().splitlines()[-1] == "gradcheck: interrupted"
    assert not list(tmp_path.glob("*report*"))


def test_graph_files_are_identical_whatever_the_hash_seed(tmp_path):
    outputs = []
    for seed in ("1", "2"):
        folder = tmp_path / f"graphs{seed}"
        run = gradcheck(str(REPO / "sample_models" / "two_heads.keras"), "-q", "--graph",
                        str(folder), cwd=tmp_path, env={"PYTHONHASHSEED": seed})
        assert run.returncode == 1, run.stderr
        outputs.append({p.name: p.read_bytes() for p in sorted(folder.iterdir())})
    assert outputs[0] == outputs[1] and any("unconnected" in n for n in outputs[0])
