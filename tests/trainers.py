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


class EMATarget(keras.Model):
    """BYOL-style: the target network follows the online one by an EMA ``assign`` made before
    the update, so the target's biases (zero, like the online ones) move only from step 2."""

    tau = 0.9

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.online = _mlp("online", IMAGE, [5, LABEL])
        self.predictor = _mlp("predictor", LABEL, [LABEL])
        self.target = _mlp("target", IMAGE, [5, LABEL])

    def call(self, x):
        return self.predictor(self.online(x))

    def train_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        for target, online in zip(self.target.weights, self.online.weights):
            target.assign(self.tau * target + (1.0 - self.tau) * online)
        with tf.GradientTape() as tape:
            prediction = self.predictor(self.online(x + 0.1))
            loss = tf.reduce_mean((prediction - tf.stop_gradient(self.target(x))) ** 2)
        variables = self.online.trainable_variables + self.predictor.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return {"loss": loss}


def ema_target():
    model = EMATarget(name="ema_target")
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model(np.zeros((1, IMAGE), "float32"))
    for target, online in zip(model.target.weights, model.online.weights):
        target.assign(online + 0.5 if len(online.shape) > 1 else online)  # kernels differ
    return model


class Accumulating(FunctionStep):
    """Gradient accumulation: the gradients are summed into untracked tf.Variables and applied
    inside a tf.cond every ``every`` steps (the auxiliary head is never asked for)."""

    every = 2

    def build_accumulators(self):
        self.sums = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self._trained()]
        self.count = tf.Variable(0, trainable=False)

    def _trained(self):
        return self.body.trainable_variables + self.head.trainable_variables

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            out, _ = self(x, training=True)
            loss = tf.reduce_mean((out - y) ** 2)
        for total, grad in zip(self.sums, tape.gradient(loss, self._trained())):
            total.assign_add(grad)
        self.count.assign_add(1)

        def apply():
            self.optimizer.apply_gradients(zip([t / self.every for t in self.sums], self._trained()))
            for total in self.sums:
                total.assign(tf.zeros_like(total))
            return tf.constant(True)

        tf.cond(tf.equal(self.count % self.every, 0), apply, lambda: tf.constant(False))
        return {"loss": loss}


def accumulating(every: int = 2):
    model = Accumulating(name="accumulating")
    model.every = every
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model(np.zeros((1, IMAGE), "float32"))
    model.optimizer.build(model._trained())
    model.build_accumulators()
    return model


def accumulating_slowly():
    """Accumulation over more steps than gradcheck runs: said, never called not-trained."""
    return accumulating(every=50)


class LateInLoop(FunctionStep):
    """A weight read only from iteration 3 of a tf.while_loop that runs 2: eagerly never read,
    but fit's compiled step hands it exact zeros."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.late = keras.layers.Dense(5, name="late")

    def call(self, x):
        hidden = self.body(x)

        def body(i, h):
            h = tf.cond(i >= 3, lambda: tf.tanh(self.late(h)), lambda: h * 0.5)
            return i + 1, h

        _, hidden = tf.while_loop(lambda i, h: i < 2, body, [tf.constant(0), hidden])
        return self.head(hidden), self.aux(hidden)

    def train_step(self, data):
        x, y = data
        variables = [v for v in self.trainable_variables if not v.path.startswith("aux")]
        with tf.GradientTape() as tape:
            out, _ = self(x, training=True)
            loss = tf.reduce_mean((out - y) ** 2)
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return {"loss": loss}


def late_in_loop():
    model = LateInLoop(name="late_in_loop")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.late.build((None, 5))
    model(np.zeros((1, IMAGE), "float32"))
    return model


class MAML(FunctionStep):
    """One inner gradient step on fast weights, the meta-gradient through it (nested tapes)."""

    def train_step(self, data):
        x, y = data
        variables = self.body.trainable_variables + self.head.trainable_variables
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                out, _ = self(x, training=True)
                loss = tf.reduce_mean((out - y) ** 2)
            grads = inner.gradient(loss, variables)
            fast = [w - 0.1 * g for w, g in zip(variables, grads)]
            hidden = tf.tanh(x @ fast[0] + fast[1])
            meta = tf.reduce_mean((hidden @ fast[2] + fast[3] - y) ** 2)
        self.optimizer.apply_gradients(zip(outer.gradient(meta, variables), variables))
        return {"loss": meta}


def maml():
    model = MAML(name="maml")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model(np.zeros((1, IMAGE), "float32"))
    return model


class LossScaled(FunctionStep):
    """Mixed precision: float16 compute, a loss-scale optimizer, gradients unscaled by it."""

    def __init__(self, **kwargs):
        keras.Model.__init__(self, **kwargs)
        self.body = keras.layers.Dense(5, activation="tanh", dtype="mixed_float16", name="body")
        self.head = keras.layers.Dense(1, dtype="mixed_float16", name="head")
        self.aux = keras.layers.Dense(1, dtype="mixed_float16", name="aux")

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            out, _ = self(x, training=True)
            loss = tf.reduce_mean((tf.cast(out, "float32") - y) ** 2)
            scaled = self.optimizer.scale_loss(loss)
        variables = self.body.trainable_variables + self.head.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return {"loss": loss}


def loss_scaled():
    model = LossScaled(name="loss_scaled")
    model.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3)))
    model(np.zeros((1, IMAGE), "float32"))
    return model


class ZeroAdapter(FunctionStep):
    """A LoRA-style adapter: B starts at zero, so A's gradient is zero until B has moved."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.lora_a = self.add_weight(shape=(IMAGE, 2), initializer="glorot_uniform", name="lora_a")
        self.lora_b = self.add_weight(shape=(2, 5), initializer="zeros", name="lora_b")

    def call(self, x):
        hidden = self.body(x) + (x @ self.lora_a) @ self.lora_b
        return self.head(hidden), self.aux(hidden)

    def train_step(self, data):
        x, y = data
        variables = [*self.body.trainable_variables, *self.head.trainable_variables,
                     self.lora_a, self.lora_b]
        with tf.GradientTape() as tape:
            out, _ = self(x, training=True)
            loss = tf.reduce_mean((out - y) ** 2)
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return {"loss": loss}


def zero_adapter():
    model = ZeroAdapter(name="zero_adapter")
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
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
    "ema_target": (ema_target, "image_batch"),
    "accumulating": (accumulating, "regression_batch"),
    "late_in_loop": (late_in_loop, "regression_batch"),
    "maml": (maml, "regression_batch"),
    "loss_scaled": (loss_scaled, "regression_batch"),
    "zero_adapter": (zero_adapter, "regression_batch"),
}

#: trainers with no input signature anywhere: only --data can give their batch
NEED_DATA = {"lazy_gan"}
#: how to create a lazy trainer's weights without training it (for a before/after comparison)
BUILD = {"lazy_gan": lambda model: (model.discriminator.build((None, IMAGE)),
                                    model.generator.build((None, LATENT)))}
