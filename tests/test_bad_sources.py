"""Sources gradcheck cannot analyze: one clear line on stderr, an error entry, exit 3, no traceback.

Each case runs the CLI in-process with the bad source *and* a good one, and checks that the good
one is still analyzed.  The bad files are built once per session, from one tiny model.
"""

from __future__ import annotations

import json
import textwrap
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from gradcheck.cli import app
from gradcheck.report import ExitCode

pytest.importorskip("tensorflow")

REPO = Path(__file__).resolve().parents[1]
GOOD = f"{REPO / 'sample_models' / 'factories.py'}:clean_mlp"

FACTORIES = '''
import keras


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="subclassed")
        self.dense = keras.layers.Dense(3, name="dense")

    def call(self, x):
        return self.dense(x)


def raises():
    raise RuntimeError("cannot reach the feature store at db:5432")


def returns_dict():
    return {"model": None}


def unbuilt():
    return Subclassed()


def reshape_mismatch():
    seq = keras.Input((None, 5), name="seq")  # 8 steps x 5 = 40 values, not a multiple of 7
    flat = keras.layers.Reshape((7,), name="reshape")(seq)
    return keras.Model(seq, keras.layers.Dense(2, name="head")(flat), name="reshape_mismatch")


def frozen():
    features = keras.Input((4,), name="features")
    model = keras.Model(features, keras.layers.Dense(2, name="head")(features), name="frozen")
    model.trainable = False
    return model
'''

LOSSES = '''
import keras


def per_row(model, inputs, outputs):
    return keras.ops.mean(keras.ops.square(outputs), axis=-1)  # forgot the batch reduction


def argmax(model, inputs, outputs):
    return keras.ops.argmax(keras.ops.mean(outputs, axis=0))
'''

MYSTERY = '''
import keras


class Mystery(keras.layers.Layer):
    """Never registered with keras.saving.register_keras_serializable."""

    def call(self, x):
        return x * 2.0
'''


@pytest.fixture(scope="session")
def bad_dir(tmp_path_factory) -> Path:
    """Every bad file of the issue, plus the tiny good model they are cut from."""
    from gradcheck.api import quiet_tensorflow

    quiet_tensorflow()
    import keras

    root = tmp_path_factory.mktemp("bad_sources")
    (root / "factories.py").write_text(textwrap.dedent(FACTORIES))
    (root / "losses.py").write_text(textwrap.dedent(LOSSES))
    (root / "mystery_layers.py").write_text(textwrap.dedent(MYSTERY))
    (root / "a_directory").mkdir()
    (root / "empty.keras").write_bytes(b"")
    noise = bytes((i * 197 + 89) % 256 for i in range(4096))  # no zip or HDF5 signature
    (root / "noise.keras").write_bytes(noise)
    (root / "noise.h5").write_bytes(noise)

    def tiny(*middle):
        features = keras.Input((4,), name="features")
        x = keras.layers.Dense(3, name="dense")(features)
        for layer in middle:
            x = layer(x)
        return keras.Model(features, x, name="tiny")

    tiny().save(root / "tiny.keras")
    tiny().save_weights(root / "tiny.weights.h5")
    tiny(keras.layers.Lambda(lambda t: t * 2.0, name="doubler")).save(root / "lambda.keras")
    tiny(keras.layers.Lambda(lambda t: t * 2.0, name="doubler")).save(root / "lambda.h5")
    spec = {}
    exec(compile(textwrap.dedent(MYSTERY), "mystery_layers.py", "exec"), spec)
    tiny(spec["Mystery"](name="mystery")).save(root / "mystery.keras")
    _cut_archives(root)
    return root


def _cut_archives(root: Path) -> None:
    """Damaged copies of tiny.keras: cut mid-weights, weights cut inside, bad or no config."""
    data = (root / "tiny.keras").read_bytes()
    with zipfile.ZipFile(root / "tiny.keras") as archive:
        entries = {info.filename: (info, archive.read(info)) for info in archive.infolist()}
    weights_at = entries["model.weights.h5"][0].header_offset
    (root / "truncated.keras").write_bytes(data[:weights_at + 300])  # config.json intact
    flipped = bytearray(data)  # a bad copy: one byte of the stored weights changed
    info = entries["model.weights.h5"][0]
    flipped[info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2] ^= 0xFF
    (root / "bitflip.keras").write_bytes(bytes(flipped))

    def rewrite(name: str, change) -> None:
        with zipfile.ZipFile(root / name, "w") as archive:
            for filename, (info, payload) in entries.items():
                payload = change(filename, payload)
                if payload is not None:
                    archive.writestr(info, payload)

    rewrite("weights_cut.keras",
            lambda name, payload: payload[:len(payload) // 2] if name.endswith(".h5") else payload)
    rewrite("no_config.keras", lambda name, payload: None if name == "config.json" else payload)
    rewrite("bad_json.keras",
            lambda name, payload: payload[:-40] if name == "config.json" else payload)
    rewrite("newer_keras.keras",  # as if saved by a Keras with a layer this one lacks
            lambda name, payload: payload.replace(b'"Dense"', b'"DenseV9"')
            if name == "config.json" else payload)


@pytest.fixture
def in_bad_dir(bad_dir, monkeypatch) -> Path:
    monkeypatch.chdir(bad_dir)  # relative source names, and no pyproject.toml to pick up
    return bad_dir


@dataclass
class Run:
    """One in-process ``gradcheck ... -f json`` run."""

    code: int
    models: dict[str, dict]  #: report entries by source
    stderr: list[str]


def gradcheck(capsys, *args: str) -> Run:
    code = app([*args, "-f", "json", "-q"], standalone_mode=False)
    out, err = capsys.readouterr()
    report = json.loads(out)
    return Run(code, {model["source"]: model for model in report["models"]}, err.splitlines())


def assert_refused(run: Run, bad: list[str], kind: str, *fragments: str) -> str:
    """Exit 3; each bad source an error of ``kind``, one stderr line each; GOOD analyzed."""
    assert run.code == ExitCode.SOURCE_ERROR
    errors = [run.models[source]["error"] for source in bad]
    assert [error["type"] for error in errors] == [kind] * len(bad), errors
    assert run.stderr == [f"gradcheck: error: {error['message']}" for error in errors]
    good = run.models[GOOD]
    assert good["ok"] and good["error"] is None
    assert {v["path"] for v in good["variables"]} == {
        "hidden/kernel", "hidden/bias", "probs/kernel", "probs/bias"}
    message = errors[0]["message"]
    assert message.startswith(bad[0])
    for fragment in fragments:
        assert fragment in message
    assert "Traceback" not in message and "\x1b" not in message and "\n" not in message
    return message


# --- files ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "flags", "kind", "fragments"), [
    pytest.param("no_such_model.keras", (), "missing", ("no such file",), id="missing-path"),
    pytest.param("a_directory", (), "not-a-file", ("is a directory",), id="directory"),
    pytest.param("empty.keras", (), "empty", ("empty file", "0 bytes"), id="empty-file"),
    pytest.param("noise.keras", (), "corrupt", ("not a Keras model file",),
                 id="random-bytes-keras"),
    pytest.param("noise.h5", (), "corrupt", ("not a valid HDF5 file",), id="random-bytes-h5"),
    pytest.param("truncated.keras", (), "truncated", ("is truncated", "re-download"),
                 id="truncated-keras"),
    pytest.param("truncated.keras", ("--real-weights",), "truncated", ("is truncated",),
                 id="truncated-keras-real-weights"),
    pytest.param("weights_cut.keras", (), "corrupt", ("model.weights.h5", "truncated"),
                 id="weights-cut-inside-keras"),
    pytest.param("weights_cut.keras", ("--real-weights",), "corrupt",
                 ("model.weights.h5", "truncated"), id="weights-cut-inside-keras-real-weights"),
    pytest.param("bitflip.keras", ("--real-weights",), "corrupt", ("fails its checksum",),
                 id="weights-checksum-real-weights"),
    pytest.param("no_config.keras", (), "corrupt", ("without config.json",), id="zip-no-config"),
    pytest.param("bad_json.keras", (), "corrupt", ("invalid config.json",), id="config-not-json"),
    pytest.param("tiny.weights.h5", (), "weights-only", ("weights but no model",),
                 id="h5-weights-only"),
    pytest.param("newer_keras.keras", (), "keras-version", ("'DenseV9'", "another version"),
                 id="class-missing-from-this-keras"),
    pytest.param("factories.py", (), "unsupported", ("factories.py:function",),
                 id="python-file-without-function"),
])
def test_bad_file(capsys, in_bad_dir, source, flags, kind, fragments):
    message = assert_refused(gradcheck(capsys, source, GOOD, *flags), [source], kind, *fragments)
    if kind != "missing":
        assert "no such file" not in message and "not found" not in message


def test_unregistered_class_names_it_and_points_to_custom_objects(capsys, in_bad_dir):
    message = assert_refused(gradcheck(capsys, "mystery.keras", GOOD), ["mystery.keras"],
                             "custom-object", "'Mystery'", "--custom-objects")
    assert "not registered" in message
    fixed = gradcheck(capsys, "mystery.keras", "--custom-objects", "mystery_layers.py")
    assert fixed.code == ExitCode.OK and fixed.models["mystery.keras"]["ok"]


@pytest.mark.parametrize(("source", "flags"), [
    ("lambda.keras", ()), ("lambda.keras", ("--real-weights",)), ("lambda.h5", ())])
def test_lambda_is_refused_in_safe_mode(capsys, in_bad_dir, source, flags):
    assert_refused(gradcheck(capsys, source, GOOD, *flags), [source], "unsafe-lambda",
                   "'doubler'", "arbitrary code", "--unsafe")


def test_lambda_loads_with_unsafe(capsys, in_bad_dir):
    run = gradcheck(capsys, "lambda.keras", "--unsafe")
    assert run.code == ExitCode.OK and run.models["lambda.keras"]["ok"]


# --- factories --------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "kind", "fragments"), [
    pytest.param("nowhere/factories.py:build", "missing", ("factory file", "does not exist"),
                 id="factory-file-missing"),
    pytest.param("no_such_package.models:build", "missing", ("no_such_package", "installed"),
                 id="factory-module-missing"),
    pytest.param("factories.py:unbuit", "missing",
                 ("no function 'unbuit'", "did you mean 'unbuilt'"), id="factory-function-missing"),
    pytest.param("factories.py:raises", "factory-failed",
                 ("RuntimeError: cannot reach the feature store at db:5432",), id="factory-raises"),
    pytest.param("factories.py:returns_dict", "not-a-model", ("returned a dict", "keras.Model"),
                 id="factory-returns-non-model"),
])
def test_bad_factory(capsys, in_bad_dir, source, kind, fragments):
    assert_refused(gradcheck(capsys, source, GOOD), [source], kind, *fragments)


def test_unbuilt_subclassed_model_points_to_input(capsys, in_bad_dir):
    source = "factories.py:unbuilt"
    assert_refused(gradcheck(capsys, source, GOOD), [source], "no-signature",
                   "never built", "--input")
    fixed = gradcheck(capsys, source, "--input", "x=4")
    assert fixed.code == ExitCode.OK
    assert [v["path"] for v in fixed.models[source]["variables"]] == [
        "subclassed/dense/kernel", "subclassed/dense/bias"]


def test_forward_pass_failure_names_the_layer_and_keras_reason(capsys, in_bad_dir):
    source = "factories.py:reshape_mismatch"
    assert_refused(gradcheck(capsys, source, GOOD), [source], "forward-failed",
                   "(2, 8, 5) float32", "in Reshape", "total size of the tensor", "--input")


# --- losses -----------------------------------------------------------------------------------
# --loss applies to every source, so here the second source fails too, each on its own entry.


@pytest.mark.parametrize(("loss", "fragments"), [
    pytest.param("losses.py:per_row", ("shape (2,)", "scalar"), id="loss-not-scalar"),
    pytest.param("losses.py:argmax", ("tensor of dtype int32", "float scalar"),
                 id="loss-not-float"),
])
def test_bad_loss(capsys, in_bad_dir, loss, fragments):
    run = gradcheck(capsys, "tiny.keras", "factories.py:reshape_mismatch", "--loss", loss)
    assert run.code == ExitCode.SOURCE_ERROR
    errors = [model["error"] for model in run.models.values()]
    assert [error["type"] for error in errors] == ["bad-loss", "forward-failed"]
    assert run.stderr == [f"gradcheck: error: {error['message']}" for error in errors]
    for fragment in (f"--loss {loss}", *fragments):
        assert fragment in errors[0]["message"]


# --- not an error -----------------------------------------------------------------------------


def test_no_trainable_variables_is_said_and_passes(capsys, in_bad_dir):
    source = "factories.py:frozen"
    run = gradcheck(capsys, source, GOOD)
    assert run.code == ExitCode.OK and run.stderr == []
    frozen = run.models[source]
    assert frozen["ok"] and frozen["variables"] == []
    assert any("no trainable variables" in note for note in frozen["notes"])
    assert app([source], standalone_mode=False) == ExitCode.OK
    assert "no trainable variables" in capsys.readouterr().out


def test_every_source_is_reported_in_order(capsys, in_bad_dir):
    sources = ["empty.keras", GOOD, "noise.h5", "factories.py:raises", "tiny.keras"]
    run = gradcheck(capsys, *sources)
    assert list(run.models) == sources
    assert [m["ok"] for m in run.models.values()] == [False, True, False, False, True]
    assert len(run.stderr) == 3


def test_messages_stay_on_one_line_and_quote_only_what_matters():
    from gradcheck.problems import ErrorKind, SourceProblem, describe_exception

    # A line break (a file name may hold one) is shown, escaped, never printed.
    assert SourceProblem(ErrorKind.CORRUPT, "first\n  second\x1b[2J").message == "first\\n second\\x1b[2J"
    wrapped = ValueError("Exception encountered when calling Dense.call().\n\n\x1b[1mInput 0 is "
                         "incompatible\x1b[0m\n\nArguments received by Dense.call():\n  • x=...")
    assert describe_exception(wrapped) == "ValueError in Dense: Input 0 is incompatible"
    traced = ValueError("Dimension size must be evenly divisible by 3 but is 16 for '{{node "
                        "r/Reshape}} = Reshape[T=DT_FLOAT](x, shape)' with input shapes: [2,8], "
                        "[2] and with input tensors computed as partial shapes: input[1] = [?,3].")
    assert describe_exception(traced) == ("ValueError: Dimension size must be evenly divisible by "
                                          "3 but is 16 with input shapes: [2,8], [2]")
    assert describe_exception(KeyError()) == "KeyError"



def test_every_error_kind_is_documented_and_only_members_are_accepted():
    """The error types are a public contract: each one is in the README's list, and a
    ``SourceProblem`` cannot be raised with a kind that is not a member."""
    import re
    from pathlib import Path

    import pytest

    from gradcheck.problems import ErrorKind, SourceProblem

    readme = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    listed = set(re.findall(r"`([a-z]+(?:-[a-z]+)*)`", readme.split("Error types:", 1)[1]
                            .split("--debug", 1)[0]))
    assert {kind.value for kind in ErrorKind} <= listed
    with pytest.raises(ValueError):
        SourceProblem("not-a-kind", "message")
