"""A ``tf.Module`` MLP whose ``__call__`` has an input signature, trained by a Keras optimizer
that is handed only the first layer's variables."""

import keras
import tensorflow as tf


class MLP(tf.Module):
    def __init__(self):
        super().__init__(name="mlp")
        self.w1 = tf.Variable(tf.random.stateless_normal((3, 6), seed=[5, 6]), name="w1")
        self.b1 = tf.Variable(tf.zeros((6,)), name="b1")
        self.w2 = tf.Variable(tf.random.stateless_normal((6, 1), seed=[7, 8]), name="w2")

    @tf.function(input_signature=[tf.TensorSpec((None, 3), tf.float32)])
    def __call__(self, x):
        return tf.matmul(tf.nn.tanh(tf.matmul(x, self.w1) + self.b1), self.w2)


mlp = MLP()
optimizer = keras.optimizers.SGD(0.1)


def train_step(x, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((mlp(x) - y) ** 2)
    variables = [mlp.w1, mlp.b1]
    grads = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(grads, variables))
    return loss


def data():
    return tf.random.stateless_normal((4, 3), seed=[3, 4]), tf.ones((4, 1))
