"""Gradient accumulation: each call adds the body's and the head's gradients into untracked
sums, and every 2nd call (a ``tf.Variable`` counter, a Python ``if`` on its value) applies them
and clears the sums; the aux head is called but never asked for.  The first call trains nothing."""

import keras
import tensorflow as tf

body = keras.layers.Dense(6, activation="tanh", name="body")
head = keras.layers.Dense(1, name="head")
aux = keras.layers.Dense(1, name="aux")
body.build((None, 4))
head.build((None, 6))
aux.build((None, 6))
trained = body.trainable_variables + head.trainable_variables
sums = [tf.Variable(tf.zeros_like(v), trainable=False) for v in trained]
count = tf.Variable(0, trainable=False, name="count")
optimizer = keras.optimizers.Adam(1e-2)
EVERY = 2


def train_step(x, y):
    with tf.GradientTape() as tape:
        hidden = body(x)
        loss = tf.reduce_mean((head(hidden) - y) ** 2)
    for total, grad in zip(sums, tape.gradient(loss, trained)):
        total.assign_add(grad)
    count.assign_add(1)
    if count % EVERY == 0:
        optimizer.apply_gradients(zip([total / EVERY for total in sums], trained))
        for total in sums:
            total.assign(tf.zeros_like(total))
    return loss, tf.reduce_mean(aux(hidden))


def data():
    return tf.random.stateless_normal((4, 4), seed=[6, 1]), tf.ones((4, 1))
