"""Plain ``tf.Module`` models and Keras 2 (``tf_keras``) models, as factories and as the files the
tests save from them."""

import tensorflow as tf


class Net(tf.Module):
    """Two layers by hand; ``spare`` is never read, ``gate`` only through a stop_gradient."""

    def __init__(self):
        super().__init__(name="net")
        self.w1 = tf.Variable(tf.random.stateless_normal((4, 8), seed=[1, 1]), name="w1")
        self.b1 = tf.Variable(tf.zeros((8,)), name="b1")
        self.w2 = tf.Variable(tf.random.stateless_normal((8, 2), seed=[1, 2]), name="w2")
        self.gate = tf.Variable(tf.ones((2,)), name="gate")
        self.spare = tf.Variable(tf.ones((3,)), name="spare")

    @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="x")])
    def __call__(self, x):
        hidden = tf.nn.tanh(tf.matmul(x, self.w1) + self.b1)
        return tf.matmul(hidden, self.w2) * tf.stop_gradient(self.gate)


class Unsigned(tf.Module):
    """A module whose ``__call__`` has no input signature: ``--input`` says what it takes."""

    def __init__(self):
        super().__init__(name="unsigned")
        self.w = tf.Variable(tf.ones((3, 1)), name="w")
        self.unused = tf.Variable(tf.ones((1,)), name="unused")

    def __call__(self, x):
        return tf.matmul(x, self.w)


def net():
    return Net()


def unsigned():
    return Unsigned()


def two_heads_tf_keras():
    """Keras 2: a compiled two-head model whose critic has no loss (a detached head)."""
    import tf_keras

    inputs = tf_keras.Input((4,), name="feat")
    torso = tf_keras.layers.Dense(8, activation="tanh", name="torso")(inputs)
    actor = tf_keras.layers.Dense(3, name="actor")(torso)
    critic = tf_keras.layers.Dense(1, name="critic")(torso)
    model = tf_keras.Model(inputs, [actor, critic], name="two_heads")
    model.compile(optimizer="adam", loss=["mse", None])
    return model


def legacy_keras_factory():
    """A factory written against ``tf.keras`` (Keras 2 under TF_USE_LEGACY_KERAS=1)."""
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(3, name="body"),
                                 tf.keras.layers.Dense(1, name="head")])
    model.compile(optimizer="sgd", loss="mse")
    return model


def keras2_trainer():
    """Keras 2: a model with its own ``train_step``; the ``unused`` layer is built, never called."""
    import tf_keras

    class Trainer(tf_keras.Model):
        def __init__(self):
            super().__init__(name="trainer")
            self.a = tf_keras.layers.Dense(4, name="a")
            self.b = tf_keras.layers.Dense(1, name="b")
            self.unused = tf_keras.layers.Dense(1, name="unused")

        def call(self, x):
            return self.b(self.a(x))

        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((self(x) - y) ** 2)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            return {"loss": loss}

    model = Trainer()
    model.build((None, 3))
    model.unused.build((None, 4))
    model.compile(optimizer=tf_keras.optimizers.SGD(0.1))
    return model


def keras2_projection():
    """Keras 2, not compiled: judged by the projection of its outputs."""
    import tf_keras

    inputs = tf_keras.Input((4,), name="feat")
    hidden = tf_keras.layers.Dense(8, activation="relu", name="torso")(inputs)
    gated = tf_keras.layers.Lambda(lambda t: tf.stop_gradient(t), name="frozen")(hidden)
    return tf_keras.Model(inputs, tf_keras.layers.Dense(2, name="out")(gated))


def trainer_batch():
    return tf.random.stateless_normal((4, 3), seed=[5, 1]), tf.ones((4, 1))
