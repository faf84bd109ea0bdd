"""Library use: ``gradcheck.check`` and ``gradcheck.testing.assert_connected`` on in-memory models."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import gradcheck
from gradcheck.formats import Format, render
from gradcheck.report import CauseKind, Report, Status
from gradcheck.testing import GradientCheckFailed, assert_connected

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\033\[[0-9;]*m")

pytest.importorskip("tensorflow")


@pytest.fixture(scope="session")
def models():
    """Small in-memory models, one per way a variable can (or cannot) learn."""
    from gradcheck.api import quiet_tensorflow

    quiet_tensorflow()
    import keras

    class GatedDense(keras.layers.Layer):
        """Creates a gate weight and never reads it."""

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], 4), name="kernel")
            self.gate = self.add_weight(shape=(4,), initializer="ones", name="gate")

        def call(self, x):
            return x @ self.kernel

    def features():
        return keras.Input((8,), name="features")

    x = features()
    clean = keras.Model(x, keras.layers.Dense(3, name="head")(
        keras.layers.Dense(16, activation="tanh", name="torso")(x)), name="clean")

    x = features()
    hidden = keras.layers.Dense(16, activation="tanh", name="torso")(x)
    two_heads = keras.Model(x, {"actor": keras.layers.Dense(4, activation="softmax", name="actor")(hidden),
                                "critic": keras.layers.Dense(1, name="critic")(hidden)},
                            name="actor_critic")
    two_heads.compile(loss={"actor": "categorical_crossentropy", "critic": None})

    x = features()
    frozen = keras.ops.stop_gradient(keras.layers.Dense(16, name="encoder")(x))
    frozen_encoder = keras.Model(x, keras.layers.Dense(2, name="head")(frozen), name="frozen")

    x = features()
    unused = keras.Model(x, GatedDense(name="gated")(x), name="unused")
    return {"clean": clean, "two_heads": two_heads, "frozen_encoder": frozen_encoder,
            "unused_weight": unused}


def by_path(report: Report) -> dict:
    return {v.path: v for m in report.models for v in m.variables}


# --- import stays light --------------------------------------------------------------------------


def test_import_gradcheck_and_its_library_names_do_not_import_tensorflow():
    code = ("import sys, gradcheck; gradcheck.check; gradcheck.testing.assert_connected; "
            "gradcheck.Report; assert 'check' in dir(gradcheck); "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_public_name_resolves():
    for name in gradcheck.__all__:
        assert getattr(gradcheck, name) is not None, name


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'chekc'"):
        gradcheck.chekc  # noqa: B018


def test_lazy_check_is_the_api_function():
    from gradcheck.api import check

    assert gradcheck.check is check


# --- assert_connected ------------------------------------------------------------------------------


def test_clean_model_passes_and_returns_the_report(models):
    report = assert_connected(models["clean"])
    assert isinstance(report, Report)
    assert {v.status for v in by_path(report).values()} == {Status.CONNECTED}
    assert len(by_path(report)) == 4


def test_detached_head_fails_with_the_cli_text_naming_variable_and_cause(models):
    with pytest.raises(AssertionError) as info:
        assert_connected(models["two_heads"])
    failure = info.value
    assert isinstance(failure, GradientCheckFailed)
    message = str(failure)
    assert message == render(failure.report, Format.TEXT, color=False).rstrip("\n")
    assert not ANSI.search(message)
    assert "critic/kernel" in message and "critic/bias" in message
    assert "detached" in message and "output 'critic'" in message
    assert "2 failing" in message
    critic = by_path(failure.report)["critic/kernel"]
    assert critic.cause.kind is CauseKind.DETACHED and failure.report.failing(critic)


def test_allow_glob_makes_the_detached_head_pass(models):
    report = assert_connected(models["two_heads"], allow=["critic/*=value head trained elsewhere"])
    critic = by_path(report)["critic/bias"]
    assert critic.status is Status.UNCONNECTED and critic.allowed == "value head trained elsewhere"
    assert report.failures == [] and len(report.warnings) == 2


def test_fail_on_is_a_comma_separated_string_or_a_list(models):
    with pytest.raises(GradientCheckFailed, match="gated/gate"):
        assert_connected(models["unused_weight"], fail_on="zero, unconnected")
    report = assert_connected(models["unused_weight"], fail_on=[Status.ZERO])
    assert report.fail_on == {Status.ZERO} and len(report.warnings) == 1


def test_a_source_that_cannot_be_analyzed_fails_the_assertion(tmp_path):
    with pytest.raises(GradientCheckFailed, match="error") as info:
        assert_connected(str(tmp_path / "missing.keras"))
    assert info.value.report.errors and not info.value.report.failures


# --- check -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["clean", "two_heads", "frozen_encoder", "unused_weight"])
def test_verdicts_match_an_eager_tape(models, name):
    model = models[name]
    report = gradcheck.check(model)
    tape_none = eager_none(model)
    assert {path: v.none for path, v in by_path(report).items()} == tape_none
    assert {path: v.status is Status.UNCONNECTED for path, v in by_path(report).items()} == tape_none


def eager_none(model) -> dict[str, bool]:
    """Which variables an eager ``tape.gradient`` gives None: the compiled loss when there is
    one, else a random projection of every output plus ``model.losses`` (no tf.function)."""
    import keras
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 8)).astype("float32")
    variables = [v.value for v in model.trainable_variables]
    with tf.GradientTape() as tape:
        outputs = model(x, training=True)
        if model.compiled:
            y = keras.tree.map_structure(lambda o: tf.ones_like(o) / o.shape[-1], outputs)
            loss = model.compute_loss(x=x, y=y, y_pred=outputs)
        else:
            loss = tf.add_n([tf.reduce_sum(o * rng.normal(size=o.shape).astype("float32"))
                             for o in keras.tree.flatten(outputs)] + list(model.losses))
    grads = tape.gradient(loss, variables)
    return {v.path: g is None for v, g in zip(model.trainable_variables, grads)}


def test_check_takes_a_source_path_and_a_list(tmp_path):
    two_heads = ROOT / "sample_models" / "two_heads.keras"
    single = gradcheck.check(two_heads)
    assert [m.source for m in single.models] == [str(two_heads)]
    assert {v.path for _, v in single.failures} == {"critic/kernel", "critic/bias"}
    both = gradcheck.check([str(two_heads), str(tmp_path / "missing.keras")])
    assert len(both.models) == 2 and len(both.errors) == 1


def test_check_rejects_an_unknown_option_by_name(models):
    with pytest.raises(TypeError, match="'batchsize'"):
        gradcheck.check(models["clean"], batchsize=4)
