"""A block whose fallback projection is read only on the side of a cond these inputs skip."""

import keras
from keras import ops


class GatedFallback(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.main = keras.layers.Dense(3, name="main")
        self.fallback = keras.layers.Dense(3, name="fallback")

    def build(self, input_shape):
        self.main.build(input_shape)
        self.fallback.build(input_shape)

    def call(self, x):
        empty = ops.all(ops.equal(x, 0.0))
        return ops.cond(empty, lambda: self.fallback(x), lambda: self.main(x))  # marker: other-branch


def build():
    inputs = keras.Input((4,), name="features")
    return keras.Model(inputs, GatedFallback(name="gated")(inputs), name="other_branch")
