"""``watch_accessed_variables=False``: the tape watches only the head, the loop asks for every
variable and applies what comes back."""

import keras
import tensorflow as tf

model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="tanh", name="body"),
                          keras.layers.Dense(1, name="head")])
optimizer = keras.optimizers.SGD(0.1)


def train_step(x, y):
    head = model.get_layer("head")
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch([v.value for v in head.trainable_variables])
        loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss


def data():
    return tf.random.stateless_normal((4, 4), seed=[9, 9]), tf.ones((4, 1))
