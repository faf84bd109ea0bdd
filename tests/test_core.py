"""Model-level tests: every verdict is compared with an eager tf.GradientTape."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tape_truth import assert_matches_tape

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "sample_models"))

pytest.importorskip("tensorflow")


@pytest.fixture(scope="session")
def samples():
    """The sample models, built in memory once per session."""
    from gradcheck.api import quiet_tensorflow

    quiet_tensorflow()
    import build_samples

    return {name.removesuffix(".keras"): build() for name, build in build_samples.SAMPLES.items()}


@pytest.fixture(scope="session")
def analyze():
    from gradcheck.api import Options, analyze_model

    def run(model, **options):
        return analyze_model(model, Options(**options))

    return run


def by_path(report):
    return {v.path: v for v in report.variables}


@pytest.mark.parametrize("name", ["clean", "unused_weight", "two_heads", "frozen_encoder",
                                  "argmax_lookup", "rounded_and_cast"])
def test_sample_verdicts_match_the_tape(samples, analyze, name):
    report = analyze(samples[name])
    assert report.ok and report.loss.value == "compiled"
    assert_matches_tape(report, samples[name])


def test_clean_model_has_no_findings(samples, analyze):
    report = analyze(samples["clean"])
    assert {v.status.value for v in report.variables} == {"connected"}


def test_unused_weight_is_unused_and_names_its_layer(samples, analyze):
    result = by_path(analyze(samples["unused_weight"]))["gated/gate"]
    assert result.status.value == "unconnected"
    assert result.cause.kind.value == "unused" and result.cause.layer == "gated"


def test_head_without_loss_is_detached_and_names_the_output(samples, analyze):
    results = by_path(analyze(samples["two_heads"]))
    for path in ("critic/kernel", "critic/bias"):
        assert results[path].cause.kind.value == "detached"
        assert results[path].cause.reaches == ("critic",)
    assert results["torso/kernel"].status.value == "connected"


def test_stop_gradient_is_the_primary_cut(samples, analyze):
    cause = by_path(analyze(samples["frozen_encoder"]))["encoder/kernel"].cause
    assert cause.kind.value == "blocked" and cause.op_type == "StopGradient"
    assert [c.op_type for c in cause.cuts] == ["StopGradient"]


def test_argmax_is_primary_not_the_equal_or_bitcast_keras_adds(samples, analyze):
    cause = by_path(analyze(samples["argmax_lookup"]))["router/kernel"].cause
    assert cause.kind.value == "blocked" and cause.op_type == "ArgMax"
    assert {"ArgMax"} < {c.op_type for c in cause.cuts}  # Keras' argmax also feeds Equal/Bitcast


def test_round_and_int_cast_are_named(samples, analyze):
    results = by_path(analyze(samples["rounded_and_cast"]))
    assert results["scale/kernel"].cause.op_type == "Round"
    assert results["bucketizer/kernel"].cause.op_type == "Cast"
    assert results["buckets/embeddings"].status.value == "connected"


def _softmax_classifier():
    import keras

    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="tanh", name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="probs")(hidden))


def test_uncompiled_softmax_is_connected_under_the_projection(analyze):
    """A plain sum of a softmax is constant (every gradient would be zero); the projection isn't."""
    import tensorflow as tf

    model = _softmax_classifier()
    report = analyze(model)
    assert report.loss.value == "projection"
    assert {v.status.value for v in report.variables} == {"connected"}
    assert_matches_tape(report, model)
    with tf.GradientTape() as tape:  # the trap the projection avoids
        total = tf.reduce_sum(model(tf.ones((2, 6))))
    grads = tape.gradient(total, model.trainable_variables)
    assert all(float(tf.reduce_max(tf.abs(g))) < 1e-5 for g in grads)


def test_dead_relu_is_zero_not_unconnected(analyze):
    import keras

    inputs = keras.Input((4,))
    dead = keras.layers.Dense(3, activation="relu", name="dead",
                              bias_initializer=keras.initializers.Constant(-100.0))(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(dead))
    results = by_path(analyze(model))
    assert results["dead/kernel"].status.value == "zero"
    assert results["dead/kernel"].none is False and results["dead/kernel"].cause is None
    assert_matches_tape(analyze(model), model)


def test_nan_gradient_is_nonfinite(analyze):
    import keras

    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="hidden", bias_initializer="zeros",
                                kernel_initializer="zeros")(inputs)
    model = keras.Model(inputs, keras.ops.sqrt(hidden))  # d sqrt(x)/dx at 0 is inf
    results = by_path(analyze(model))
    assert results["hidden/kernel"].status.value == "nonfinite"


def test_regularizer_and_add_loss_terms_count(analyze):
    """A weight used only by add_loss gets a gradient through model.losses."""
    import keras

    class Penalized(keras.layers.Layer):
        def build(self, shape):
            self.scale = self.add_weight(shape=(), name="scale")

        def call(self, x):
            self.add_loss(keras.ops.square(self.scale))
            return x

    inputs = keras.Input((4,))
    x = Penalized(name="penalized")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out",
                                                   kernel_regularizer="l2")(x))
    report = analyze(model)
    assert by_path(report)["penalized/scale"].status.value == "connected"
    assert_matches_tape(report, model)


def test_zero_loss_weight_makes_the_head_zero_not_unconnected(analyze):
    import keras

    inputs = keras.Input((4,))
    a = keras.layers.Dense(2, name="a")(inputs)
    b = keras.layers.Dense(2, name="b")(inputs)
    model = keras.Model(inputs, {"a": a, "b": b})
    model.compile(loss={"a": "mse", "b": "mse"}, loss_weights={"a": 1.0, "b": 0.0})
    report = analyze(model)
    assert by_path(report)["b/kernel"].status.value == "zero"
    assert_matches_tape(report, model)


def test_unknown_dims_survive_downsampling(analyze):
    import keras

    image = keras.Input((None, None, 3))
    x = image
    for i in range(5):
        x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name=f"conv{i}")(x)
    x = keras.layers.GlobalMaxPooling2D()(x)
    model = keras.Model(image, keras.layers.Dense(2, name="out")(x))
    report = analyze(model)
    assert {v.status.value for v in report.variables} == {"connected"}


def test_input_override_and_inference(analyze):
    import keras

    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(100, 4, name="emb")(tokens)
    x = keras.layers.Dropout(0.5)(x)
    model = keras.Model(tokens, keras.layers.Dense(1, name="out")(x))
    report = analyze(model, inputs=("tokens=5:int32",), inference=True)
    assert report.ok and {v.status.value for v in report.variables} == {"connected"}


def test_masked_embedding_ids_avoid_the_mask_value(analyze):
    """With mask_zero=True, id 0 is padding: synthetic ids must not be all masked."""
    import keras

    tokens = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(3, 4, mask_zero=True, name="emb")(tokens)
    x = keras.layers.GRU(4, name="gru")(x)
    model = keras.Model(tokens, keras.layers.Dense(1, name="out")(x))
    report = analyze(model)
    assert_matches_tape(report, model)
    assert by_path(report)["emb/embeddings"].status.value == "connected"


def test_keras_applications_model_matches_the_tape(analyze):
    import keras

    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35,
                                           classes=5)
    model.compile(loss="sparse_categorical_crossentropy")
    report = analyze(model)
    assert len(report.variables) > 50
    statuses = {v.path: v.status.value for v in report.variables}
    assert statuses["Conv1/kernel"] == "connected"
    # A BatchNorm beta whose shift the next BatchNorm removes has an exactly-zero gradient
    # (eagerly too): zero, not unconnected.
    assert set(statuses.values()) <= {"connected", "zero"}
    assert_matches_tape(report, model)


@pytest.fixture(scope="session")
def bert_tagger():
    keras_hub = pytest.importorskip("keras_hub")
    import keras

    backbone = keras_hub.models.BertBackbone(vocabulary_size=50, num_layers=2, num_heads=2,
                                             hidden_dim=16, intermediate_dim=32,
                                             max_sequence_length=12, num_segments=2)
    inputs = {name: keras.Input((12,), dtype="int32", name=name)
              for name in ("token_ids", "segment_ids", "padding_mask")}
    sequence = backbone(inputs)["sequence_output"]
    tags = keras.layers.Dense(5, name="tagger")(sequence)
    model = keras.Model(inputs, tags, name="bert_tagger")
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_bert_tagger_pooler_is_detached_and_the_rest_learns(analyze, bert_tagger):
    report = analyze(bert_tagger)
    results = by_path(report)
    pooler = [v for path, v in results.items() if "pooled_dense" in path]
    assert pooler and all(v.status.value == "unconnected" for v in pooler)
    assert all(v.cause.kind.value == "detached" for v in pooler)
    others = [v for path, v in results.items() if "pooled_dense" not in path]
    assert all(v.status.value == "connected" for v in others), [
        v.path for v in others if v.status.value != "connected"]
    assert_matches_tape(report, bert_tagger)


def test_straight_through_estimator_via_custom_gradient_is_connected(analyze):
    """Round has no gradient, but a tf.custom_gradient around it passes the identity: connected."""
    import keras
    import tensorflow as tf

    @tf.custom_gradient
    def ste_round(x):
        return tf.round(x), lambda upstream: upstream

    class Quantize(keras.layers.Layer):
        def call(self, x):
            return ste_round(x)

    inputs = keras.Input((4,))
    quantized = Quantize(name="quantize")(keras.layers.Dense(3, name="scale")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(quantized))
    report = analyze(model)
    assert by_path(report)["scale/kernel"].status.value == "connected"
    assert_matches_tape(report, model)


def test_ops_under_stop_recording_pass_no_gradient(analyze):
    """What a layer computes inside ``tape.stop_recording()`` is invisible to the tape."""
    import keras

    class Unrecorded(keras.layers.Layer):
        def call(self, x):
            with _stop_recording():
                return x * 2.0

    inputs = keras.Input((4,))
    hidden = Unrecorded(name="unrecorded")(keras.layers.Dense(3, name="hidden")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(hidden))
    report = analyze(model)
    result = by_path(report)["hidden/kernel"]
    assert result.status.value == "unconnected" and result.cause.kind.value == "blocked"
    assert_matches_tape(report, model)


def _stop_recording():
    from tensorflow.python.eager import record

    return record.stop_recording()


def test_a_keras_variable_used_by_an_operator_is_read_in_the_graph(analyze):
    """``w * x`` on a Keras variable is read by TensorFlow's C++ fast path, unseen by op
    callbacks unless gradcheck makes the read visible; the graph must still agree with the tape."""
    import keras

    class Scale(keras.layers.Layer):
        def build(self, shape):
            self.scale = self.add_weight(shape=(shape[-1],), initializer="ones", name="scale")

        def call(self, x):
            return self.scale * x + self.scale ** 2

    features = keras.Input((4,), name="features")
    model = keras.Model(features, keras.layers.Dense(1, name="head")(Scale(name="scale")(features)))
    model.compile(loss="mse")
    report = analyze(model)
    assert_matches_tape(report, model)
    assert by_path(report)["scale/scale"].status.value == "connected"


def test_the_loss_line_shows_compiled_loss_weights(analyze):
    import keras

    features = keras.Input((3,), name="features")
    heads = {"a": keras.layers.Dense(1, name="a")(features),
             "b": keras.layers.Dense(1, name="b")(features)}
    model = keras.Model(features, heads)
    model.compile(loss={"a": "mse", "b": "mse"}, loss_weights={"a": 1.0, "b": 0.0})
    report = analyze(model)
    assert "loss_weights={'a': 1.0, 'b': 0.0}" in report.loss_detail
    assert by_path(report)["b/kernel"].status.value == "zero"
