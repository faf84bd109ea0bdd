"""Models written the way people write them, each with a weight ``fit`` never trains for a reason
the tape cannot see: a value that leaves TensorFlow, a forward pass before the tape, a variable
Keras does not track, a flag that is off, a model built with ``build(shape)`` or by a call.

Every factory returns a compiled model ready for ``fit``; ``BATCH`` is the batch ``fit`` gets.
The lines gradcheck must name carry ``# marker: <name>``.
"""

import keras
import numpy as np
import tensorflow as tf

FEATURES = 6


def batch():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(4, FEATURES)).astype("float32"),
            rng.normal(size=(4, 1)).astype("float32"))


class Encoder(keras.Model):
    """A researcher's subclassed model: an encoder, a head, an auxiliary head and a flag."""

    def __init__(self, use_shift=False, leave=None, **kwargs):
        super().__init__(**kwargs)
        self.encoder = keras.layers.Dense(8, activation="tanh", name="encoder")
        self.aux = keras.layers.Dense(2, name="aux")
        self.head = keras.layers.Dense(1, name="head")
        self.use_shift = use_shift
        self.leave = leave

    def call(self, x):
        h = self.encoder(x)
        self.aux(h)  # computed and dropped: the auxiliary head has no loss
        if self.leave == "numpy":
            h = tf.constant(h.numpy())  # marker: to-numpy
        elif self.leave == "float":
            h = h * float(tf.reduce_mean(h))  # marker: float
        elif self.leave == "asarray":
            h = tf.convert_to_tensor(np.asarray(h) * 2.0)  # marker: asarray
        elif self.leave == "numpy_function":
            h = tf.numpy_function(lambda a: np.tanh(a), [h], tf.float32)  # marker: numpy_function
            h = tf.reshape(h, (-1, 8))
        return self.head(tf.stop_gradient(h) if self.leave == "stop" else h)  # marker: stop


def built_by_shape():
    """``model.build((None, F))``: Keras marks it built and creates no weights."""
    model = Encoder(leave="stop", name="built_by_shape")
    model.build((None, FEATURES))
    model.compile(optimizer="sgd", loss="mse")
    return model


def left(how: str):
    def factory():
        model = Encoder(leave=how, name=f"left_{how}")
        model(batch()[0])
        model.compile(optimizer="sgd", loss="mse", run_eagerly=how != "numpy_function")
        return model

    factory.__name__ = f"left_{how}"
    return factory


class Untraceable(keras.Model):
    """A call() Keras cannot trace symbolically (a Python ``if`` on a value): built by a call."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.body = keras.layers.Dense(4, name="body")
        self.head = keras.layers.Dense(1, name="head")

    def call(self, x):
        h = self.body(x)
        if float(tf.reduce_max(tf.abs(x))) > 1e6:
            h = h * 0.0
        return self.head(tf.stop_gradient(h))  # marker: untraceable


def built_by_call():
    model = Untraceable(name="built_by_call")
    model(batch()[0])
    model.compile(optimizer="sgd", loss="mse", run_eagerly=True)
    return model


class Scale(tf.Module):
    def __init__(self, size):
        super().__init__()
        self.gain = tf.Variable(tf.ones((size,)), name="gain")

    def __call__(self, x):
        return x * self.gain  # marker: module-read


class Migrated(keras.layers.Layer):
    """A Keras 2 layer moved to Keras 3: a tf.Module and a raw tf.Variable, never tracked."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.scale = Scale(units)
        self.offset = tf.Variable(tf.zeros((units,)), name="offset")

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")

    def call(self, x):  # marker: migrated-call
        return self.scale(tf.matmul(x, self.kernel)) + self.offset.value()  # marker: untracked


def untracked():
    """Built with ``tf.keras`` (the alias of Keras 3 in TensorFlow 2.16+)."""
    inputs = tf.keras.Input((FEATURES,), name="features")
    hidden = Migrated(4, name="migrated")(inputs)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(1, name="head")(hidden), name="untracked")
    model.compile(optimizer="sgd", loss="mse")
    return model


class Block(keras.layers.Layer):
    """A residual block whose shortcut projection and bias are switched by flags."""

    def __init__(self, use_residual=False, use_bias=False, **kwargs):
        super().__init__(**kwargs)
        self.use_residual = use_residual
        self.use_bias = use_bias
        self.proj = keras.layers.Dense(4, name="proj")
        self.shortcut = keras.layers.Dense(4, name="shortcut")

    def build(self, input_shape):
        self.proj.build(input_shape)
        self.shortcut.build(input_shape)
        self.bias = self.add_weight(shape=(4,), initializer="zeros", name="bias")

    def call(self, x):
        y = self.proj(x)
        if self.use_bias:  # marker: use_bias
            y = y + self.bias
        if not self.use_residual:  # marker: use_residual
            return y
        return y + self.shortcut(x)


def flags():
    inputs = keras.Input((FEATURES,), name="features")
    outputs = keras.layers.Dense(1, name="head")(Block(name="block")(inputs))
    model = keras.Model(inputs, outputs, name="flags")
    model.compile(optimizer="sgd", loss="mse")
    return model


class BeforeTape(keras.Model):
    """A custom train_step that runs the forward pass above its GradientTape."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.body = keras.layers.Dense(4, name="body")
        self.head = keras.layers.Dense(1, name="head")
        self.penalty = keras.layers.Dense(1, name="penalty")

    def call(self, x):
        return self.head(self.body(x))

    @tf.function
    def train_step(self, data):
        x, y = data
        y_pred = self(x, training=True)  # marker: outside-tape
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((y - y_pred) ** 2) + tf.reduce_mean(self.penalty(x) ** 2)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return {"loss": loss}


def before_tape():
    model = BeforeTape(name="before_tape")
    model(batch()[0])
    model.penalty(batch()[0])
    model.compile(optimizer="sgd")
    return model


class PredictInStep(BeforeTape):
    """A custom train_step that takes its predictions from ``predict_on_batch`` (``fit`` fails on
    it; a hand-written loop runs it and trains nothing but the penalty)."""

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            y_pred = self.predict_on_batch(x)  # marker: predict
            loss = tf.reduce_mean((y - y_pred) ** 2) + tf.reduce_mean(self.penalty(x) ** 2)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return {"loss": loss}


def predict_in_step():
    model = PredictInStep(name="predict_in_step")
    model(batch()[0])
    model.penalty(batch()[0])
    model.compile(optimizer="sgd")
    return model


def regroup(values):
    return values.numpy().reshape(3, 7)  # fails: a NumPy shape error inside the py_function


class PyFunctionStep(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.body = keras.layers.Dense(4, name="body")

    def call(self, x):
        return tf.py_function(regroup, [self.body(x)], tf.float32)  # marker: py_function


def py_function_model():
    model = PyFunctionStep(name="py_function_step")
    model.build((None, FEATURES))
    return model


class OwnTemperature(BeforeTape):
    """A train_step that trains a tf.Variable Keras does not track, by hand-picked lists: fit
    trains it, so it is no finding."""

    def __init__(self, train_temperature=True, **kwargs):
        super().__init__(**kwargs)
        self.temperature = tf.Variable(1.0, name="temperature")
        self.train_temperature = train_temperature

    def call(self, x):
        return self.head(self.body(x)) * self.temperature  # marker: temperature

    def train_step(self, data):
        x, y = data
        variables = list(self.trainable_variables)
        if self.train_temperature:
            variables.append(self.temperature)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((y - self(x, training=True)) ** 2 + self.penalty(x) ** 2)
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return {"loss": loss}


def own_temperature(train_temperature=True):
    model = OwnTemperature(train_temperature, name="own_temperature")
    model(batch()[0])
    model.penalty(batch()[0])
    model.compile(optimizer="sgd")
    return model


def forgotten_temperature():
    """The same trainer, its temperature left out of the lists: fit never trains it."""
    return own_temperature(train_temperature=False)


class Tagger(keras.Model):
    """A dict-input model built by calling it: token ids (int) and a float mask; its call() has a
    Python ``if`` on a value, so Keras cannot trace it and keeps no input shapes."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.embed = keras.layers.Embedding(50, 4, name="embed")
        self.head = keras.layers.Dense(1, name="head")

    def call(self, inputs):
        h = self.embed(inputs["ids"]) * inputs["mask"][..., None]
        if float(tf.reduce_sum(inputs["mask"])) < 0:
            h = -h
        return self.head(tf.reduce_mean(h, axis=1))


def tagger_built_by_call():
    model = Tagger(name="tagger")
    model({"ids": np.ones((3, 5), "int32"), "mask": np.ones((3, 5), "float32")})
    return model


def numpy_in_loss(y_true, y_pred):
    """A custom loss that goes through NumPy: fit (run eagerly) says "No gradients provided"."""
    return tf.reduce_mean((y_true - tf.constant(y_pred.numpy())) ** 2)  # marker: loss-numpy


def left_in_loss():
    inputs = keras.Input((FEATURES,), name="features")
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(inputs), name="left_in_loss")
    model.compile(optimizer="sgd", loss=numpy_in_loss, run_eagerly=True)
    return model
