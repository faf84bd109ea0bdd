"""A plain ``tf.Module`` MLP trained by hand (``assign_sub``): the third layer is built but the
forward pass skips it."""

import tensorflow as tf


class Dense(tf.Module):
    def __init__(self, units_in, units_out, name=None):
        super().__init__(name=name)
        self.w = tf.Variable(tf.random.stateless_normal((units_in, units_out), seed=[0, units_out]),
                             name="w")
        self.b = tf.Variable(tf.zeros((units_out,)), name="b")

    def __call__(self, x):
        return tf.matmul(x, self.w) + self.b


class MLP(tf.Module):
    def __init__(self):
        super().__init__(name="mlp")
        self.layers = [Dense(4, 8, name="hidden"), Dense(8, 2, name="out"),
                       Dense(8, 8, name="unused")]

    def __call__(self, x):
        return self.layers[1](tf.nn.tanh(self.layers[0](x)))


mlp = MLP()


def train_step(x, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((mlp(x) - y) ** 2)
    grads = tape.gradient(loss, mlp.trainable_variables)
    for variable, grad in zip(mlp.trainable_variables, grads):
        if grad is not None:
            variable.assign_sub(0.1 * grad)
    return loss


def data():
    return tf.random.stateless_normal((4, 4), seed=[3, 4]), tf.ones((4, 2))


NEEDS_DATA = False  #: gradcheck finds the shapes from the variables
