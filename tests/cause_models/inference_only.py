"""A calibration weight read only when the model runs with training=False."""

import keras


class Calibration(keras.layers.Layer):
    def build(self, input_shape):
        self.temperature = self.add_weight(shape=(), initializer="ones", name="temperature")

    def call(self, x, training=None):  # marker: inference-only
        if training:
            return x
        return x / self.temperature


def build():
    inputs = keras.Input((4,), name="x")
    logits = keras.layers.Dense(3, name="dense")(inputs)
    return keras.Model(inputs, Calibration(name="calibration")(logits), name="inference_only")
