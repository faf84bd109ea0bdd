"""The models the benchmark runs on, built at run time (nothing large is committed)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = Path(__file__).resolve().parent.parent

#: the five small models of the one-call-vs-five-calls comparison (sample_models/build_samples.py)
SMALL = ("clean", "two_heads", "frozen_encoder", "argmax_lookup", "rounded_and_cast")


def resnet50():
    import keras

    model = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def bert_base_tagger(seq_len: int = 128, num_tags: int = 9):
    """BERT-base (12 layers, hidden 768) with a token-classification head on the sequence output.

    The pooler is unused, so its variables are unconnected (expected).
    """
    import keras
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=30522, num_layers=12, num_heads=12, hidden_dim=768,
        intermediate_dim=3072, max_sequence_length=512)
    inputs = {
        "token_ids": keras.Input((seq_len,), dtype="int32", name="token_ids"),
        "segment_ids": keras.Input((seq_len,), dtype="int32", name="segment_ids"),
        "padding_mask": keras.Input((seq_len,), dtype="int32", name="padding_mask"),
    }
    sequence = backbone(inputs)["sequence_output"]
    tags = keras.layers.Dense(num_tags, name="tagger")(sequence)
    model = keras.Model(inputs, tags, name="bert_base_tagger")
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def deep_residual_mlp(blocks: int, width: int = 8):
    """A generated deep model: a chain of residual Dense blocks (about 6 forward ops per block)."""
    import keras

    x0 = keras.Input((width,), name="features")
    x = x0
    for i in range(blocks):
        h = keras.layers.Dense(width, activation="relu", name=f"d{i}")(x)
        x = keras.layers.Add(name=f"add{i}")([x, h])
    out = keras.layers.Dense(1, name="head")(x)
    return keras.Model(x0, out, name=f"deep_{blocks}")


#: the -j 2 vs -j 1 comparison: twelve keras.applications architectures at 128x128, fresh weights
ZOO = ("MobileNetV2", "MobileNetV3Small", "EfficientNetB0", "EfficientNetV2B0", "DenseNet121",
       "ResNet50", "ResNet50V2", "InceptionV3", "Xception", "NASNetMobile", "ConvNeXtTiny",
       "DenseNet169")


def application(name: str):
    """A keras.applications model without downloaded weights, compiled for its classifier."""
    import keras

    model = getattr(keras.applications, name)(weights=None, input_shape=(128, 128, 3),
                                              classes=10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def small(name: str):
    sys.path.insert(0, str(ROOT / "sample_models"))
    import build_samples

    return getattr(build_samples, name)()


def build(out: Path, which: list[str]) -> None:
    """Save the requested models into ``out`` (skipping files that exist); print build times."""
    import keras

    out.mkdir(parents=True, exist_ok=True)
    builders = {"resnet50": resnet50, "bert_base_tagger": bert_base_tagger}
    builders.update({name: (lambda n=name: small(n)) for name in SMALL})
    builders.update({f"zoo_{name}": (lambda n=name: application(n)) for name in ZOO})
    for name in which:
        path = out / f"{name}.keras"
        if path.exists():
            continue
        keras.utils.set_random_seed(0)
        start = time.perf_counter()
        model = builders[name]()
        model.save(path)
        print(f"built {path} ({path.stat().st_size / 1e6:.1f} MB) in "
              f"{time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    build(Path(sys.argv[1]), sys.argv[2:])
