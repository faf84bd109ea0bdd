"""A router whose choice is an ``argmax``: its weights never get a gradient."""

import keras
import tensorflow as tf

router = keras.layers.Dense(3, name="router")
experts = keras.layers.Dense(3, name="experts")
router.build((None, 4))
experts.build((None, 4))
optimizer = keras.optimizers.SGD(0.1)


def train_step(x, y):
    variables = router.trainable_variables + experts.trainable_variables
    with tf.GradientTape() as tape:
        choice = tf.one_hot(tf.argmax(router(x), axis=-1), 3)
        loss = tf.reduce_mean((tf.reduce_sum(experts(x) * choice, axis=-1, keepdims=True) - y) ** 2)
    grads = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(grads, variables))
    return loss


def data():
    return tf.random.stateless_normal((4, 4), seed=[9, 6]), tf.ones((4, 1))
