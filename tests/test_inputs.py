"""The synthetic-input search and ``--input``: shapes and values the forward pass accepts.

Each model here refuses gradcheck's default batch for one reason the search has a rule for; the
tests check the batch gradcheck settled on, and that its verdicts equal the eager tape's on it.
"""

from __future__ import annotations

import pytest
from tape_truth import assert_matches_tape

pytest.importorskip("tensorflow")


@pytest.fixture(scope="session")
def keras():
    from gradcheck.api import quiet_tensorflow

    quiet_tensorflow()
    import keras

    return keras


def analyze(model, **options):
    from gradcheck.api import Options, analyze_model

    return analyze_model(model, Options(**options))


def used(report) -> dict:
    return {u.name: u for u in report.inputs}


# --- --input syntax ------------------------------------------------------------------------------

def test_override_syntax_keeps_dtype_unset_and_reads_values():
    from gradcheck.plans.inputs import parse_override

    assert parse_override("ids=16").dtype is None
    spec = parse_override("ids=16:int32@0..99")
    assert (spec.shape, spec.dtype, spec.values) == ((16,), "int32", (0.0, 99.0))
    assert parse_override("scale=@0.5").values == (0.5, 0.5)
    assert parse_override("x=4,?:float32@-1.5..2").values == (-1.5, 2.0)
    for bad in ("ids=16@9..1", "ids=16:int33", "ids=16@a..b", "ids"):
        with pytest.raises(ValueError):
            parse_override(bad)


@pytest.fixture(scope="session")
def token_model(keras):
    """Integer ids into a 50-row table with id 0 masked: a float id would be truncated to 0."""
    ids = keras.Input((None,), dtype="int32", name="ids")
    x = keras.layers.Embedding(50, 4, mask_zero=True)(ids)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(ids, keras.layers.Dense(2)(x))


def test_input_without_dtype_keeps_the_models_integer_dtype(token_model):
    report = analyze(token_model, inputs=("ids=16",))
    ids = used(report)["ids"]
    assert (ids.shape, ids.dtype) == ((2, 16), "int32")
    assert ids.low >= 1 and ids.high < 50  # valid ids, not the mask slot
    assert {v.status.value for v in report.variables} == {"connected"}


def test_input_values_are_used_as_given(token_model):
    ranged = used(analyze(token_model, inputs=("ids=12@3..5",)))["ids"]
    assert ranged.shape == (2, 12) and 3 <= ranged.low <= ranged.high <= 5
    constant = used(analyze(token_model, inputs=("ids=4@7",)))["ids"]
    assert (constant.low, constant.high) == (7, 7)


def test_only_the_mask_id_makes_the_embedding_gradient_zero(token_model):
    # the bug the dtype fix is about: ids 0 only (the padding slot) teach the table nothing
    report = analyze(token_model, inputs=("ids=8@0",))
    table = next(v for v in report.variables if "embedding" in v.path)
    assert table.status.value != "connected"
    assert_matches_tape_with(report, token_model, inputs=("ids=8@0",))


def assert_matches_tape_with(report, model, *, inputs):
    """The tape on exactly the batch gradcheck used for these ``--input`` overrides."""
    from modelgen import tape_truth

    from gradcheck.options import Options
    from gradcheck.plans.batches import synthetic_batch
    from gradcheck.plans.choice import loss_plan

    batch = synthetic_batch(model, Options(inputs=inputs))
    loss = loss_plan(model, Options()).loss(model, Options(), training=True, data=None)
    truth = tape_truth(model, batch.value, loss.compute)
    assert [(v.none, v.zero) for v in report.variables] == [(t.none, t.zero) for t in truth]


# --- the search ------------------------------------------------------------------------------------

def test_raw_audio_length_grows_until_a_wide_strided_conv_has_output(keras):
    samples = keras.Input((None, 1), name="samples")
    x = keras.layers.Conv1D(4, 127, strides=64)(samples)
    x = keras.layers.Conv1D(4, 3, strides=2)(x)
    model = keras.Model(samples, keras.layers.GlobalAveragePooling1D()(x))
    report = analyze(model)
    assert report.ok, report.error
    # 127 + 2 x 64 = 255 samples give the second conv one output: the first length that fits
    assert used(report)["samples"].shape == (2, 256, 1)
    assert any("input search" in note for note in report.notes)
    assert_matches_tape(report, model)


def test_a_grown_encoder_leaves_the_decoder_short(keras):
    audio = keras.Input((None, 1), name="encoder_audio")
    tokens = keras.Input((None,), dtype="int32", name="decoder_ids")
    x = keras.layers.Conv1D(4, 100, strides=50)(audio)
    memory = keras.layers.GlobalAveragePooling1D()(x)
    y = keras.layers.Embedding(10, 4)(tokens)
    out = y + keras.ops.expand_dims(memory, 1)
    model = keras.Model([audio, tokens], out)
    report = analyze(model)
    assert used(report)["encoder_audio"].shape == (2, 128, 1)  # a 100-wide conv
    assert used(report)["decoder_ids"].shape == (2, 8)  # grown alone: the ids stay short
    assert_matches_tape(report, model)


@pytest.fixture(scope="session")
def prompt_model(keras):
    """Image features plus one dense mask prompt at half the image size (20 of 40: a size no
    fixed list holds), and points whose count must agree with their labels'."""
    images = keras.Input((40, 40, 3), name="images")
    masks = keras.Input((None, None, None, 1), name="masks")
    points = keras.Input((None, 2), name="points")
    labels = keras.Input((None,), name="labels")
    boxes = keras.Input((None, 2, 2), name="boxes")
    features = keras.layers.Conv2D(1, 3, strides=2, padding="same")(images)  # 20 x 20
    mask = keras.layers.Reshape((20, 20, 1))(masks)  # count x height x width must be 400
    prompt = keras.layers.Dense(1)(points) * keras.ops.expand_dims(labels, -1)  # counts agree
    corners = keras.layers.Reshape((-1, 2))(boxes)
    prompt = keras.ops.concatenate([prompt, keras.layers.Dense(1)(corners)], axis=1)
    pooled = keras.ops.mean(features + mask, axis=(1, 2)) + keras.ops.mean(prompt, axis=1)
    return keras.Model({"images": images, "masks": masks, "points": points, "labels": labels,
                        "boxes": boxes}, pooled)


def test_prompt_counts_agree_and_mask_size_follows_the_image(prompt_model):
    report = analyze(prompt_model)
    assert report.ok, report.error
    inputs = used(report)
    assert inputs["masks"].shape == (2, 1, 20, 20, 1)
    assert inputs["points"].shape[1] == inputs["labels"].shape[1] == inputs["boxes"].shape[1]
    assert_matches_tape(report, prompt_model)


def test_position_indices_stay_inside_the_sequence_they_index(keras):
    class TakePositions(keras.layers.Layer):
        def call(self, embedded, positions):
            return keras.ops.take_along_axis(embedded, positions, axis=1)

    tokens = keras.Input((None,), dtype="int32", name="token_ids")
    positions = keras.Input((None,), dtype="int32", name="positions")
    embedded = keras.layers.Embedding(1000, 4)(tokens)
    picked = TakePositions()(keras.ops.mean(embedded, -1), positions)
    model = keras.Model({"token_ids": tokens, "positions": positions}, picked)
    report = analyze(model)
    inputs = used(report)
    assert inputs["positions"].high < inputs["token_ids"].shape[1]  # a position, not a token id
    assert inputs["token_ids"].high >= inputs["token_ids"].shape[1]  # ids span the table
    assert_matches_tape(report, model)


def test_no_batch_fits_the_error_names_every_input_with_shape_and_dtype(keras):
    x = keras.Input((None,), name="x")
    y = keras.Input((4,), dtype="int32", name="y")
    reshaped = keras.layers.Reshape((3, 7))(x)  # 21 is never a searched length
    out = keras.layers.Dense(2)(reshaped) + keras.ops.cast(keras.ops.sum(y), "float32")
    model = keras.Model([x, y], out)
    from gradcheck.api import check

    [error] = check(model).errors
    assert error.error.type == "forward-failed"
    assert "x (2, 8) float32, y (2, 4) int32" in error.error.message


def test_search_respects_the_element_budget():
    from gradcheck.plans.inputs import InputSpec
    from gradcheck.plans.search import MAX_BATCH_ELEMENTS, MAX_SEARCH_DIM, search

    tried = []
    specs = [InputSpec("frames", (None, 4096), "float32")]
    search(None, 0, specs, batch_size=2, seed=0, accepts=lambda b: tried.append(b) and False)
    shapes = [b.arrays[0].shape for b in tried]
    assert shapes and all(2 * s[1] * s[2] <= MAX_BATCH_ELEMENTS for s in shapes)
    assert max(s[1] for s in shapes) < MAX_SEARCH_DIM  # 4096 x 4096 x 2 is over the budget


def test_a_mask_named_unlike_its_signal_grows_with_it(keras):
    audio = keras.Input((None, 1), name="audio")
    mask = keras.Input((None,), dtype="bool", name="padding_mask")
    gated = audio * keras.ops.expand_dims(keras.ops.cast(mask, "float32"), -1)  # same length
    x = keras.layers.Conv1D(4, 100, strides=50)(gated)
    model = keras.Model([audio, mask], keras.layers.GlobalAveragePooling1D()(x))
    report = analyze(model)
    assert [u.shape for u in report.inputs] == [(2, 128, 1), (2, 128)]
    assert_matches_tape(report, model)


def test_an_input_name_the_model_does_not_have_is_refused(keras):
    """``--input typo=8`` on a model whose one input is named otherwise is an error naming the
    inputs, never silently applied to that input."""
    from gradcheck.problems import ErrorKind, SourceProblem

    inputs = keras.Input((8,), name="features")
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(SourceProblem) as refused:
        analyze(model, inputs=("featres=16",))
    assert refused.value.kind is ErrorKind.BAD_INPUT
    assert "its inputs are: features" in refused.value.message
    assert used(analyze(model, inputs=("features=8@0..1",)))["features"].low >= 0


def test_a_model_that_names_no_input_takes_any_name(keras):
    class Unnamed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Unnamed()
    model(keras.ops.zeros((1, 8)))  # built by a call: Keras keeps its input shape only
    report = analyze(model, inputs=("x=8",))
    assert report.ok and [u.shape for u in report.inputs] == [(2, 8)]
# --- inputs that reach every part ---------------------------------------------------------------

def _placeholder_model(keras, image_token_id: int, *, declared: bool = True, table: int = 16):
    """A tower entered only at the positions where the token ids hold ``image_token_id``, as
    multimodal keras-hub backbones splice an image into the text."""

    class Tower(keras.Model):
        def __init__(self):
            super().__init__(name="vision_tower")
            self.first, self.second = keras.layers.Dense(4), keras.layers.Dense(4)

        def call(self, images):
            return self.second(self.first(images))

    class Multimodal(keras.Model):
        def __init__(self):
            super().__init__(name="multimodal")
            self.embedding = keras.layers.Embedding(table, 4)
            self.tower = Tower()
            if declared:
                self.image_token_id = image_token_id

        def call(self, inputs):
            ids = inputs["token_ids"]
            at_image = keras.ops.cast(keras.ops.equal(ids, image_token_id), "float32")
            return self.embedding(ids) + at_image[..., None] * self.tower(inputs["images"])[:, None]

    ids = keras.Input((None,), dtype="int32", name="token_ids")
    images = keras.Input((3,), name="images")
    inputs = {"token_ids": ids, "images": images}
    return keras.Model(inputs, Multimodal()(inputs))


def test_token_ids_include_the_placeholder_id_the_model_compares_them_with(keras):
    model = _placeholder_model(keras, image_token_id=7)
    report = analyze(model)
    assert {v.status.value for v in report.variables} == {"connected"} and not report.warnings
    assert_matches_tape(report, model)


def test_a_tower_the_inputs_do_not_reach_is_a_warning_in_every_format(keras):
    from gradcheck import gate
    from gradcheck.formats import Format, render
    from gradcheck.report import Status

    model = _placeholder_model(keras, image_token_id=99)  # outside the table: never drawn
    report = analyze(model)
    tower = [v for v in report.variables if "vision_tower" in v.path]
    assert len(tower) == 4 and {v.status.value for v in tower} == {"zero"}
    (warning,) = report.warnings
    assert "did not reach" in warning and "vision_tower" in warning
    assert_matches_tape(report, model)
    gated = gate.apply([report], version="0", fail_on=frozenset({Status.UNCONNECTED}), allow=(),
                       baseline=None)
    for fmt in Format:
        assert "did not reach" in render(gated, fmt), fmt


def test_a_small_table_has_every_id_in_the_batch_and_a_one_row_table_bounds_nothing(keras):
    """Box labels index a 2-row table beside a CLS embedding of 1 row read by its weights (as in
    keras-hub's SAM3 geometry encoder): ids span the 2 rows, and both are in a batch of two."""
    from gradcheck.plans.inputs import signature
    from gradcheck.plans.synthetic import Sizes, id_ranges, make_batch

    class Prompt(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.labels = keras.layers.Embedding(2, 4)
            self.cls = keras.layers.Embedding(1, 4)

        def build(self, shape):
            self.cls.build((None,))

        def call(self, labels):
            return self.labels(labels) + self.cls.embeddings[0]

    labels = keras.Input((None,), dtype="int32", name="box_labels")
    model = keras.Model(labels, Prompt()(labels))
    assert id_ranges(model, 1) == [(0, 2)]
    tree, specs = signature(model, [])
    batch = make_batch(model, tree, specs, batch_size=2, seed=0, sizes=Sizes(length=1))
    assert sorted(batch.arrays[0].ravel().tolist()) == [0, 1]


def test_a_mask_takes_the_lengths_of_the_features_it_masks():
    from gradcheck.plans.inputs import InputSpec
    from gradcheck.plans.synthetic import agreeing_shapes, concrete_shape

    specs = [InputSpec("input_features", (None, None, 8), "float32"),
             InputSpec("input_features_mask", (None, None), "bool"),
             InputSpec("token_ids", (None,), "int32")]
    shapes = agreeing_shapes(specs, [concrete_shape(spec, 2) for spec in specs])
    assert shapes[1] == shapes[0][:3] and shapes[2] == (2, 8)


def test_a_placeholder_id_only_the_forward_pass_compares_with_is_found_there(keras):
    import numpy as np
    import tensorflow as tf

    # a table larger than the batch's 16 ids: not every id is drawn (a small one has them all)
    model = _placeholder_model(keras, image_token_id=7, declared=False, table=64)
    report = analyze(model)
    assert {v.status.value for v in report.variables} == {"connected"} and not report.warnings
    assert any("ids 7" in note for note in report.notes)
    ids = np.ones((2, 8), "int32")
    ids[:, 1] = 7
    with tf.GradientTape() as tape:  # the truth on a batch holding the id
        out = model({"token_ids": ids, "images": np.ones((2, 3), "float32")})
        loss = tf.reduce_sum(out * np.random.default_rng(0).standard_normal(out.shape))
    assert all(np.any(g) for g in tape.gradient(loss, model.trainable_variables))


def test_the_search_shortens_only_the_inputs_the_model_needs_short(keras):
    """A prompt encoder that takes one box per row must not leave the text one token long: its
    attention over one token is a one-element softmax, whose query and key get exact zeros."""

    class OneBox(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.project = keras.layers.Dense(4)

        def call(self, boxes):
            if boxes.shape[1] not in (None, 1):  # symbolic while the model is built
                raise ValueError("one box per row")
            return self.project(boxes)

    tokens = keras.Input((None,), dtype="int32", name="token_ids")
    boxes = keras.Input((None, 4), name="boxes")
    text = keras.layers.Embedding(32, 4)(tokens)
    text = keras.layers.MultiHeadAttention(num_heads=1, key_dim=4)(text, text)
    out = keras.layers.Concatenate(axis=1)([text, OneBox()(boxes)])
    model = keras.Model({"token_ids": tokens, "boxes": boxes}, out)
    report = analyze(model)
    assert {used.name: used.shape for used in report.inputs} == {"boxes": (2, 1, 4),
                                                                 "token_ids": (2, 8)}
    assert {v.status.value for v in report.variables} == {"connected"}
    assert_matches_tape(report, model)
