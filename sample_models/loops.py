"""Training loops written by hand, as TensorFlow's "training loop from scratch" guide writes them.

``train_step`` is the seed example: the model has two heads, ``y`` is trained, ``z2`` is not in
the loss, and the gradients are asked with ``unconnected_gradients=ZERO`` — so ``z2`` silently
gets zeros (and, because the sources are Keras variables, the real call raises under Keras 3).
``module_step`` trains a plain ``tf.Module`` by hand and forgets one of its layers.
"""

import keras
import tensorflow as tf

inputs = keras.Input((8,), name="features")
x = keras.layers.Dense(16, activation="relu", name="x")(inputs)
y = keras.layers.Dense(1, name="y")(x)
z2 = keras.layers.Dense(1, name="z2")(x)
model = keras.Model(inputs, [y, z2], name="two_heads")
optimizer = keras.optimizers.Adam(1e-3)


@tf.function
def train_step(features, target):
    with tf.GradientTape() as tape:
        prediction, _ = model(features, training=True)
        loss = tf.reduce_mean(tf.square(prediction - target))
    grads = tape.gradient(loss, model.trainable_variables,
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss


class Dense(tf.Module):
    def __init__(self, units_in, units_out, name=None):
        super().__init__(name=name)
        self.w = tf.Variable(tf.random.normal((units_in, units_out)), name="w")
        self.b = tf.Variable(tf.zeros((units_out,)), name="b")

    def __call__(self, x):
        return tf.matmul(x, self.w) + self.b


class MLP(tf.Module):
    def __init__(self):
        super().__init__(name="mlp")
        self.hidden = Dense(8, 16, name="hidden")
        self.refine = Dense(16, 16, name="refine")
        self.out = Dense(16, 1, name="out")

    def __call__(self, x):
        return self.out(tf.nn.relu(self.hidden(x)))  # self.refine is never called


mlp = MLP()


def module_step(x, y, learning_rate=0.01):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(mlp(x) - y))
    grads = tape.gradient(loss, mlp.trainable_variables)
    for variable, grad in zip(mlp.trainable_variables, grads):
        if grad is not None:
            variable.assign_sub(learning_rate * grad)
    return loss
