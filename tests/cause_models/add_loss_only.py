"""A VQ-VAE quantizer: the codebook learns only through its add_loss term (a straight-through
estimator carries the encoder's gradient past it), and ``loss_without_add_loss`` leaves it out."""

import keras
from keras import ops


class Quantizer(keras.layers.Layer):
    def build(self, input_shape):
        self.codebook = self.add_weight(shape=(8, input_shape[-1]), name="codebook")

    def call(self, z):
        distances = ops.sum((z[:, None, :] - self.codebook[None]) ** 2, axis=-1)
        quantized = ops.take(self.codebook, ops.argmin(distances, axis=-1), axis=0)
        self.add_loss(ops.mean((ops.stop_gradient(z) - quantized) ** 2))
        return z + ops.stop_gradient(quantized - z)  # marker: add-loss-only


def build():
    inputs = keras.Input((4,), name="x")
    encoded = keras.layers.Dense(4, name="encoder")(inputs)
    return keras.Model(inputs, Quantizer(name="quantizer")(encoded), name="add_loss_only")


def loss_without_add_loss(model, inputs, outputs):
    return ops.mean(outputs ** 2)
