"""A block that owns a projection it never calls on the way to its output (a skipped sub-layer)."""

import keras


class SkippingBlock(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.used = keras.layers.Dense(3, name="used")
        self.skipped = keras.layers.Dense(3, name="skipped")

    def build(self, input_shape):
        self.used.build(input_shape)
        self.skipped.build(input_shape)

    def call(self, x):  # marker: layer-not-called
        return self.used(x)


def build():
    inputs = keras.Input((4,), name="x")
    return keras.Model(inputs, SkippingBlock(name="block")(inputs), name="layer_not_called")
