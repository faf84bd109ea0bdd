"""Plain TensorFlow: a weight and a bias, a linear fit written by hand; the bias is read only
after the loss."""

import tensorflow as tf

w = tf.Variable(tf.random.stateless_normal((3, 1), seed=[2, 2]), name="w")
b = tf.Variable(tf.zeros((1,)), name="b")


def train_step(x, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((tf.matmul(x, w) - y) ** 2)
    dw, db = tape.gradient(loss, [w, b])
    w.assign_sub(0.1 * dw)
    if db is not None:
        b.assign_sub(0.1 * db)
    return loss + 0.0 * tf.reduce_sum(b)


def data():
    return tf.random.stateless_normal((4, 3), seed=[9, 5]), tf.ones((4, 1))
