"""Global-norm clipping over a gradient list that holds a None (the unused ``spare`` layer)."""

import keras
import tensorflow as tf

inputs = keras.Input((4,))
hidden = keras.layers.Dense(6, activation="tanh", name="hidden")(inputs)
outputs = keras.layers.Dense(1, name="out")(hidden)
model = keras.Model(inputs, outputs)
spare = keras.layers.Dense(3, name="spare")
spare.build((None, 4))
optimizer = keras.optimizers.SGD(0.1)


def train_step(x, y):
    variables = model.trainable_variables + spare.trainable_variables
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
    grads = tape.gradient(loss, variables)
    grads, _ = tf.clip_by_global_norm(grads, 1.0)
    optimizer.apply_gradients(zip(grads, variables))
    return loss


def data():
    return tf.random.stateless_normal((4, 4), seed=[9, 1]), tf.ones((4, 1))
