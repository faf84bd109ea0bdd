"""``gradcheck.keras.GradCheck``: the model's real training step, judged on the first batch of
``fit`` — compared with ``fit`` itself: a clean model trains bit-identically with and without the
callback, and a model with a detached head stops before any weight changes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def keras():
    from gradcheck.api import quiet_tensorflow

    quiet_tensorflow()
    import keras

    return keras


def _data(rows: int = 32):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(rows, 8)).astype("float32"),
            rng.normal(size=(rows, 1)).astype("float32"))


def _clean(keras, seed: int = 1):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8,), name="features")
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    hidden = keras.layers.Dropout(0.3)(hidden)  # the callback must not move the RNG fit uses
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(hidden), name="clean")
    model.compile(optimizer="adam", loss="mse")
    return model


def _two_heads(keras, seed: int = 1):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8,), name="state")
    torso = keras.layers.Dense(16, activation="tanh", name="torso")(inputs)
    value = keras.layers.Dense(1, name="value")(torso)
    aux = keras.layers.Dense(1, name="aux")(torso)
    model = keras.Model(inputs, {"value": value, "aux": aux}, name="two_heads")
    model.compile(optimizer="adam", loss={"value": "mse"})  # "aux" has no loss: never trained
    return model


def _weights(model):
    return [v.numpy().copy() for v in model.variables]


def _fit(keras, model, callbacks=(), **kwargs):
    x, y = _data()
    keras.utils.set_random_seed(5)
    targets = {"value": y} if model.name == "two_heads" else y
    return model.fit(x, targets, batch_size=8, epochs=2, shuffle=False, verbose=0,
                     callbacks=list(callbacks), **kwargs)


@pytest.mark.parametrize("steps_per_execution", [1, 3])
def test_a_clean_model_trains_bit_identically_with_the_callback(keras, steps_per_execution):
    from gradcheck.keras import GradCheck

    without, with_callback = _clean(keras), _clean(keras)
    for model in (without, with_callback):
        model.compile(optimizer="adam", loss="mse", steps_per_execution=steps_per_execution)
    callback = GradCheck()
    _fit(keras, without)
    history = _fit(keras, with_callback, [callback])
    assert len(history.history["loss"]) == 2
    for a, b in zip(_weights(without), _weights(with_callback)):
        assert np.array_equal(a, b)
    report = callback.report
    assert report is not None and not report.failures and not report.errors
    assert [v.path for v in report.models[0].variables] == [
        v.path for v in with_callback.trainable_variables]
    assert report.models[0].loss.value == "train_step"


def test_after_the_first_batch_keras_own_train_function_runs(keras):
    from gradcheck.keras import GradCheck

    model = _clean(keras)
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(self.model.train_function)

    _fit(keras, model, [GradCheck(), Spy()])
    assert seen and all(function is seen[0] for function in seen)
    assert seen[0].__name__ == "function"  # Keras' own, not the callback's first-batch wrapper


def test_a_detached_head_stops_fit_before_any_weight_changes(keras):
    from gradcheck.keras import GradCheck
    from gradcheck.testing import GradientCheckFailed

    model = _two_heads(keras)
    before = _weights(model)
    callback = GradCheck()
    with pytest.raises(GradientCheckFailed) as failed:
        _fit(keras, model, [callback])
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(model)))
    failing = {v.path for _, v in failed.value.report.failures}
    assert failing == {"aux/kernel", "aux/bias"}
    assert "aux/kernel" in str(failed.value)
    assert callback.report is failed.value.report


def test_warn_lets_training_go_on_and_allow_silences(keras):
    from gradcheck.keras import GradCheck, GradientCheckWarning

    model = _two_heads(keras)
    before = _weights(model)
    with pytest.warns(GradientCheckWarning, match="aux/kernel"):
        _fit(keras, model, [GradCheck(on_fail="warn")])
    assert not all(np.array_equal(a, b) for a, b in zip(before, _weights(model)))
    allowed = GradCheck(allow=["aux/*=an auxiliary head trained elsewhere"])
    _fit(keras, _two_heads(keras), [allowed])
    assert allowed.report.warnings and not allowed.report.failures


def test_a_custom_train_step_is_judged_on_the_real_batch(keras):
    """A trainer whose own train_step leaves a layer out of the optimizer's list."""
    import tensorflow as tf

    from gradcheck.keras import GradCheck
    from gradcheck.testing import GradientCheckFailed

    class PartialTrainer(keras.Model):
        def __init__(self):
            super().__init__()
            self.first = keras.layers.Dense(8, name="first")
            self.second = keras.layers.Dense(1, name="second")

        def call(self, x):
            return self.second(self.first(x))

        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(self(x) - y))
            weights = self.second.trainable_variables  # "first" is forgotten
            self.optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
            return {"loss": loss}

    keras.utils.set_random_seed(1)
    model = PartialTrainer()
    model.compile(optimizer="sgd")
    with pytest.raises(GradientCheckFailed) as failed:
        _fit(keras, model, [GradCheck()])
    causes = {v.path: v.cause.kind.value for _, v in failed.value.report.failures}
    assert causes == {"partial_trainer/first/kernel": "not-trained",
                      "partial_trainer/first/bias": "not-trained"}


def test_unknown_options_and_modes_are_refused(keras):
    from gradcheck.keras import GradCheck

    with pytest.raises(ValueError, match="on_fail"):
        GradCheck(on_fail="ignore")
    with pytest.raises(TypeError, match="batch"):
        GradCheck(batch=3)
