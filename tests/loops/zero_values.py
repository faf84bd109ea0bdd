"""ZERO with ``[v.value for v in …]``: the call works, and the head not in the loss gets zeros
that Adam applies — it never learns, silently."""

import keras
import tensorflow as tf

inputs = keras.Input((4,), name="features")
x = keras.layers.Dense(8, activation="tanh", name="x")(inputs)
y = keras.layers.Dense(1, name="y")(x)
z2 = keras.layers.Dense(1, name="z2")(x)
model = keras.Model(inputs, [y, z2])
optimizer = keras.optimizers.Adam(1e-2)


@tf.function
def train_step(features, target):
    with tf.GradientTape() as tape:
        prediction, _ = model(features, training=True)
        loss = tf.reduce_mean((prediction - target) ** 2)
    variables = [v.value for v in model.trainable_variables]
    grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss


def data():
    return tf.random.stateless_normal((4, 4), seed=[1, 2]), tf.ones((4, 1))
