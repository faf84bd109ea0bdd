"""Per-gradient clipping that keeps a None as None (the head the loss does not use)."""

import keras
import tensorflow as tf

inputs = keras.Input((4,))
hidden = keras.layers.Dense(6, activation="tanh", name="hidden")(inputs)
main = keras.layers.Dense(1, name="main")(hidden)
other = keras.layers.Dense(1, name="other")(hidden)
model = keras.Model(inputs, [main, other])
optimizer = keras.optimizers.Adam(1e-2)


def train_step(x, y):
    with tf.GradientTape() as tape:
        prediction, _ = model(x, training=True)
        loss = tf.reduce_mean((prediction - y) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    grads = [None if g is None else tf.clip_by_norm(g, 0.5) for g in grads]
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss


def data():
    return tf.random.stateless_normal((4, 4), seed=[9, 2]), tf.ones((4, 1))
