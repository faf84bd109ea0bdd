"""A step with no argument that takes its batch from a ``tf.data`` iterator; the ``extra`` layer is
never called."""

import keras
import tensorflow as tf

features = tf.random.stateless_normal((16, 4), seed=[1, 5])
labels = tf.reduce_sum(features, axis=-1, keepdims=True)
dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(4).repeat()
iterator = iter(dataset)

body = keras.layers.Dense(6, activation="tanh", name="body")
head = keras.layers.Dense(1, name="head")
extra = keras.layers.Dense(1, name="extra")
body.build((None, 4))
head.build((None, 6))
extra.build((None, 6))
optimizer = keras.optimizers.Adam(1e-2)


def train_step():
    x, y = next(iterator)
    variables = body.trainable_variables + head.trainable_variables + extra.trainable_variables
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((head(body(x)) - y) ** 2)
    grads = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(grads, variables))
    return loss
