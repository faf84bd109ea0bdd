"""Head-only fine-tuning: the backbone is frozen (``trainable = False``) and the step trains what
is still trainable; the ``probe`` head is trainable but only its output is logged."""

import keras
import tensorflow as tf

backbone = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu", name="b1"),
                             keras.layers.Dense(8, activation="relu", name="b2")], name="backbone")
backbone.trainable = False
inputs = keras.Input((4,))
features = backbone(inputs, training=False)
logits = keras.layers.Dense(3, name="head")(features)
probe = keras.layers.Dense(1, name="probe")(features)
model = keras.Model(inputs, [logits, probe])
optimizer = keras.optimizers.Adam(1e-2)
loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def train_step(x, labels):
    with tf.GradientTape() as tape:
        logits, probe_value = model(x, training=True)
        loss = loss_fn(labels, logits)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss, tf.reduce_mean(probe_value)


def data():
    return tf.random.stateless_normal((4, 4), seed=[9, 4]), tf.constant([0, 1, 2, 0])
