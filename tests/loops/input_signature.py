"""A ``tf.function`` step with an ``input_signature``; the auxiliary head feeds only a metric."""

import keras
import tensorflow as tf

inputs = keras.Input((5,))
hidden = keras.layers.Dense(8, activation="relu", name="body")(inputs)
logits = keras.layers.Dense(3, name="classifier")(hidden)
aux = keras.layers.Dense(1, name="aux")(hidden)
model = keras.Model(inputs, {"logits": logits, "aux": aux})
optimizer = keras.optimizers.Adam(1e-2)
loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
aux_mean = keras.metrics.Mean()


@tf.function(input_signature=[tf.TensorSpec((None, 5), tf.float32), tf.TensorSpec((None,), tf.int32)])
def train_step(x, labels):
    with tf.GradientTape() as tape:
        outputs = model(x, training=True)
        loss = loss_fn(labels, outputs["logits"])
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    aux_mean.update_state(outputs["aux"])
    return loss


def data():
    return tf.random.stateless_normal((4, 5), seed=[1, 1]), tf.constant([0, 1, 2, 1])
