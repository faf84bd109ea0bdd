"""Synthetic targets: the structure a ``compute_loss`` asks for, or a visible fallback.

Each model's ``compute_loss`` checks the targets it is handed and refuses anything else, as a
real one does; the verdicts are compared with the eager tape on the same batch and loss.
"""

from __future__ import annotations

import json

import pytest
from tape_truth import assert_matches_tape

pytest.importorskip("tensorflow")


@pytest.fixture(scope="session")
def keras():
    from gradcheck.api import quiet_tensorflow

    quiet_tensorflow()
    import keras

    return keras


def analyze(model):
    from gradcheck.api import Options, analyze_model

    return analyze_model(model, Options())


def _image_head(keras, outputs):
    images = keras.Input((16, 24, 3), name="images")
    x = keras.layers.Conv2D(4, 3, strides=4)(images)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return images, {name: keras.layers.Dense(width, name=name)(x)
                    for name, width in outputs.items()}


@pytest.fixture(scope="session")
def weighted_model(keras):
    """A compute_loss that multiplies by its sample_weight (None is an error, as in PARSeq)."""

    class NeedsWeights(keras.Model):
        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            weights = keras.ops.convert_to_tensor(sample_weight)
            error = keras.ops.square(y_pred - keras.ops.cast(y, y_pred.dtype))
            return keras.ops.mean(error * weights[:, None])

    images, heads = _image_head(keras, {"out": 3})
    model = NeedsWeights(images, heads["out"])
    model.compile(loss="mse")
    return model


def how_judged(report) -> str:
    """The loss line and the notes: a compute_loss override names its batch in a note."""
    return " ".join([report.loss_detail, *report.notes])


def test_a_required_sample_weight_is_ones(weighted_model):
    report = analyze(weighted_model)
    assert report.ok and report.loss.value == "compute_loss" and report.warnings == ()
    assert "sample_weight of ones" in how_judged(report)
    assert {v.status.value for v in report.variables} == {"connected"}
    assert_matches_tape(report, weighted_model)


class _Detector:
    """Mixin: a detector's compute_loss that accepts only valid ``{"boxes", "labels"}``."""

    bounding_box_format = "center_xywh"
    num_classes = 3

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        import keras

        boxes = keras.utils.bounding_boxes.convert_format(
            y["boxes"], source=self.bounding_box_format, target="rel_yxyx", height=16, width=24)
        labels = keras.ops.convert_to_numpy(y["labels"])
        corners = keras.ops.convert_to_numpy(boxes)
        assert labels.min() >= 0 and labels.max() < self.num_classes
        assert corners.min() >= 0 and corners.max() <= 1
        assert (corners[..., 2:] > corners[..., :2]).all()  # positive height and width
        first_box = keras.ops.cast(y["boxes"][:, 0], "float32")
        box_loss = keras.ops.mean(keras.ops.square(y_pred["box"] - first_box))
        one_hot = keras.ops.one_hot(y["labels"][:, 0], self.num_classes)
        return box_loss + keras.ops.mean(keras.losses.categorical_crossentropy(
            one_hot, y_pred["cls"], from_logits=True))


@pytest.fixture(scope="session")
def detector(keras):
    class Detector(_Detector, keras.Model):
        pass

    images, heads = _image_head(keras, {"box": 4, "cls": 3})
    model = Detector(images, heads)
    model.compile(loss={"box": "mse", "cls": "categorical_crossentropy"})
    return model


def test_a_detector_gets_valid_boxes_and_labels_in_its_own_format(detector):
    report = analyze(detector)
    assert report.ok and report.loss.value == "compute_loss" and report.warnings == ()
    assert "detection targets {boxes, labels}" in how_judged(report)
    assert {v.status.value for v in report.variables} == {"connected"}
    assert_matches_tape(report, detector)


@pytest.fixture(scope="session")
def unknowable(keras):
    """A compute_loss that needs a target key no general rule can guess."""

    class Unknowable(keras.Model):
        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            return keras.ops.mean(y_pred["a"] * y["private_key"]) + keras.ops.mean(y_pred["b"])

    images, heads = _image_head(keras, {"a": 2, "b": 2})
    model = Unknowable(images, heads)
    model.compile(loss="mse")
    return model


def test_an_unknowable_target_falls_back_to_the_projection_with_a_warning(unknowable):
    report = analyze(unknowable)
    assert report.ok and report.loss.value == "projection"
    [warning] = report.warnings
    assert "KeyError" in warning and "private_key" in warning and "--loss" in warning
    assert_matches_tape(report, unknowable)


def test_the_fallback_warning_shows_in_every_format(unknowable):
    from gradcheck import gate
    from gradcheck.formats import Format, render
    from gradcheck.report import Status

    model = analyze(unknowable)
    report = gate.apply([model], version="0", fail_on=frozenset({Status.UNCONNECTED}), allow=[],
                        baseline=None)
    warning = model.warnings[0]
    outputs = {fmt: render(report, fmt) for fmt in Format}
    assert warning in outputs[Format.TEXT]
    assert json.loads(outputs[Format.JSON])["models"][0]["warnings"] == [warning]
    sarif = json.loads(outputs[Format.SARIF])["runs"][0]["invocations"][0]
    assert sarif["toolExecutionNotifications"][0]["message"]["text"].endswith(warning)
    assert warning in outputs[Format.JUNIT]
    assert any(line.startswith("::warning") and "private_key" in line
               for line in outputs[Format.GITHUB].splitlines())
    assert "private_key" in outputs[Format.MARKDOWN] and "**warning**" in outputs[Format.MARKDOWN]


def test_the_report_lists_the_inputs_in_json_sarif_and_text(detector):
    from gradcheck import gate
    from gradcheck.formats import Format, render
    from gradcheck.report import Status

    model = analyze(detector)
    report = gate.apply([model], version="0", fail_on=frozenset({Status.UNCONNECTED}), allow=[],
                        baseline=None)
    [images] = json.loads(render(report, Format.JSON))["models"][0]["inputs"]
    assert images["name"] == "images" and images["shape"] == [2, 16, 24, 3]
    assert images["dtype"] == "float32" and images["low"] < 0 < images["high"]
    line = f"images (2, 16, 24, 3) float32 in [{images['low']}, {images['high']}]"
    sarif = json.loads(render(report, Format.SARIF))["runs"][0]["properties"]["inputs"]
    assert sarif == {"<model>": line}
    assert f"  inputs: {line}" in render(report, Format.TEXT, verbose=True).splitlines()


def _line(keras, **layer):
    from gradcheck.api import Options, analyze_model

    inputs = keras.Input((4,), name="x")
    dense = keras.layers.Dense(3, name="d", **layer)
    outputs = dense(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="mse")
    return analyze_model(model, Options()).loss_detail


def test_the_loss_line_names_only_the_model_losses_there_are(keras):
    assert _line(keras) == "d: mse"
    assert _line(keras, kernel_regularizer="l2") == "d: mse; plus regularizers"
    assert _line(keras, activity_regularizer="l1") == "d: mse; plus regularizers"


def test_a_subclassed_model_compiled_with_a_dict_names_its_outputs(keras):
    from gradcheck.api import Options, analyze_model

    class TwoOutputs(keras.Model):
        def __init__(self):
            super().__init__()
            self.a, self.b = keras.layers.Dense(2), keras.layers.Dense(1)

        def call(self, x):
            self.add_loss(keras.ops.mean(self.a(x)) * 0.01)
            return {"out_b": self.b(x), "out_a": self.a(x)}

    model = TwoOutputs()
    model.compile(optimizer="sgd", loss={"out_a": "mse", "out_b": "mae"})
    model(keras.ops.zeros((1, 4)))
    report = analyze_model(model, Options(inputs=("x=4",)))
    assert report.loss_detail == "out_a: mse; out_b: mae; plus add_loss terms"
# --- targets that keep the loss alive -----------------------------------------------------------

def _ranker(keras, loss):
    lists = keras.Input((5, 3), name="items")
    hidden = keras.layers.Dense(4, activation="tanh", name="hidden")(lists)
    scores = keras.layers.Reshape((5,))(keras.layers.Dense(1, name="score")(hidden))
    model = keras.Model(lists, scores, name="ranker")
    model.compile(optimizer="adam", loss=loss)
    return model


@pytest.mark.parametrize("loss_name", ["PairwiseHingeLoss", "PairwiseLogisticLoss", "ListMLELoss"])
def test_a_ranking_loss_gets_graded_labels_that_give_every_layer_a_gradient(keras, loss_name):
    keras_rs = pytest.importorskip("keras_rs")
    from gradcheck.plans.targets import RELEVANCE_GRADES, target_for

    model = _ranker(keras, getattr(keras_rs.losses, loss_name)())
    report = analyze(model)
    statuses = {v.path: v.status.value for v in report.variables}
    # a ranking loss compares scores within a list: the scores' shared bias cancels exactly
    assert statuses.pop("score/bias") in ("connected", "zero")
    assert set(statuses.values()) == {"connected"}
    assert_matches_tape(report, model)
    labels = target_for(keras.ops.zeros((2, 5)), model.loss.name, 0).numpy()
    assert labels.min() >= 0 and labels.max() < RELEVANCE_GRADES and len(set(labels.ravel())) > 1


def test_a_target_that_leaves_the_loss_constant_is_replaced(keras):
    """A loss named like a hinge loss that counts only labels above 1: ±1 targets make it 0."""

    class HighLabelsOnly(keras.losses.Loss):
        def call(self, y_true, y_pred):
            return keras.ops.mean(keras.ops.where(y_true > 1.5, (y_pred - y_true) ** 2, 0.0), -1)

    model = _ranker(keras, HighLabelsOnly(name="high_label_hinge"))
    report = analyze(model)
    assert {v.status.value for v in report.variables} == {"connected"}
    assert "graded targets (the default ones left the loss constant)" in report.loss_detail
