"""Synthetic targets for the compiled loss: the defaults, and the structures a ``compute_loss``
asks for when it refuses them.

The default target of an output fits its loss's name (class ids, one-hot, {0,1}, ±1, values in
(0, 1)).  When the compiled loss refuses those, ``plans.search`` tries, eagerly and outside
the recorded step and on each candidate batch, the other structures a Keras training batch can
carry (``candidate_fits``), by general rules:

- the same targets with a ``sample_weight`` of ones (a ``compute_loss`` that masks with it);
- for an object detector (a model with a ``bounding_box_format``, the keras / keras-hub
  convention), the documented ``{"boxes": (batch, n, 4), "labels": (batch, n)}`` dict, boxes
  valid in the model's own format for the image size, labels below ``num_classes``; without and
  with a ``sample_weight`` of ones.

When none fits, the model is judged by the projection loss (``plans.loss.projection_fallback``) and the
report carries a warning, in every format: the verdicts are weaker than the compiled loss's,
never silently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from gradcheck.plans.loss import constant_random

#: Synthetic detection targets: the same boxes in every image, relative ``yxyx``.
DETECTION_BOXES = ((0.0, 0.0, 1.0, 1.0), (0.0, 0.0, 0.5, 0.5), (0.5, 0.5, 1.0, 1.0),
                   (0.25, 0.25, 0.75, 0.75))


#: Words in a loss's name that mark a ranking loss: it compares items of a list, and wants graded
#: relevance labels (keras-rs's pairwise losses ignore labels below 0: ±1 leaves nothing to rank).
RANKING_WORDS = ("pairwise", "listwise", "list_mle", "listmle", "ranking", "ndcg", "lambda")


#: Relevance grades of a ranking target: 0 … RELEVANCE_GRADES - 1.
RELEVANCE_GRADES = 4


#: The kinds of target ``target_for`` can build, tried in this order when the default kind gives
#: a loss that does not depend on the outputs (``plans.loss_plans``).
TARGET_KINDS = ("graded", "binary", "uniform", "signed")


def default_targets(outputs, loss_names: dict[int, str | None], kind: str | None = None):
    """One target per output, shaped and valued for that output's loss (see ``target_for``)."""
    import keras

    flat = keras.tree.flatten(outputs)
    targets = [target_for(output, loss_names.get(i), i, kind) for i, output in enumerate(flat)]
    return keras.tree.pack_sequence_as(outputs, targets)


def target_kind(loss_name: str | None) -> str:
    """The kind of target a loss's name asks for."""
    name = (loss_name or "").lower()
    if "sparse" in name:
        return "ids"
    if "categorical" in name:
        return "one-hot"
    if any(word in name for word in RANKING_WORDS):
        return "graded"
    if "hinge" in name:
        return "signed"
    if "binary" in name or "focal" in name:
        return "binary"
    return "uniform"


def target_for(output, loss_name: str | None, index: int, kind: str | None = None):
    """A synthetic target that fits the loss (``kind``, else the one its name asks for): class
    ids, one-hot, graded relevance 0…3, {0,1}, ±1, or values in (0, 1)."""
    import tensorflow as tf

    output = tf.convert_to_tensor(output)
    kind = kind or target_kind(loss_name)
    if not output.dtype.is_floating:
        return tf.zeros_like(tf.stop_gradient(output))
    classes = output.shape[-1] if output.shape.rank else None
    if kind in ("ids", "one-hot") and classes:
        ids = constant_random(output, index, tf.random.stateless_uniform, drop_last=True)
        ids = tf.cast(ids * classes, tf.int32)
        return ids if kind == "ids" else tf.one_hot(ids, classes, dtype=output.dtype)
    uniform = constant_random(output, index, tf.random.stateless_uniform)
    if kind == "graded":
        return tf.cast(tf.floor(uniform * RELEVANCE_GRADES), output.dtype)
    if kind == "signed":
        return tf.cast(tf.where(uniform < 0.5, -1.0, 1.0), output.dtype)
    if kind == "binary":
        return tf.cast(uniform < 0.5, output.dtype)
    return tf.cast(uniform, output.dtype)


@dataclass(frozen=True)
class TargetFit:
    """One structure of targets to offer ``compute_loss``."""

    description: str  #: for the report's loss detail, e.g. "detection targets {boxes, labels}"
    build: Callable[[Any, Any], tuple[Any, Any]]  #: (inputs, outputs) -> (y, sample_weight)


def candidate_fits(model, names: dict[int, str | None]) -> Iterator[TargetFit]:
    """The target structures to try after the defaults, most specific last; ``names`` are the
    outputs' loss names (``plans.compiled.loss_names``)."""

    def defaults_weighted(inputs, outputs):
        return default_targets(outputs, names), _ones_weight(outputs)

    yield TargetFit("targets with sample_weight of ones", defaults_weighted)
    if isinstance(getattr(model, "bounding_box_format", None), str):
        def detection(inputs, outputs):
            return _detection_targets(model, inputs), None

        def detection_weighted(inputs, outputs):
            return _detection_targets(model, inputs), _ones_weight(outputs)

        yield TargetFit("detection targets {boxes, labels}", detection)
        yield TargetFit("detection targets {boxes, labels} with sample_weight of ones",
                        detection_weighted)


def _ones_weight(outputs):
    """A sample weight of ones per output: the output's shape without its last (class) axis."""
    import keras
    import tensorflow as tf

    def ones(output):
        output = tf.convert_to_tensor(output)
        shape = tf.shape(output)[:-1] if output.shape.rank and output.shape.rank > 1 \
            else tf.shape(output)[:1]
        return tf.ones(shape, tf.float32)

    return keras.tree.map_structure(ones, outputs)


def _detection_targets(model, inputs) -> dict:
    """``{"boxes", "labels"}`` for the batch's images, in the model's ``bounding_box_format``."""
    import keras
    import numpy as np

    images = _image_batch(inputs)
    batch, height, width = int(images.shape[0]), int(images.shape[1]), int(images.shape[2])
    # Boxes at several scales (the whole image, quarters, the centre), so that anchors of every
    # level match some box: a target no anchor matches gives a zero loss and zero gradients.
    one_image = np.array(DETECTION_BOXES, dtype="float32")
    relative = np.broadcast_to(one_image, (batch, *one_image.shape))  # rel_yxyx
    boxes = keras.utils.bounding_boxes.convert_format(
        relative, source="rel_yxyx", target=model.bounding_box_format, height=height, width=width)
    classes = getattr(model, "num_classes", None)
    classes = classes if isinstance(classes, int) and classes > 0 else 1
    labels = (np.arange(batch * len(DETECTION_BOXES)) % classes).reshape(batch, -1)
    labels = labels.astype("int32")
    return {"boxes": keras.ops.convert_to_tensor(boxes, "float32"),
            "labels": keras.ops.convert_to_tensor(labels)}


def _image_batch(inputs):
    """The batch's images: its one (or first) floating input of rank 4."""
    import keras

    for value in keras.tree.flatten(inputs):
        if len(value.shape) == 4 and str(value.dtype).startswith(("float", "<dtype: 'float")):
            return value
    raise ValueError("no image input to place boxes in")
