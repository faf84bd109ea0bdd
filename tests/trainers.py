"""Tiny trainers with their own train_step / compute_loss, each with the batch ``fit`` gets.

Every factory returns a compiled model ready for ``fit``; ``BATCHES[name]`` builds the batch its
train_step takes (also usable as ``--data trainers:<name>_batch``).  Models are a few Dense
layers so that the fast suite stays fast.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

LATENT, IMAGE, LABEL = 3, 6, 4
BATCH = 2


def _mlp(name: str, inputs: int, sizes: list[int], *, activation=None) -> keras.Model:
    x = keras.Input((inputs,), name=f"{name}_in")
    y = x
    for i, size in enumerate(sizes):
        last = i == len(sizes) - 1
        y = keras.layers.Dense(size, activation=None if last else "tanh", name=f"{name}_{i}")(y)
    if activation:
        y = keras.layers.Activation(activation, name=f"{name}_act")(y)
    return keras.Model(x, y, name=name)


class GAN(keras.Model):
    """The Keras GAN example, shrunk: discriminator step, then generator step."""

    def __init__(self, *, g_layers=None, stop_generator=False, **kwargs):
        super().__init__(**kwargs)
        self.discriminator = _mlp("discriminator", IMAGE, [5, 1])
        self.generator = _mlp("generator", LATENT, [5, 5, IMAGE])
        self.g_layers = g_layers  #: names of the generator layers g_optimizer is handed (None: all)
        self.stop_generator = stop_generator
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")

    def compile(self, d_optimizer, g_optimizer):
        super().compile()
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer

    def _generator_variables(self):
        if self.g_layers is None:
            return self.generator.trainable_weights
        return [w for layer in self.generator.layers if layer.name in self.g_layers
                for w in layer.trainable_weights]

    def train_step(self, real):
        if isinstance(real, tuple):
            real = real[0]
        size = tf.shape(real)[0]
        noise = tf.random.normal((size, LATENT))
        fake = self.generator(noise)
        both = tf.concat([fake, real], axis=0)
        labels = tf.concat([tf.ones((size, 1)), tf.zeros((size, 1))], axis=0)
        with tf.GradientTape() as tape:
            d_loss = keras.losses.binary_crossentropy(labels, self.discriminator(both), from_logits=True)
            d_loss = tf.reduce_mean(d_loss)
        grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))
        noise = tf.random.normal((size, LATENT))
        with tf.GradientTape() as tape:
            fake = self.generator(noise)
            if self.stop_generator:
                fake = tf.stop_gradient(fake)
            g_loss = tf.reduce_mean(keras.losses.binary_crossentropy(
                tf.zeros((size, 1)), self.discriminator(fake), from_logits=True))
            if self.stop_generator:  # a penalty keeps one layer trained (fit needs one gradient)
                g_loss += 1e-3 * tf.reduce_sum(self.generator.layers[-1].kernel ** 2)
        variables = self._generator_variables()
        grads = tape.gradient(g_loss, variables)
        self.g_optimizer.apply_gradients(zip(grads, variables))
        self.d_loss_tracker.update_state(d_loss)
        return {"d_loss": self.d_loss_tracker.result(), "g_loss": g_loss}


def _compiled_gan(**kwargs) -> GAN:
    model = GAN(**kwargs)
    model.compile(d_optimizer=keras.optimizers.Adam(1e-3), g_optimizer=keras.optimizers.Adam(1e-3))
    return model


def gan():
    """A correct GAN: every variable trains."""
    return _compiled_gan(name="gan")


def gan_partial_generator():
    """g_optimizer is handed only the last two generator layers: generator_0 never trains."""
    return _compiled_gan(name="gan_partial", g_layers=("generator_1", "generator_2"))


def gan_stopped_generator():
    """A stop_gradient on the generator's output in the generator step: only the penalised last
    layer trains."""
    return _compiled_gan(name="gan_stopped", stop_generator=True)


class WGANGP(GAN):
    """Critic loss plus a gradient penalty computed with a nested tape."""

    d_steps = 2  #: critic updates per generator update

    def train_step(self, real):
        size = tf.shape(real)[0]
        noise = tf.random.normal((size, LATENT))
        for _ in range(self.d_steps):
            with tf.GradientTape() as tape:
                fake = self.generator(noise, training=True)
                alpha = tf.random.uniform((size, 1))
                mixed = alpha * real + (1 - alpha) * fake
                with tf.GradientTape() as penalty_tape:
                    penalty_tape.watch(mixed)
                    score = self.discriminator(mixed, training=True)
                slopes = penalty_tape.gradient(score, [mixed])[0]
                penalty = tf.reduce_mean((tf.norm(slopes, axis=1) - 1.0) ** 2)
                d_cost = tf.reduce_mean(self.discriminator(fake)) - tf.reduce_mean(self.discriminator(real))
                d_loss = d_cost + 10.0 * penalty
            grads = tape.gradient(d_loss, self.discriminator.trainable_variables)
            self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_variables))
        with tf.GradientTape() as tape:
            g_loss = -tf.reduce_mean(self.discriminator(self.generator(noise, training=True)))
        grads = tape.gradient(g_loss, self.generator.trainable_variables)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_variables))
        return {"d_loss": d_loss, "g_loss": g_loss}


def wgan_gp():
    model = WGANGP(name="wgan_gp")
    model.compile(d_optimizer=keras.optimizers.Adam(1e-3), g_optimizer=keras.optimizers.Adam(1e-3))
    return model


class CycleGAN(keras.Model):
    """Two generators (X→Y, Y→X) and two discriminators; the batch is (real_x, real_y)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.gen_g = _mlp("gen_g", IMAGE, [5, LABEL])
        self.gen_f = _mlp("gen_f", LABEL, [5, IMAGE])
        self.disc_x = _mlp("disc_x", IMAGE, [1])
        self.disc_y = _mlp("disc_y", LABEL, [1])

    def compile(self, gen_optimizer, disc_optimizer):
        super().compile()
        self.gen_optimizer = gen_optimizer
        self.disc_optimizer = disc_optimizer

    def train_step(self, batch):
        real_x, real_y = batch
        with tf.GradientTape(persistent=True) as tape:
            fake_y = self.gen_g(real_x, training=True)
            fake_x = self.gen_f(real_y, training=True)
            cycled_x = self.gen_f(fake_y, training=True)
            cycled_y = self.gen_g(fake_x, training=True)
            cycle = tf.reduce_mean(tf.abs(real_x - cycled_x)) + tf.reduce_mean(tf.abs(real_y - cycled_y))
            gen_loss = (tf.reduce_mean((self.disc_y(fake_y) - 1) ** 2)
                        + tf.reduce_mean((self.disc_x(fake_x) - 1) ** 2) + 10 * cycle)
            disc_loss = (tf.reduce_mean((self.disc_x(real_x) - 1) ** 2) + tf.reduce_mean(self.disc_x(fake_x) ** 2)
                         + tf.reduce_mean((self.disc_y(real_y) - 1) ** 2) + tf.reduce_mean(self.disc_y(fake_y) ** 2))
        generators = self.gen_g.trainable_variables + self.gen_f.trainable_variables
        discriminators = self.disc_x.trainable_variables + self.disc_y.trainable_variables
        self.gen_optimizer.apply_gradients(zip(tape.gradient(gen_loss, generators), generators))
        self.disc_optimizer.apply_gradients(zip(tape.gradient(disc_loss, discriminators), discriminators))
        return {"gen_loss": gen_loss, "disc_loss": disc_loss}


def cycle_gan():
    model = CycleGAN(name="cycle_gan")
    model.compile(gen_optimizer=keras.optimizers.Adam(1e-3), disc_optimizer=keras.optimizers.Adam(1e-3))
    return model


class VAE(keras.Model):
    """The Keras VAE example, shrunk: call() only encodes; train_step also decodes."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.encoder = _mlp("encoder", IMAGE, [5, 2 * LATENT])
        self.decoder = _mlp("decoder", LATENT, [5, IMAGE])
        self.seed_generator = keras.random.SeedGenerator(7)

    def call(self, x):
        return self.encoder(x)

    def train_step(self, data):
        if isinstance(data, tuple):
            data = data[0]
        with tf.GradientTape() as tape:
            mean, log_var = tf.split(self.encoder(data), 2, axis=-1)
            eps = keras.random.normal(tf.shape(mean), seed=self.seed_generator)
            z = mean + tf.exp(0.5 * log_var) * eps
            reconstruction = self.decoder(z)
            rec = tf.reduce_mean(tf.reduce_sum((data - reconstruction) ** 2, axis=-1))
            kl = -0.5 * tf.reduce_mean(tf.reduce_sum(1 + log_var - mean ** 2 - tf.exp(log_var), axis=-1))
            loss = rec + kl
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        return {"loss": loss}


def vae():
    model = VAE(name="vae")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model(np.zeros((1, IMAGE), "float32"))
    return model


class Distiller(keras.Model):
    """Knowledge distillation by overriding compute_loss (compiled without a loss)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.student = _mlp("student", IMAGE, [5, LABEL])
        self.teacher = _mlp("teacher", IMAGE, [8, LABEL])

    def call(self, x):
        return self.student(x)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, allow_empty=False):
        teacher = self.teacher(x, training=False)
        hard = keras.losses.sparse_categorical_crossentropy(y, y_pred, from_logits=True)
        soft = keras.losses.kl_divergence(tf.nn.softmax(teacher / 3.0), tf.nn.softmax(y_pred / 3.0))
        return tf.reduce_mean(0.1 * hard + 0.9 * soft)


def distiller():
    model = Distiller(name="distiller")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model(np.zeros((1, IMAGE), "float32"))
    return model


class FunctionStep(keras.Model):
    """A train_step compiled with @tf.function; the auxiliary head is not in the gradient list."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.body = _mlp("body", IMAGE, [5])
        self.head = _mlp("head", 5, [1])
        self.aux = _mlp("aux", 5, [1])

    def call(self, x):
        h = self.body(x)
        return self.head(h), self.aux(h)

    @tf.function
    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            out, aux = self(x, training=True)
            loss = tf.reduce_mean((out - y) ** 2) + tf.reduce_mean(aux ** 2)
        variables = self.body.trainable_variables + self.head.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return {"loss": loss}


def function_step():
    model = FunctionStep(name="function_step")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model(np.zeros((1, IMAGE), "float32"))
    return model


class SplitLists(FunctionStep):
    """Gradients are asked for body+head, the optimizer is handed head's only (and aux's None)."""

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            out, _ = self(x, training=True)
            loss = tf.reduce_mean((out - y) ** 2)
        asked = self.head.trainable_variables + self.body.trainable_variables
        grads = tape.gradient(loss, asked)
        handed = self.head.trainable_variables + self.aux.trainable_variables
        self.optimizer.apply_gradients(zip(grads[:2] + [None, None], handed))
        return {"loss": loss}


def split_lists():
    model = SplitLists(name="split_lists")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model(np.zeros((1, IMAGE), "float32"))
    return model


class ManualSGD(FunctionStep):
    """No optimizer: the step updates body and head by hand (aux is left alone)."""

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            out, _ = self(x, training=True)
            loss = tf.reduce_mean((out - y) ** 2)
        variables = self.body.trainable_variables + self.head.trainable_variables
        for variable, grad in zip(variables, tape.gradient(loss, variables)):
            variable.assign_sub(0.1 * grad)
        return {"loss": loss}


def manual_sgd():
    model = ManualSGD(name="manual_sgd")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model(np.zeros((1, IMAGE), "float32"))
    return model


class SwappedLists(FunctionStep):
    """Gradients of body's weights zipped with head's: fit itself fails on the shapes."""

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            out, _ = self(x, training=True)
            loss = tf.reduce_mean((out - y) ** 2)
        grads = tape.gradient(loss, self.body.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.head.trainable_variables))
        return {"loss": loss}


def swapped_lists():
    model = SwappedLists(name="swapped_lists")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model(np.zeros((1, IMAGE), "float32"))
    return model


class FrozenFeatures(GAN):
    """A GAN whose discriminator reads a feature extractor frozen on purpose."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.features = _mlp("features", IMAGE, [IMAGE])
        self.features.trainable = False

    def train_step(self, real):
        return super().train_step(self.features(real))


def frozen_features():
    model = FrozenFeatures(name="frozen_features")
    model.compile(d_optimizer=keras.optimizers.Adam(1e-3), g_optimizer=keras.optimizers.Adam(1e-3))
    return model


class LazyGAN(GAN):
    """A GAN whose sub-models have no Input: their weights exist only once the step runs."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.discriminator = keras.Sequential([keras.layers.Dense(5, activation="tanh"),
                                               keras.layers.Dense(1)], name="lazy_discriminator")
        self.generator = keras.Sequential([keras.layers.Dense(5, activation="tanh"),
                                           keras.layers.Dense(IMAGE)], name="lazy_generator")


def lazy_gan():
    model = LazyGAN(name="lazy_gan")
    model.compile(d_optimizer=keras.optimizers.Adam(1e-3), g_optimizer=keras.optimizers.Adam(1e-3))
    return model


class NeedsOptimizers(GAN):
    """A GAN trainer compiled the plain way: its train_step needs d_optimizer/g_optimizer."""

    def compile(self, *args, **kwargs):
        keras.Model.compile(self, *args, **kwargs)


def needs_optimizers():
    model = NeedsOptimizers(name="needs_optimizers")
    model.compile(optimizer="adam")
    return model


class SkippedDecoder(FunctionStep):
    """Asks for every weight, but the loss never calls the decoder: it is a finding in fit too."""

    def __init__(self, **kwargs):
        keras.Model.__init__(self, **kwargs)
        self.body = _mlp("body", IMAGE, [5])
        self.head = _mlp("head", 5, [1])
        self.decoder = _mlp("decoder", 5, [IMAGE])

    def call(self, x):
        h = self.body(x)
        return self.head(h), self.decoder(h)

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((self.head(self.body(x)) - y) ** 2)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return {"loss": loss}


def skipped_decoder():
    model = SkippedDecoder(name="skipped_decoder")
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model(np.zeros((1, IMAGE), "float32"))
    return model


def _rng(seed: int = 0):
    return np.random.default_rng(seed)


def image_batch():
    """x: a batch of 'images' (what the discriminator takes)."""
    return _rng().standard_normal((BATCH, IMAGE)).astype("float32")


def pair_batch():
    """(x, y): images of domain X and domain Y."""
    rng = _rng()
    return (rng.standard_normal((BATCH, IMAGE)).astype("float32"),
            rng.standard_normal((BATCH, LABEL)).astype("float32"))


def labelled_batch():
    """(x, y) with class ids, for the distiller."""
    rng = _rng()
    return rng.standard_normal((BATCH, IMAGE)).astype("float32"), np.array([1, 3])


def regression_batch():
    """(x, y) with one target per row."""
    rng = _rng()
    return (rng.standard_normal((BATCH, IMAGE)).astype("float32"),
            rng.standard_normal((BATCH, 1)).astype("float32"))


#: factory name -> (factory, name of its batch function in this module)
TRAINERS = {
    "gan": (gan, "image_batch"),
    "gan_partial_generator": (gan_partial_generator, "image_batch"),
    "gan_stopped_generator": (gan_stopped_generator, "image_batch"),
    "wgan_gp": (wgan_gp, "image_batch"),
    "cycle_gan": (cycle_gan, "pair_batch"),
    "vae": (vae, "image_batch"),
    "distiller": (distiller, "labelled_batch"),
    "function_step": (function_step, "regression_batch"),
    "split_lists": (split_lists, "regression_batch"),
    "frozen_features": (frozen_features, "image_batch"),
    "lazy_gan": (lazy_gan, "image_batch"),
    "manual_sgd": (manual_sgd, "regression_batch"),
    "skipped_decoder": (skipped_decoder, "regression_batch"),
}

#: trainers with no input signature anywhere: only --data can give their batch
NEED_DATA = {"lazy_gan"}
#: how to create a lazy trainer's weights without training it (for a before/after comparison)
BUILD = {"lazy_gan": lambda model: (model.discriminator.build((None, IMAGE)),
                                    model.generator.build((None, LATENT)))}
