"""The checks that refuse a model file before Keras reads or allocates, one at a time, in process.

``test_hostile_second.py`` runs the crafted files through the command; here each check meets the
general case (every way a config declares an array, HDF5 header layouts, symlinks inside and
outside a model folder, nested models) and the ordinary models it must let through.
"""

from __future__ import annotations

import os

import crafted
import pytest

from gradcheck.budget import MemoryBudget, in_force
from gradcheck.load.places import walk_places
from gradcheck.problems import ErrorKind, SourceProblem

pytest.importorskip("tensorflow")

# --- where a value sits ------------------------------------------------------------------------


def test_a_place_is_spelled_from_the_nearest_named_object():
    config = {"class_name": "Functional", "config": {"name": "m", "layers": [
        {"class_name": "Dense", "config": {"name": "d", "activation": {"class_name": "X"}},
         "inbound_nodes": [{"kwargs": {"k": {"class_name": "__numpy__"}}}]}]},
        "compile_config": {"loss_weights": [{"class_name": "__tensor__"}]}}
    places = {place.node.get("class_name"): place.describe() for place in walk_places(config)
              if place.node.get("class_name") in ("X", "__numpy__", "__tensor__")}
    assert places == {"X": "`activation` of Dense 'd'",
                      "__numpy__": "`inbound_nodes[0].kwargs.k` of Dense 'd'",
                      "__tensor__": "`compile_config.loss_weights[0]` of Functional 'm'"}


# --- arrays a config declares -------------------------------------------------------------------


@pytest.mark.parametrize(("node", "size"), [
    ({"class_name": "__numpy__", "config": {"value": [0] * 8, "dtype": "(16000,16000)f8"}},
     8 * 16000 * 16000 * 8),
    ({"class_name": "__numpy__", "config": {"value": [[1, 2], [3, 4]], "dtype": "V1000000"}},
     4 * 10**6),
    ({"class_name": "__numpy__", "config": {"value": [1], "dtype": {
        "names": ["a"], "formats": ["(1000,1000)f4"]}}}, 4 * 10**6),
    ({"class_name": "__numpy__", "config": {"value": ["ab", "abcd"], "dtype": "U"}}, 2 * 4 * 4),
    ({"class_name": "__numpy__", "config": {"value": [1, 2], "dtype": "not a dtype"}}, 0),
    ({"class_name": "__tensor__", "config": {"value": [[1.0] * 3] * 2, "dtype": "float64"}}, 48),
    ({"class_name": "CompositeTensor", "tensors": [["int32", [1, 2, 3]], ["float16", [1.0]]]},
     3 * 4 + 2),
])
def test_every_array_a_config_can_declare_is_sized_without_building_it(node, size):
    from gradcheck.load.declared import _declared_arrays

    assert sum(found[0] for found in _declared_arrays(node)) == size


def test_config_arrays_are_charged_and_refused_past_the_budget_by_place():
    from gradcheck.load.declared import charge_config_arrays

    small = {"class_name": "__numpy__", "config": {"value": [0] * 10, "dtype": "f8"}}
    config = {"class_name": "Functional", "config": {"name": "m"},
              "compile_config": {"loss_weights": small}}
    with in_force(MemoryBudget(1000)) as budget:
        charge_config_arrays("m.keras", config)
        assert budget.used == 2 * 80  # the array and the copy a second deserialization makes
        config["compile_config"]["loss_weights"] = {"class_name": "__numpy__", "config": {
            "value": [0], "dtype": "(100,100)f8"}}
        with pytest.raises(SourceProblem) as refused:
            charge_config_arrays("m.keras", config)
    assert refused.value.kind is ErrorKind.TOO_LARGE
    assert "`compile_config.loss_weights` of Functional 'm'" in refused.value.message
    assert "156.2 KiB when Keras rebuilds the model" in refused.value.message


@pytest.mark.parametrize(("where", "words"), [
    ({"metrics": [{"class_name": "__lambda__", "config": {}}]}, "`compile_config.metrics[0]`"),
    ({"loss": {"output": {"class_name": "__lambda__", "config": {}}}},
     "`compile_config.loss.output`"),
])
def test_bytecode_anywhere_is_refused_as_what_it_is(where, words):
    from gradcheck.load.safety import check_no_lambda_bytecode

    config = {"class_name": "Functional", "config": {"name": "m"}, "compile_config": where}
    with pytest.raises(SourceProblem) as refused:
        check_no_lambda_bytecode("m.keras", config)
    assert refused.value.kind is ErrorKind.UNSAFE_LAMBDA
    assert words in refused.value.message and "Lambda layer" not in refused.value.message


# --- HDF5 attributes by their real length -------------------------------------------------------


@pytest.mark.parametrize("libver", ["earliest", "latest"])  # object header versions 1 and 2
def test_variable_length_attributes_are_measured_by_what_they_hold(tmp_path, libver):
    import h5py

    from gradcheck.load.h5meta import check_attributes

    path = tmp_path / "model.h5"
    with h5py.File(path, "w", libver=libver) as handle:
        handle.attrs["model_config"] = "x" * 5000
        handle.create_group("model_weights/dense").attrs["names"] = ["a" * 3000, "b" * 3000]
    with h5py.File(path, "r") as handle:
        assert handle.attrs.get_id("model_config").get_storage_size() == 16  # what HDF5 says
        check_attributes(handle, path, "m.h5", 6000)
        with pytest.raises(SourceProblem) as refused:
            check_attributes(handle, path, "m.h5", 4999)
    assert refused.value.kind is ErrorKind.TOO_LARGE
    assert "model_config attribute takes 4.9 KiB" in refused.value.message
    with h5py.File(path, "r") as handle, pytest.raises(SourceProblem) as refused:
        check_attributes(handle, path, "m.h5", 5500)  # the two names hold 6000 together
    assert "names attribute of /model_weights/dense takes 5.9 KiB" in refused.value.message


def test_attributes_in_dense_storage_pass_only_in_a_small_file(tmp_path):
    import h5py

    from gradcheck.load.h5meta import check_attributes

    path = tmp_path / "dense.h5"
    with h5py.File(path, "w", libver="latest") as handle:
        for index in range(20):  # past 8 attributes, HDF5 moves them to a fractal heap
            handle.attrs[f"a{index}"] = "x" * 100
    size = path.stat().st_size
    with h5py.File(path, "r") as handle:
        check_attributes(handle, path, "d.h5", size)
        with pytest.raises(SourceProblem) as refused:
            check_attributes(handle, path, "d.h5", size - 1)
    assert "cannot be checked without reading it" in refused.value.message


def test_a_weights_dataset_of_variable_length_values_is_refused_unread(tmp_path):
    """Its size is not in the metadata: references to one heap object expand when read."""
    import h5py

    from gradcheck.load.archive import declared_dataset_bytes

    path = tmp_path / "weights.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("layers/dense/vars/0", data=[[1.0, 2.0]], dtype="f4")
        handle.create_dataset("layers/dense/vars/names", data=["a", "b"], dtype="S1")
    with h5py.File(path, "r") as handle:
        assert declared_dataset_bytes(handle, "w.h5") == 2 * 4 + 2
    with h5py.File(path, "a") as handle:
        handle.create_dataset("layers/dense/vars/1", shape=(10,), dtype=h5py.string_dtype())
    with h5py.File(path, "r") as handle, pytest.raises(SourceProblem) as refused:
        declared_dataset_bytes(handle, "w.h5")
    assert refused.value.kind is ErrorKind.CORRUPT and "'layers/dense/vars/1'" in refused.value.message


# --- files of a directory model ----------------------------------------------------------------


def test_a_model_folder_holds_regular_files_and_symlinks_inside_it(tmp_path):
    from gradcheck.load.members import ASSETS_LIMIT, check_model_directory

    model = tmp_path / "model"
    (model / "assets" / "layer").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "assets" / "layer" / "vocabulary.txt").write_text("a\nb\n")
    (model / "assets" / "layer" / "alias.txt").symlink_to("vocabulary.txt")
    check_model_directory(model, "model")

    cases = {"/etc/hostname": ErrorKind.UNSAFE_CONTENT, "/dev/null": ErrorKind.UNSAFE_CONTENT,
             "missing.txt": ErrorKind.CORRUPT, ".": ErrorKind.NOT_A_FILE}
    for target, kind in cases.items():
        (model / "assets" / "layer" / "alias.txt").unlink()
        (model / "assets" / "layer" / "alias.txt").symlink_to(target)
        with pytest.raises(SourceProblem) as refused:
            check_model_directory(model, "model")
        assert refused.value.kind is kind, (target, refused.value.message)
    (model / "assets" / "layer" / "alias.txt").unlink()
    os.mkfifo(model / "assets" / "layer" / "pipe")
    with pytest.raises(SourceProblem) as refused:
        check_model_directory(model, "model")
    assert refused.value.kind is ErrorKind.NOT_A_FILE and "named pipe" in refused.value.message
    (model / "assets" / "layer" / "pipe").unlink()
    with (model / "assets" / "big.bin").open("wb") as sparse:
        sparse.truncate(ASSETS_LIMIT + 1)  # a hole: nothing on disk, all of it read by a layer
    with pytest.raises(SourceProblem) as refused:
        check_model_directory(model, "model")
    assert refused.value.kind is ErrorKind.TOO_LARGE


# --- loading with the stored weights -----------------------------------------------------------


def test_real_weights_are_read_in_place_and_assets_extracted_only_into_our_tmp(
        tmp_path, monkeypatch):
    import tempfile

    from keras.src.saving import saving_lib

    from gradcheck.load import load_source

    def never(model):  # Keras' own loader asks this before extracting beside the input
        raise AssertionError("Keras' extracting loader was used")

    inputs, scratch = tmp_path / "in", tmp_path / "scratch"
    inputs.mkdir()
    scratch.mkdir()
    crafted.vocabulary_archive(inputs / "vocab.keras")
    crafted.directory_model(inputs, "folder.keras", vocabulary=True)
    before = sorted(p.name for p in inputs.rglob("*"))
    monkeypatch.setattr(saving_lib, "is_memory_sufficient", never)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    extracted, original_get = [], saving_lib.DiskIOStore.get

    def get(self, path):  # where the layers read their assets from
        extracted.append(self.working_dir)
        return original_get(self, path)

    monkeypatch.setattr(saving_lib.DiskIOStore, "get", get)
    zipped = load_source(str(inputs / "vocab.keras"), custom_objects={}, safe_mode=True)
    folder = load_source(str(inputs / "folder.keras"), custom_objects={}, safe_mode=True)
    assert len(zipped.get_layer("lookup").get_vocabulary()) == 5  # [UNK] and 4 ids
    assert sorted(folder.get_layer("lookup").get_vocabulary()) == ["[UNK]", "a", "b", "c"]
    assert extracted[0].startswith(str(scratch)) and extracted[1].startswith(str(inputs))
    assert sorted(p.name for p in inputs.rglob("*")) == before
    assert list(scratch.iterdir()) == []


# --- activations --------------------------------------------------------------------------------


def test_a_nested_model_is_sized_with_the_outer_batch_shapes():
    from gradcheck.load.activations import estimate

    keras = crafted.keras_api()
    inner_in = keras.Input((None, 4), name="tokens")
    inner = keras.Model(inner_in, keras.layers.Dense(16, name="wide")(inner_in), name="inner")
    outer_in = keras.Input((1000, 4), name="x")
    model = keras.Model(outer_in, keras.layers.Dense(1, name="out")(inner(outer_in)))
    sizes = {a.layer: (a.shape, a.size) for a in estimate(model, 2)}
    assert sizes["'wide' (Dense)"] == ((2, 1000, 16), 2 * 1000 * 16 * 4)
    assert sizes["'out' (Dense)"] == ((2, 1000, 1), 2 * 1000 * 4)


def test_a_tensor_inside_a_layer_is_seen_and_identical_layers_are_traced_once(monkeypatch):
    from gradcheck.load import activations

    keras = crafted.keras_api()
    sequence = keras.Input((64, 8), name="sequence")
    x = sequence
    for index in range(3):
        x = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name=f"mha{index}")(x, x)
    model = keras.Model(sequence, keras.layers.Add(name="sum")([x, sequence]))
    traced, original = [], activations._largest_in_graph
    monkeypatch.setattr(activations, "_largest_in_graph",
                        lambda *args: traced.append(args[0].name) or original(*args))
    found = activations.estimate(model, 2)
    inside = [(a.layer, a.shape) for a in found if a.inside]
    assert inside == [(f"'mha{i}' (MultiHeadAttention)", (2, 2, 64, 64)) for i in range(3)]
    assert traced == ["mha0"]  # the same configuration on the same shapes: traced once
    assert [a.layer for a in found if not a.inside][-1] == "'sum' (Add)"  # a merge: not traced


def test_ordinary_big_models_fit_the_budget_of_a_6_gib_address_space():
    """ResNet50 at 224x224 (the benchmark's) is not refused where the sweep runs."""
    from gradcheck.budget import STEP_COPIES_PER_WEIGHT, WORKER_ADDRESS_SPACE, variable_bytes
    from gradcheck.load.activations import estimate

    keras = crafted.keras_api()
    model = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))
    outputs = estimate(model, 2)
    activations = sum(a.size for a in outputs) + 2 * max(a.size for a in outputs)
    weights = sum(variable_bytes(v.shape, v.dtype) for v in model.weights)
    budget = (6 * 2**30 - WORKER_ADDRESS_SPACE) * 3 // 4
    assert len(outputs) == len(model.layers) - 1 and 250 * 2**20 < activations < 400 * 2**20
    assert weights * STEP_COPIES_PER_WEIGHT + activations < budget / 2
