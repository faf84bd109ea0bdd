"""A tf.function call() whose tf.cond reads one weight per side: the side not taken gets zeros."""

import keras
import tensorflow as tf


class BranchyProjection(keras.layers.Layer):
    def build(self, input_shape):
        self.main = self.add_weight(shape=(input_shape[-1], 3), name="main")
        self.fallback = self.add_weight(shape=(input_shape[-1], 3), name="fallback")

    @tf.function
    def call(self, x):
        empty = tf.reduce_all(tf.equal(x, 0.0))
        return tf.cond(empty, lambda: x @ self.fallback, lambda: x @ self.main)  # marker: tf.cond


def build():
    inputs = keras.Input((4,), name="features")
    return keras.Model(inputs, BranchyProjection(name="branchy")(inputs), name="function_branch")


class TracedBlock(keras.layers.Layer):
    """A tf.function call() that calls one sub-layer and skips the other."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.used = keras.layers.Dense(3, name="used")
        self.skipped = keras.layers.Dense(3, name="skipped")

    def build(self, input_shape):
        self.used.build(input_shape)
        self.skipped.build(input_shape)

    @tf.function
    def call(self, x):  # marker: traced-call
        return self.used(x)


def traced():
    inputs = keras.Input((4,), name="features")
    return keras.Model(inputs, TracedBlock(name="traced")(inputs), name="traced_block")
