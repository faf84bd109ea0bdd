"""A layer that creates a weight its call() never reads."""

import keras


class ForgetfulScale(keras.layers.Layer):
    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")
        self.shift = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="shift")

    def call(self, x):  # marker: weight-not-read
        return x * self.scale


def build():
    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(4, name="dense")(inputs)
    return keras.Model(inputs, ForgetfulScale(name="forgetful")(hidden), name="weight_not_read")
