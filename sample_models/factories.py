"""Model factories: gradcheck sample_models/factories.py:actor_critic"""

import keras


def actor_critic(name="actor_critic"):
    """An actor-critic model compiled with a loss on the actor only: the critic never learns."""
    state = keras.Input((8,), name="state")
    hidden = keras.layers.Dense(16, activation="relu", name="torso")(state)
    actor = keras.layers.Dense(4, activation="softmax", name="actor")(hidden)
    critic = keras.layers.Dense(1, name="critic")(hidden)
    model = keras.Model(state, {"actor": actor, "critic": critic}, name=name)
    model.compile(optimizer="adam", loss={"actor": "categorical_crossentropy", "critic": None})
    return model


def clean_mlp():
    """A small classifier where every variable learns."""
    inputs = keras.Input((8,), name="features")
    x = keras.layers.Dense(16, activation="tanh", name="hidden")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="clean_mlp")


class GAN(keras.Model):
    """A GAN trainer as in the Keras examples: no call(), a train_step with two optimizers."""

    def __init__(self, latent_dim=4, g_optimizer_layers=None, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.discriminator = keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(16, activation="relu", name="d_hidden"),
             keras.layers.Dense(1, name="d_logit")], name="discriminator")
        self.generator = keras.Sequential(
            [keras.Input((latent_dim,)), keras.layers.Dense(16, activation="relu", name="g_hidden"),
             keras.layers.Dense(16, activation="relu", name="g_refine"),
             keras.layers.Dense(8, name="g_out")], name="generator")
        self.g_optimizer_layers = g_optimizer_layers  #: generator layers g_optimizer updates

    def compile(self, d_optimizer, g_optimizer):
        super().compile()
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)

    def _generator_weights(self):
        layers = self.generator.layers
        if self.g_optimizer_layers is not None:
            layers = [layer for layer in layers if layer.name in self.g_optimizer_layers]
        return [w for layer in layers for w in layer.trainable_weights]

    def train_step(self, real):
        import tensorflow as tf

        size = tf.shape(real)[0]
        noise = keras.random.normal((size, self.latent_dim))
        fake = self.generator(noise)
        images = tf.concat([fake, real], axis=0)
        labels = tf.concat([tf.ones((size, 1)), tf.zeros((size, 1))], axis=0)
        with tf.GradientTape() as tape:
            d_loss = self.loss_fn(labels, self.discriminator(images))
        grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))

        noise = keras.random.normal((size, self.latent_dim))
        with tf.GradientTape() as tape:
            g_loss = self.loss_fn(tf.zeros((size, 1)), self.discriminator(self.generator(noise)))
        weights = self._generator_weights()
        grads = tape.gradient(g_loss, weights)
        self.g_optimizer.apply_gradients(zip(grads, weights))
        return {"d_loss": d_loss, "g_loss": g_loss}


def gan_missing_layer():
    """A GAN whose g_optimizer is handed every generator layer but 'g_refine': it never trains."""
    model = GAN(g_optimizer_layers=("g_hidden", "g_out"), name="gan")
    model.compile(d_optimizer=keras.optimizers.Adam(1e-3), g_optimizer=keras.optimizers.Adam(1e-3))
    return model
