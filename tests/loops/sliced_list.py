"""A hand-sliced variable list: only the last two layers are passed to the tape and optimizer."""

import keras
import tensorflow as tf

model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="tanh", name="a"),
                          keras.layers.Dense(6, activation="tanh", name="b"),
                          keras.layers.Dense(1, name="c")])
optimizer = keras.optimizers.SGD(0.1)
trained = model.trainable_variables[2:]


def train_step(x, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
    grads = tape.gradient(loss, trained)
    optimizer.apply_gradients(zip(grads, trained))
    return loss


def data():
    return tf.random.stateless_normal((4, 4), seed=[9, 9]), tf.ones((4, 1))
