"""A GAN loop of two functions: ``train_step`` calls a discriminator step and a generator step,
each a ``tf.function`` with its own tape and optimizer; the generator's ``g_skip`` layer is built
but never called."""

import keras
import tensorflow as tf

LATENT = 3


class Generator(keras.Model):
    def __init__(self):
        super().__init__(name="generator")
        self.g_in = keras.layers.Dense(8, activation="relu", name="g_in")
        self.g_out = keras.layers.Dense(4, name="g_out")
        self.g_skip = keras.layers.Dense(4, name="g_skip")

    def build(self, shape):
        self.g_in.build(shape)
        self.g_out.build((None, 8))
        self.g_skip.build((None, 8))

    def call(self, z):
        return self.g_out(self.g_in(z))


generator = Generator()
generator.build((None, LATENT))
discriminator = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh",
                                                                        name="d_hidden"),
                                  keras.layers.Dense(1, name="d_out")], name="discriminator")
d_optimizer = keras.optimizers.Adam(1e-2)
g_optimizer = keras.optimizers.Adam(1e-2)
bce = keras.losses.BinaryCrossentropy(from_logits=True)


@tf.function
def discriminator_step(real, noise):
    fake = generator(noise)
    with tf.GradientTape() as tape:
        real_score = discriminator(real, training=True)
        fake_score = discriminator(fake, training=True)
        loss = bce(tf.ones_like(real_score), real_score) + bce(tf.zeros_like(fake_score), fake_score)
    grads = tape.gradient(loss, discriminator.trainable_variables)
    d_optimizer.apply_gradients(zip(grads, discriminator.trainable_variables))
    return loss


@tf.function
def generator_step(noise):
    with tf.GradientTape() as tape:
        score = discriminator(generator(noise, training=True))
        loss = bce(tf.ones_like(score), score)
    grads = tape.gradient(loss, generator.trainable_variables)
    g_optimizer.apply_gradients(zip(grads, generator.trainable_variables))
    return loss


def train_step(real):
    noise = tf.random.stateless_normal((tf.shape(real)[0], LATENT), seed=[4, 2])
    return discriminator_step(real, noise), generator_step(noise)


def data():
    return (tf.random.stateless_normal((4, 4), seed=[2, 3]),)
