"""BYOL-style: the online network is trained by the optimizer, and the target network (trainable
variables the optimizer is never handed) follows it by an EMA ``assign`` after the optimizer
step.  The target's biases start equal to the online ones, so they move only once the online
biases have moved."""

import keras
import tensorflow as tf


def _mlp(name):
    return keras.Sequential([keras.Input((4,)),
                             keras.layers.Dense(5, activation="tanh", name=f"{name}_1"),
                             keras.layers.Dense(3, name=f"{name}_2")], name=name)


online = _mlp("online")
target = _mlp("target")
for target_weight, online_weight in zip(target.weights, online.weights):
    kernel = len(online_weight.shape) > 1
    target_weight.assign(online_weight + 0.5 if kernel else online_weight)  # kernels differ
optimizer = keras.optimizers.Adam(1e-2)
TAU = 0.9


def train_step(x):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((online(x + 0.1) - tf.stop_gradient(target(x))) ** 2)
    grads = tape.gradient(loss, online.trainable_variables)
    optimizer.apply_gradients(zip(grads, online.trainable_variables))
    for target_weight, online_weight in zip(target.weights, online.weights):
        target_weight.assign(TAU * target_weight + (1.0 - TAU) * online_weight)
    return loss


def data():
    return (tf.random.stateless_normal((4, 4), seed=[3, 9]),)
