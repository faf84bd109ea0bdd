"""Variables a Keras layer holds that Keras does not track: a ``tf.Variable`` scale the loop trains
by naming it, and a ``tf.Module`` offset it never trains."""

import keras
import tensorflow as tf


class Offset(tf.Module):
    def __init__(self):
        super().__init__(name="offset")
        self.shift = tf.Variable(tf.zeros((1,)), name="shift")


class Scaled(keras.layers.Layer):
    def __init__(self):
        super().__init__(name="scaled")
        self.dense = keras.layers.Dense(1, name="dense")
        self.scale = tf.Variable(1.0, name="scale")  # untracked by Keras 3
        self.offset = Offset()  # untracked too

    def call(self, x):
        return self.dense(x) * self.scale + self.offset.shift


layer = Scaled()
layer.build((None, 4))


def train_step(x, y):
    variables = [v.value for v in layer.trainable_variables] + [layer.scale]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((layer(x) - y) ** 2)
    grads = tape.gradient(loss, variables)
    for variable, grad in zip(variables, grads):
        variable.assign_sub(0.1 * grad)
    return loss


def data():
    return tf.random.stateless_normal((4, 4), seed=[9, 3]), tf.ones((4, 1))
