"""Rebuild the committed sample models: python sample_models/build_samples.py

Each model is a few KB and shows one way a variable can fail to learn.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import keras  # noqa: E402
from custom_layers import GatedDense  # noqa: E402
from factories import actor_critic  # noqa: E402


def clean():
    """A small CNN classifier: every variable learns."""
    image = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(image)
    x = keras.layers.BatchNormalization(name="norm")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    probs = keras.layers.Dense(5, activation="softmax", name="classifier")(x)
    model = keras.Model(image, probs, name="clean_cnn")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def unused_weight():
    """A custom layer creates a gate weight in build() and never reads it (cause: unused)."""
    features = keras.Input((8,), name="features")
    x = GatedDense(16, name="gated")(features)
    out = keras.layers.Dense(1, name="head")(x)
    model = keras.Model(features, out, name="unused_weight")
    model.compile(optimizer="adam", loss="mse")
    return model


def two_heads():
    """An actor-critic where only the actor has a loss (cause: detached)."""
    return actor_critic(name="two_heads")


def frozen_encoder():
    """stop_gradient between encoder and head (cause: blocked at StopGradient)."""
    tokens = keras.Input((12,), name="features")
    encoded = keras.layers.Dense(16, activation="relu", name="encoder")(tokens)
    frozen = keras.ops.stop_gradient(encoded)
    out = keras.layers.Dense(2, name="head")(frozen)
    model = keras.Model(tokens, out, name="frozen_encoder")
    model.compile(optimizer="adam", loss="mse")
    return model


def argmax_lookup():
    """A router picks an embedding row with argmax (cause: blocked at ArgMax)."""
    features = keras.Input((6,), name="features")
    logits = keras.layers.Dense(10, name="router")(features)
    choice = keras.ops.argmax(logits, axis=-1)
    row = keras.layers.Embedding(10, 4, name="codebook")(choice)
    out = keras.layers.Dense(1, name="head")(row)
    model = keras.Model(features, out, name="argmax_lookup")
    model.compile(optimizer="adam", loss="mse")
    return model


def rounded_and_cast():
    """A quantizer rounds, another path casts to int (cause: blocked at Round / Cast)."""
    features = keras.Input((6,), name="features")
    scale = keras.layers.Dense(6, name="scale")(features)
    rounded = keras.ops.round(scale)
    bucket = keras.layers.Dense(3, name="bucketizer")(features)
    bucket_ids = keras.ops.cast(keras.ops.abs(bucket), "int32")
    embedded = keras.layers.Flatten(name="flat")(keras.layers.Embedding(50, 2, name="buckets")(bucket_ids))
    out = keras.layers.Dense(1, name="head")(keras.layers.Concatenate(name="join")([rounded, embedded]))
    model = keras.Model(features, out, name="rounded_and_cast")
    model.compile(optimizer="adam", loss="mse")
    return model


SAMPLES = {
    "clean.keras": clean,
    "unused_weight.keras": unused_weight,
    "two_heads.keras": two_heads,
    "frozen_encoder.keras": frozen_encoder,
    "argmax_lookup.keras": argmax_lookup,
    "rounded_and_cast.keras": rounded_and_cast,
}


def main(out_dir: Path = HERE) -> None:
    keras.utils.set_random_seed(0)
    for name, build in SAMPLES.items():
        build().save(out_dir / name)
    clean().save(out_dir / "clean_legacy.h5")
    print(f"wrote {len(SAMPLES) + 1} models to {out_dir}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
