"""Keras 2 (``tf_keras``) in a hand-written loop: the body trained by a new-style optimizer's
``minimize``, the head by a legacy optimizer's ``apply_gradients``; the ``spare`` layer is built
and handed to the legacy optimizer, but never called."""

import tensorflow as tf
import tf_keras

model = tf_keras.Sequential([tf_keras.Input((4,)),
                             tf_keras.layers.Dense(6, activation="tanh", name="body"),
                             tf_keras.layers.Dense(1, name="head")])
spare = tf_keras.layers.Dense(2, name="spare")
spare.build((None, 4))
body_optimizer = tf_keras.optimizers.SGD(0.1)
head_optimizer = tf_keras.optimizers.legacy.Adam(0.01)


def train_step(x, y):
    body_optimizer.minimize(lambda: tf.reduce_mean((model(x) - y) ** 2),
                            model.trainable_variables[:2])
    variables = model.trainable_variables[2:] + spare.trainable_variables
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(x) - y) ** 2)
    grads = tape.gradient(loss, variables)
    head_optimizer.apply_gradients(zip(grads, variables))
    return loss


def data():
    return tf.random.stateless_normal((4, 4), seed=[3, 9]), tf.ones((4, 1))
