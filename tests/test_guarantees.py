"""What every run promises: inputs untouched, identical reports, a quiet terminal, small inputs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gradcheck.cli import app
from gradcheck.formats import Format
from gradcheck.report import ExitCode

pytest.importorskip("tensorflow")

REPO = Path(__file__).resolve().parents[1]
SAMPLES = ("clean.keras", "unused_weight.keras", "two_heads.keras", "clean_legacy.h5",
           "factories.py", "custom_layers.py")
#: What TensorFlow, absl and CUDA print on their own; none of it may reach the terminal.
NOISE = ("oneDNN", "onednn", "cuda", "CUDA", "absl", "WARNING: All log messages", "I0000",
         "W0000", "E0000", "tensorflow", "retracing", "cpu_feature_guard")

AUTO_NAMED = '''
import keras


def auto_named():
    """Layers named by Keras' counters (dense, dense_1 ...): names depend on the session."""
    features = keras.Input((6,))
    return keras.Model(features, keras.layers.Dense(2)(keras.layers.Dense(4)(features)))
'''

NOISY = '''
import keras

print("importing the noisy factories")  # must not end up in the JSON on stdout


def clean():
    print("building the model")
    features = keras.Input((4,), name="features")
    return keras.Model(features, keras.layers.Dense(2, name="head")(features), name="clean")


def raises():
    raise RuntimeError("cannot reach the feature store at db:5432")
'''


@pytest.fixture
def inputs(tmp_path, monkeypatch) -> Path:
    """The samples, copied: a .keras with a custom layer, a legacy .h5 and a factory file."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    for name in SAMPLES:
        shutil.copy2(REPO / "sample_models" / name, folder / name)
    (folder / "auto_named.py").write_text(textwrap.dedent(AUTO_NAMED))
    monkeypatch.chdir(tmp_path)  # no pyproject.toml to pick up
    return folder


def _sources(folder: Path) -> list[str]:
    return [str(folder / "clean.keras"), str(folder / "unused_weight.keras"),
            str(folder / "two_heads.keras"), str(folder / "clean_legacy.h5"),
            f"{folder / 'factories.py'}:actor_critic", f"{folder / 'auto_named.py'}:auto_named"]


def _fingerprint(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (new files, e.g. __pycache__, show up too)."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_inputs_are_never_written(inputs, tmp_path, capsys):
    before = _fingerprint(inputs)
    assert len(before) == len(SAMPLES) + 1
    out = tmp_path / "out"
    out.mkdir()
    custom = ["--custom-objects", str(inputs / "custom_layers.py")]
    sources = [str(inputs / "unused_weight.keras"), str(inputs / "clean_legacy.h5"),
               f"{inputs / 'factories.py'}:actor_critic"]
    for fmt in Format:
        code = app([*sources, *custom, "-f", fmt.value, "-o", str(out / f"report.{fmt.value}"),
                    "--write-baseline", str(out / f"baseline-{fmt.value}.json")],
                   standalone_mode=False)
        assert code == ExitCode.FINDINGS
    code = app([*sources, *custom, "--real-weights", "--graph", str(out / "graphs"),
                "--write-baseline", str(out / "baseline.json")], standalone_mode=False)
    assert code == ExitCode.FINDINGS
    capsys.readouterr()
    assert _fingerprint(inputs) == before
    assert (out / "baseline.json").is_file() and any((out / "graphs").iterdir())


def test_json_is_byte_identical_run_after_run(inputs, capsys):
    args = [*_sources(inputs), str(inputs / "missing.keras"), "--custom-objects",
            str(inputs / "custom_layers.py"), "-f", "json"]
    reports = []
    for _ in range(2):
        assert app(args, standalone_mode=False) == ExitCode.SOURCE_ERROR
        reports.append(capsys.readouterr().out.encode())
    assert reports[0] == reports[1]
    auto = json.loads(reports[0])["models"][5]
    # counters restart for each source: the names do not depend on the sources before it
    assert [v["path"] for v in auto["variables"]] == [
        "dense_1/kernel", "dense_1/bias", "dense/kernel", "dense/bias"]


def test_unknown_dims_and_batch_stay_small():
    from gradcheck.plans.inputs import InputSpec
    from gradcheck.plans.synthetic import concrete_shape

    assert concrete_shape(InputSpec("image", (None, None, 3), "float32"), 2) == (2, 32, 32, 3)
    assert concrete_shape(InputSpec("tokens", (None,), "int32"), 2) == (2, 8)
    assert concrete_shape(InputSpec("frames", (None, None), "float32"), 2) == (2, 8, 8)


def _gradcheck_command() -> list[str]:
    script = Path(sys.executable).with_name("gradcheck")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "gradcheck"]


def test_terminal_shows_no_tensorflow_noise_and_debug_shows_the_traceback(tmp_path):
    """One real process: TensorFlow is first imported inside the run, banners and all."""
    (tmp_path / "noisy.py").write_text(textwrap.dedent(NOISY))
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("TF_", "ABSL", "KERAS_", "CUDA"))}
    args = [*_gradcheck_command(), "noisy.py:clean", "noisy.py:raises", "-f", "json", "-q"]

    quiet = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
    assert quiet.returncode == ExitCode.SOURCE_ERROR
    # The factory's own prints reach stderr (the README's promise), TensorFlow's banners do not.
    # Each source imports its factory's module afresh (so the cache knows what each one read).
    assert quiet.stderr.splitlines() == [
        "importing the noisy factories", "building the model", "importing the noisy factories",
        "gradcheck: error: noisy.py:raises: the factory raised RuntimeError: cannot reach the "
        "feature store at db:5432"]
    for marker in NOISE:
        assert marker not in quiet.stderr
    report = json.loads(quiet.stdout)  # the factory's prints did not land on stdout
    assert report["models"][0]["ok"]

    debug = subprocess.run([*args, "--debug"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=120)
    assert debug.returncode == ExitCode.SOURCE_ERROR
    assert "Traceback (most recent call last)" in debug.stderr
    assert 'raise RuntimeError("cannot reach the feature store at db:5432")' in debug.stderr
    assert debug.stderr.rstrip().endswith("feature store at db:5432")
