"""Models whose gradient is exactly zero for a reason the op graph shows."""

import keras
from keras import ops


class LoRADense(keras.layers.Layer):
    """A frozen-free low-rank adapter: B starts at zeros, so A's gradient is zero at init."""

    def build(self, input_shape):
        self.lora_a = self.add_weight(shape=(input_shape[-1], 2), name="lora_a")
        self.lora_b = self.add_weight(shape=(2, 3), initializer="zeros", name="lora_b")

    def call(self, x):
        return ops.matmul(ops.matmul(x, self.lora_a), self.lora_b)


def lora():
    inputs = keras.Input((4,), name="x")
    return keras.Model(inputs, LoRADense(name="lora")(inputs), name="lora")


def dead_relu():
    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(4, activation="relu", bias_initializer=keras.initializers.Constant(-100.0),
                                name="dead")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(hidden), name="dead_relu")


def zero_loss_weight():
    inputs = keras.Input((4,), name="x")
    trunk = keras.layers.Dense(4, name="trunk")(inputs)
    main = keras.layers.Dense(2, name="main")(trunk)
    aux = keras.layers.Dense(2, name="aux")(trunk)
    model = keras.Model(inputs, {"main": main, "aux": aux}, name="zero_loss_weight")
    model.compile(loss={"main": "mse", "aux": "mse"}, loss_weights={"main": 1.0, "aux": 0.0})
    return model


def cancellation():
    inputs = keras.Input((4,), name="x")
    shared = keras.layers.Dense(3, name="shared")
    difference = keras.layers.Subtract(name="difference")([shared(inputs), shared(inputs)])
    outputs = keras.layers.Add(name="residual")([difference, keras.layers.Dense(3, name="side")(inputs)])
    return keras.Model(inputs, outputs, name="cancellation")


def zero_gate():
    """A gate whose projection is zero-initialized: the gated branch and the gate's own input
    layer get exact zeros until the projection moves (a zero-initialized output projector)."""
    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(3, name="hidden")(inputs)
    gate = keras.layers.Dense(3, kernel_initializer="zeros", name="gate")(
        keras.layers.Dense(5, name="gate_input")(inputs))
    gated = keras.layers.Multiply(name="gated")([hidden, gate])
    return keras.Model(inputs, keras.layers.Dense(1, name="out")(gated), name="zero_gate")


def one_class_cross_entropy():
    """A one-unit head compiled with a softmax cross-entropy (one loss for every output, as a
    keras-hub segmenter compiles its presence score): the one class always has probability 1."""
    inputs = keras.Input((4,), name="x")
    trunk = keras.layers.Dense(4, name="trunk")(inputs)
    classes = keras.layers.Dense(3, name="classes")(trunk)
    presence = keras.layers.Dense(1, name="presence")(trunk)
    model = keras.Model(inputs, {"classes": classes, "presence": presence}, name="one_class")
    model.compile(loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    return model


class ZeroQueries(keras.layers.Layer):
    """Learned queries that start at zeros, one set per example (a Q-Former's query tokens)."""

    def build(self, input_shape):
        self.queries = self.add_weight(shape=(1, 3, 4), initializer="zeros", name="queries")

    def call(self, x):
        return ops.broadcast_to(self.queries, (ops.shape(x)[0], 3, 4))


def zero_queries():
    """Zero queries into a layer norm and a projection: the norm's scale multiplies zeros twice
    (``x`` and ``-mean(x)``, on two paths), the projection's kernel multiplies the norm's output,
    zero too (a mean of zeros plus a zero offset)."""
    inputs = keras.Input((3, 4), name="x")
    queries = keras.layers.LayerNormalization(name="norm")(ZeroQueries(name="queries")(inputs))
    projected = keras.layers.Dense(4, name="proj")(queries)
    return keras.Model(inputs, keras.layers.Add()([projected, inputs]), name="zero_queries")
