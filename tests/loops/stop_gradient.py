"""A frozen encoder by ``tf.stop_gradient``: the loop passes every variable, the encoder gets None."""

import keras
import tensorflow as tf

encoder = keras.layers.Dense(8, activation="tanh", name="encoder")
head = keras.layers.Dense(1, name="head")
optimizer = keras.optimizers.SGD(0.1)


def train_step(x, y):
    with tf.GradientTape() as tape:
        features = tf.stop_gradient(encoder(x))
        loss = tf.reduce_mean((head(features) - y) ** 2)
    variables = encoder.trainable_variables + head.trainable_variables
    grads = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(grads, variables))
    return loss


def data():
    return tf.random.stateless_normal((4, 4), seed=[5, 5]), tf.ones((4, 1))
