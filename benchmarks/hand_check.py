"""The obvious hand-written check gradcheck is measured against: python hand_check.py MODEL.keras

Load the model, one eager GradientTape step on synthetic inputs with the compiled loss, print the
trainable variables whose gradient is None.  Same inputs as gradcheck: batch 2, the model's own
input shapes, ids 1 (valid in every table, not the padding id), masks on.
"""

import sys

import keras
import numpy as np
import tensorflow as tf

model = keras.saving.load_model(sys.argv[1])
rng = np.random.default_rng(0)
x = {}
for t in model.inputs:
    shape = (2, *t.shape[1:])
    if "int" in str(t.dtype):
        x[t.name] = np.ones(shape, dtype=str(t.dtype))
    else:
        x[t.name] = rng.standard_normal(shape).astype("float32")
x = x[model.inputs[0].name] if len(model.inputs) == 1 else x

with tf.GradientTape() as tape:
    y_pred = model(x, training=True)
    y = rng.integers(0, y_pred.shape[-1], size=y_pred.shape[:-1])  # sparse class ids
    loss = model.compute_loss(x=x, y=y, y_pred=y_pred)
grads = tape.gradient(loss, model.trainable_variables)
print([v.path for v, g in zip(model.trainable_variables, grads) if g is None])
