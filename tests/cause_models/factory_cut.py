"""A functional model built by a factory, whose argmax is written in the factory itself."""

import keras
from keras import ops


def build():
    inputs = keras.Input((4,), name="x")
    scores = keras.layers.Dense(8, name="scores")(inputs)
    ids = ops.argmax(scores, axis=-1)  # marker: argmax
    embedded = keras.layers.Embedding(8, 3, name="lookup")(ids)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(embedded), name="factory_cut")
