"""A layer whose Python ``if`` on the input's values picks one of two projections."""

import keras
from keras import ops


class SignRouted(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.positive = keras.layers.Dense(3, name="positive")
        self.negative = keras.layers.Dense(3, name="negative")

    def build(self, input_shape):
        self.positive.build(input_shape)
        self.negative.build(input_shape)

    def compute_output_shape(self, input_shape):  # the Python if cannot run on symbolic tensors
        return (*input_shape[:-1], 3)

    def call(self, x):
        if ops.mean(x) > -10.0:  # marker: python-if
            return self.positive(x)
        return self.negative(x)


def build():
    inputs = keras.Input((4,), name="features")
    return keras.Model(inputs, SignRouted(name="routed")(inputs), name="python_branch")
