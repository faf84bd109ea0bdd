"""Two optimizers: the body at a small learning rate, the head at a large one; the aux layer is
called but handed to neither."""

import keras
import tensorflow as tf

body = keras.layers.Dense(6, activation="tanh", name="body")
aux = keras.layers.Dense(6, name="aux")
head = keras.layers.Dense(1, name="head")
body_optimizer = keras.optimizers.SGD(1e-3)
head_optimizer = keras.optimizers.Adam(1e-2)


def train_step(x, y):
    with tf.GradientTape(persistent=True) as tape:
        hidden = body(x)
        loss = tf.reduce_mean((head(hidden + aux(hidden)) - y) ** 2)
    body_grads = tape.gradient(loss, body.trainable_variables)
    head_grads = tape.gradient(loss, head.trainable_variables)
    body_optimizer.apply_gradients(zip(body_grads, body.trainable_variables))
    head_optimizer.apply_gradients(zip(head_grads, head.trainable_variables))
    del tape
    return loss


def data():
    return tf.random.stateless_normal((4, 4), seed=[8, 8]), tf.ones((4, 1))
