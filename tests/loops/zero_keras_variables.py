"""The seed example: ``z2`` is not in the loss, and ZERO asks for every gradient with Keras
variables as the sources — under Keras 3 that call raises as soon as ``z2`` is unconnected."""

import keras
import tensorflow as tf

inputs = keras.Input((4,), name="features")
x = keras.layers.Dense(8, activation="tanh", name="x")(inputs)
y = keras.layers.Dense(1, name="y")(x)
z2 = keras.layers.Dense(1, name="z2")(x)
model = keras.Model(inputs, [y, z2])
optimizer = keras.optimizers.Adam(1e-2)


def train_step(features, target):
    with tf.GradientTape() as tape:
        prediction, _ = model(features, training=True)
        loss = tf.reduce_mean((prediction - target) ** 2)
    grads = tape.gradient(loss, model.trainable_variables,
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss


def fixed_step(features, target):
    """What the loop trains once the call is fixed as the message says (the truth)."""
    with tf.GradientTape() as tape:
        prediction, _ = model(features, training=True)
        loss = tf.reduce_mean((prediction - target) ** 2)
    grads = tape.gradient(loss, [v.value for v in model.trainable_variables],
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss


def data():
    return tf.random.stateless_normal((4, 4), seed=[1, 2]), tf.ones((4, 1))


TRUTH = "fixed_step"
RAISES = True  #: the step itself raises when it really runs
