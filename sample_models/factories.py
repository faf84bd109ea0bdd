"""Model factories: gradcheck sample_models/factories.py:actor_critic"""

import keras


def actor_critic(name="actor_critic"):
    """An actor-critic model compiled with a loss on the actor only: the critic never learns."""
    state = keras.Input((8,), name="state")
    hidden = keras.layers.Dense(16, activation="relu", name="torso")(state)
    actor = keras.layers.Dense(4, activation="softmax", name="actor")(hidden)
    critic = keras.layers.Dense(1, name="critic")(hidden)
    model = keras.Model(state, {"actor": actor, "critic": critic}, name=name)
    model.compile(optimizer="adam", loss={"actor": "categorical_crossentropy", "critic": None})
    return model


def clean_mlp():
    """A small classifier where every variable learns."""
    inputs = keras.Input((8,), name="features")
    x = keras.layers.Dense(16, activation="tanh", name="hidden")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="clean_mlp")
