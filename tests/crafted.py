"""Builders of the second sweep's hostile model files, made at test time from tiny real models.

Each builder writes one file (or directory) an attacker could put in a pull request and returns
its path.  Every file is small on disk (a few KB to a few MB): what makes it hostile is what it
declares.  ``tests/test_hostile_second.py`` runs them; nothing here is committed as a binary.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

#: A NumPy array Keras' deserializer builds from ~100 bytes of JSON: eight elements of a
#: subarray dtype of 16000 x 16000 doubles, 15.3 GiB.
NUMPY_BOMB = {"class_name": "__numpy__",
              "config": {"value": [0] * 8, "dtype": "(16000,16000)f8"}}


def keras_api():
    from gradcheck.api import quiet_tensorflow

    quiet_tensorflow()
    import keras

    return keras


def tiny_model(name: str = "base", *, activation=None):
    """features(4) -> hidden Dense(4) -> head Dense(2), compiled with mse."""
    keras = keras_api()
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(4, name="hidden", activation=activation)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(hidden), name=name)
    model.compile(loss="mse")
    return model


def edit_archive(base: Path, target: Path, edit=None, *, extra: dict[str, bytes] | None = None,
                 compress: int = zipfile.ZIP_STORED) -> Path:
    """Copy a .keras archive, editing its config.json (a function of the parsed JSON)."""
    with zipfile.ZipFile(base) as source, zipfile.ZipFile(target, "w", compress) as out:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "config.json" and edit is not None:
                data = json.dumps(edit(json.loads(data))).encode()
            out.writestr(info.filename, data)
        for name, data in (extra or {}).items():
            out.writestr(name, data)
    return target


def layer(config: dict, name: str) -> dict:
    return next(item for item in config["config"]["layers"] if item["name"] == name)


# --- config objects that allocate -----------------------------------------------------------


def lambda_arguments_bomb(folder: Path) -> Path:
    """A safe Lambda (a Keras function, no bytecode) whose ``arguments`` hold a NumPy bomb."""
    keras = keras_api()
    inputs = keras.Input((4,), name="features")
    scaled = keras.layers.Lambda(keras.activations.relu, arguments={"threshold": 0.0},
                                 name="scale")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(scaled))
    base = folder / "lambda_args_base.keras"
    model.save(base)

    def edit(config):
        layer(config, "scale")["config"]["arguments"] = {"threshold": NUMPY_BOMB}
        return config

    return edit_archive(base, folder / "lambda_args_bomb.keras", edit)


def loss_weights_bomb(base: Path, folder: Path, dtype: object = "(16000,16000)f8") -> Path:
    """``compile_config.loss_weights`` is a NumPy array of a huge dtype."""
    def edit(config):
        bomb = json.loads(json.dumps(NUMPY_BOMB))
        bomb["config"]["dtype"] = dtype
        config["compile_config"]["loss_weights"] = bomb
        return config

    name = "loss_weights_bomb.keras" if dtype == "(16000,16000)f8" else "void_dtype_bomb.keras"
    return edit_archive(base, folder / name, edit)


def node_kwargs_bomb(base: Path, folder: Path) -> Path:
    """A Functional node's call kwargs hold a NumPy bomb (deserialized with the graph)."""
    def edit(config):
        layer(config, "head")["inbound_nodes"][0]["kwargs"] = {"unused": NUMPY_BOMB}
        return config

    return edit_archive(base, folder / "node_kwargs_bomb.keras", edit)


def lambda_activation(base: Path, folder: Path) -> Path:
    """Python bytecode as a Dense layer's activation (not a Lambda layer)."""
    def edit(config):
        layer(config, "hidden")["config"]["activation"] = {
            "class_name": "__lambda__", "config": {"value": "YQ==", "code": "YQ==",
                                                   "defaults": None, "closure": None}}
        return config

    return edit_archive(base, folder / "lambda_activation.keras", edit)


def lambda_loss(base: Path, folder: Path) -> Path:
    """Python bytecode as the compiled loss."""
    def edit(config):
        config["compile_config"]["loss"] = {"class_name": "__lambda__",
                                            "config": {"value": "YQ=="}}
        return config

    return edit_archive(base, folder / "lambda_loss.keras", edit)


def h5_training_config_bomb(folder: Path) -> Path:
    """A legacy .h5 whose training_config's loss_weights are a NumPy bomb."""
    import h5py

    path = folder / "training_bomb.h5"
    tiny_model().save(path)
    with h5py.File(path, "a") as handle:
        training = json.loads(handle.attrs["training_config"])
        training["loss_weights"] = NUMPY_BOMB
        handle.attrs["training_config"] = json.dumps(training)
    return path


def h5_long_vlen_config(folder: Path, size: int = 40 * 2**20) -> Path:
    """A legacy .h5 whose model_config is a variable-length string of ``size`` bytes: HDF5
    reports the attribute's storage as 16 bytes (the heap reference)."""
    import h5py

    path = folder / "long_config.h5"
    tiny_model().save(path)
    with h5py.File(path, "a") as handle:
        handle.attrs["model_config"] = " " * (size - 2) + "{}"
    return path


# --- tensors the step would hold ------------------------------------------------------------


def repeat_vector(folder: Path) -> Path:
    """Dense(8) -> RepeatVector(400_000_000): about 100 parameters, 24 GiB of activations."""
    keras = keras_api()
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(8, name="hidden")(inputs)
    repeated = keras.layers.RepeatVector(400_000_000, name="repeat")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(repeated))
    path = folder / "repeat_vector.keras"
    model.save(path)
    return path


def upsampling(folder: Path, *, dynamic: bool = False) -> Path:
    """UpSampling2D(size=(5000, 5000)) on an 8x8 image (or an image of unknown size)."""
    keras = keras_api()
    inputs = keras.Input((None, None, 1) if dynamic else (8, 8, 1), name="image")
    big = keras.layers.UpSampling2D(size=(5000, 5000), name="upsample")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(big))
    path = folder / ("upsampling_dynamic.keras" if dynamic else "upsampling.keras")
    model.save(path)
    return path


def long_attention(folder: Path) -> Path:
    """MultiHeadAttention over 100 000 steps: a 6 MiB input, 1.2 TiB of attention scores."""
    keras = keras_api()
    sequence = keras.Input((100_000, 8), name="sequence")
    attended = keras.layers.MultiHeadAttention(num_heads=4, key_dim=8, name="mha")(sequence,
                                                                                  sequence)
    model = keras.Model(sequence, keras.layers.Dense(1, name="head")(attended))
    path = folder / "long_attention.keras"
    model.save(path)
    return path


# --- directory-form models and what they hold ---------------------------------------------------


def directory_model(folder: Path, name: str, *, vocabulary: bool = False) -> Path:
    """A model saved with ``zipped=False``; with a StringLookup, it has assets/ files."""
    keras = keras_api()
    if vocabulary:
        words = keras.Input((3,), dtype="string", name="words")
        lookup = keras.layers.StringLookup(name="lookup")
        lookup.adapt(["a", "b", "c"])  # adapted, not given: the vocabulary is an asset file
        ids = lookup(words)
        embedded = keras.layers.Embedding(8, 2, name="embed")(ids)
        model = keras.Model(words, keras.layers.Dense(1, name="head")(embedded))
    else:
        model = tiny_model()
    # Keras refuses to save a directory named *.keras, and writes assets only to an absolute one
    saved = folder.resolve() / f"{name}.saving"
    model.save(saved, zipped=False)
    return saved.rename(folder / name)


def vocabulary_archive(path: Path) -> Path:
    """A zipped model with an asset file: an adapted IntegerLookup's vocabulary."""
    keras = keras_api()
    ids = keras.Input((3,), dtype="int32", name="ids")
    lookup = keras.layers.IntegerLookup(name="lookup")
    lookup.adapt([1, 2, 3, 4])
    embedded = keras.layers.Embedding(8, 2, name="embed")(lookup(ids))
    keras.Model(ids, keras.layers.Dense(1, name="head")(embedded)).save(path)
    return path


def directory_with(folder: Path, name: str, member: str, kind: str, target: str = "/dev/zero"
                   ) -> Path:
    """A directory model whose ``member`` is replaced by a symlink to ``target`` or a FIFO."""
    vocabulary = member == "vocabulary.txt"
    path = directory_model(folder, name, vocabulary=vocabulary)
    victim = path / ("assets/layers/string_lookup/vocabulary.txt" if vocabulary else member)
    if not victim.exists():
        raise AssertionError(f"{member} is not in the saved directory: {os.listdir(path)}")
    victim.unlink()
    if kind == "symlink":
        victim.symlink_to(target)
    else:
        os.mkfifo(victim)
    return path


# --- the disk ---------------------------------------------------------------------------------


def sparse_big_weights(folder: Path, units: int = 24_300_000) -> Path:
    """A .keras declaring ``(4 + 1 + 2) * units * 4`` bytes (680 MB) of weights in a few KB:
    chunked datasets never written.  Keras would extract its weights next to the input."""
    import h5py

    small = folder / "small.keras"
    tiny_model().save(small)
    weights = folder / "sparse_weights.h5"
    with zipfile.ZipFile(small) as archive:
        weights.write_bytes(archive.read("model.weights.h5"))
    shapes = {"layers/dense/vars/0": (4, units), "layers/dense/vars/1": (units,),
              "layers/dense_1/vars/0": (units, 2)}
    with h5py.File(weights, "a") as handle:
        for name, shape in shapes.items():
            del handle[name]
            handle.create_dataset(name, shape=shape, dtype="f4",
                                  chunks=tuple(min(d, 65536) for d in shape))

    def edit(config):
        layer(config, "hidden")["config"]["units"] = units
        layer(config, "head")["build_config"] = {"input_shape": [None, units]}
        config["compile_config"] = None  # no optimizer slots: the weights alone
        return config

    target = folder / "declares_680mb.keras"
    with zipfile.ZipFile(small) as source, zipfile.ZipFile(target, "w") as out:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "config.json":
                data = json.dumps(edit(json.loads(data))).encode()
            elif info.filename == "model.weights.h5":
                data = weights.read_bytes()
            out.writestr(info.filename, data)
    small.unlink()
    weights.unlink()
    return target


def many_assets(base: Path, folder: Path, count: int = 40, size: int = 60 * 2**20) -> Path:
    """``count`` deflated assets/ members of ``size`` zeros: each under the bomb floor."""
    target = folder / "many_assets.keras"
    edit_archive(base, target)
    zeros = bytes(size)
    with zipfile.ZipFile(target, "a", zipfile.ZIP_DEFLATED) as archive:
        for index in range(count):
            archive.writestr(f"assets/layer_{index}/blob.bin", zeros)
    return target


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target
