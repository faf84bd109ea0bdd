"""``tf.compat.v1.train`` optimizers' ``minimize`` on a callable loss; the bias ``b2`` is left out
of ``var_list``."""

import tensorflow as tf

w1 = tf.Variable(tf.random.stateless_normal((3, 4), seed=[1, 3]), name="w1")
b1 = tf.Variable(tf.zeros((4,)), name="b1")
w2 = tf.Variable(tf.random.stateless_normal((4, 1), seed=[1, 4]), name="w2")
b2 = tf.Variable(tf.zeros((1,)), name="b2")
optimizer = tf.compat.v1.train.GradientDescentOptimizer(0.1)


def train_step(x, y):
    def loss():
        hidden = tf.nn.tanh(tf.matmul(x, w1) + b1)
        return tf.reduce_mean((tf.matmul(hidden, w2) + b2 - y) ** 2)

    optimizer.minimize(loss, var_list=[w1, b1, w2])


def data():
    return tf.random.stateless_normal((4, 3), seed=[7, 7]), tf.ones((4, 1))
