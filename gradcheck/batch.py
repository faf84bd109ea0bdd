"""The batch a training step runs on: the user's ``--data module:fn``, or candidates built from
the input signatures of the model and of its sub-models."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from gradcheck.problems import ErrorKind, SourceProblem, describe_exception


@dataclass(frozen=True)
class Batch:
    """A ``train_step`` argument: x, (x, y) or (x, y, sample_weight), and where it came from."""

    data: Any  #: exactly what ``train_step(data)`` receives
    description: str  #: for the report, e.g. ``x from the inputs of 'discriminator'``


def load_data(spec: str) -> Batch:
    """Call the ``module:fn`` / ``file.py:fn`` named by ``--data`` and return its batch."""
    from gradcheck.load.user_code import import_function

    fn = import_function(spec, what="--data", kind=ErrorKind.BAD_DATA)
    try:
        data = fn()
    except Exception as exc:
        raise SourceProblem(ErrorKind.BAD_DATA, f"--data {spec} raised {describe_exception(exc)}") from exc
    if data is None or (isinstance(data, tuple) and not 1 <= len(data) <= 3):
        raise SourceProblem(ErrorKind.BAD_DATA, f"--data {spec} returned "
                            f"{'None' if data is None else f'a tuple of {len(data)}'}; return x, "
                            "(x, y) or (x, y, sample_weight).")
    try:
        data = _as_tensors(data)
    except Exception as exc:
        raise SourceProblem(ErrorKind.BAD_DATA, f"--data {spec} returned something that is not arrays or "
                            f"tensors ({describe_exception(exc)}); return x, (x, y) or "
                            "(x, y, sample_weight) of arrays.") from exc
    return Batch(data, f"--data {spec}")


def _as_tensors(data):
    import keras
    import tensorflow as tf

    return keras.tree.map_structure(
        lambda leaf: leaf if leaf is None or isinstance(leaf, tf.Tensor) else tf.convert_to_tensor(leaf),
        data)


def unpack(data) -> tuple[Any, Any, Any]:
    """(x, y, sample_weight) of a batch, as Keras' ``unpack_x_y_sample_weight`` reads it."""
    import keras

    return keras.utils.unpack_x_y_sample_weight(data)


def candidates(model, *, overrides: list, batch_size: int, seed: int,
               targets_first: bool) -> Iterator[Callable[[], Batch]]:
    """Batches to try, each built on demand: x, then (x, y), from each input signature.

    The signatures are the model's own, then its sub-models' (a GAN trainer's batch is what its
    discriminator takes), then pairs of different sub-model inputs (a CycleGAN's (x, y) of two
    domains).  ``targets_first`` tries (x, y) before x, for steps that need targets.
    """
    signatures = list(_signatures(model, overrides))
    own = [s for s in signatures if s[0] is model]
    for owner, index_tree, specs in signatures:
        label = "the model's inputs" if owner is model else f"the inputs of '{owner.name}'"

        def x_only(owner=owner, index_tree=index_tree, specs=specs, label=label):
            return Batch(_inputs(owner, index_tree, specs, batch_size, seed), f"x from {label}")

        def with_targets(owner=owner, index_tree=index_tree, specs=specs, label=label, ids=False):
            x = _inputs(owner, index_tree, specs, batch_size, seed)
            kind = "class ids for" if ids else "y fitting"
            return Batch((x, synthetic_targets(model, x, class_ids=ids)),
                         f"(x, y) with x from {label} and {kind} the model's outputs")

        targets = [with_targets, functools.partial(with_targets, ids=True)] if owner is model else []
        if owner is model:  # the structures a compute_loss may ask for (gradcheck.targets)
            targets += _fitted_target_batches(model, lambda o=owner, t=index_tree, s=specs:
                                              _inputs(o, t, s, batch_size, seed), label)
        yield from (targets + [x_only] if targets_first else [x_only] + targets)
    for _, index_tree, specs in own:  # the model refuses its default shapes: search
        yield from _searched_batches(model, index_tree, specs, batch_size, seed, targets_first)
    subs = [s for s in signatures if s[0] is not model]
    if not own:
        for first, second in _distinct_pairs(subs):
            def pair(first=first, second=second):
                return Batch((_inputs(*first, batch_size, seed), _inputs(*second, batch_size, seed + 1)),
                             f"(x, y) with x from the inputs of '{first[0].name}' and y from the "
                             f"inputs of '{second[0].name}'")
            yield pair


def _distinct_pairs(subs):
    for i, first in enumerate(subs):
        for second in subs[i + 1:]:
            if first[2] != second[2]:
                yield first, second


def _signatures(model, overrides) -> Iterator[tuple[Any, Any, list]]:
    """(owner, index tree, specs) for the model and each sub-model that has a signature."""
    from gradcheck.inputs import signature

    seen = []
    for owner in [model, *_children(model)]:
        try:
            index_tree, specs = signature(owner, overrides if owner is model else [])
        except SourceProblem:
            continue
        if any(specs == other for other in seen) and owner is not model:
            continue
        seen.append(specs)
        yield owner, index_tree, specs


def _children(model) -> list:
    """The model's direct sub-models and layers, in the order they were assigned."""
    flatten = getattr(model, "_flatten_layers", None)
    return list(flatten(include_self=False, recursive=False)) if flatten else []


def _inputs(owner, index_tree, specs, batch_size: int, seed: int):
    import keras
    import tensorflow as tf

    from gradcheck.inputs import make_inputs

    values = make_inputs(owner, index_tree, specs, batch_size=batch_size, seed=seed)
    return keras.tree.map_structure(tf.convert_to_tensor, values)


def _fitted_target_batches(model, make_x: Callable[[], Any], label: str) -> list:
    """(x, y[, sample_weight]) makers for each ``targets.candidate_fits`` structure."""
    from gradcheck.targets import candidate_fits

    def fitted(fit):
        x = make_x()
        y, sample_weight = fit.build(x, model(x, training=False))
        data = (x, y) if sample_weight is None else (x, y, sample_weight)
        return Batch(data, f"(x, y) with x from {label} and {fit.description}")

    return [functools.partial(fitted, fit) for fit in candidate_fits(model)]


def _searched_batches(model, index_tree, specs, batch_size: int, seed: int,
                      targets_first: bool) -> Iterator[Callable[[], Batch]]:
    """The candidates again on the first input shapes the model's forward pass accepts after its
    defaults (``inputs.search``), if it refused them."""
    import keras

    from gradcheck.inputs import search

    def forward_accepts(candidate) -> bool:
        try:
            outputs = model(candidate.value, training=False)
        except Exception:
            return False
        return all(0 not in tuple(getattr(o, "shape", ()) or ()) for o in keras.tree.flatten(outputs))

    @functools.cache
    def found():
        batch = search(model, index_tree, specs, batch_size=batch_size, seed=seed,
                       accepts=forward_accepts, include_default=False)
        if batch is None:
            raise SourceProblem(ErrorKind.TRAIN_STEP_FAILED, "no input shapes gradcheck tried run the "
                                "model's forward pass; give the batch with --data module:fn.")
        return batch

    def make_x():
        import tensorflow as tf

        return keras.tree.map_structure(tf.convert_to_tensor, found().value)

    label = "the model's inputs, shapes found by search"

    def x_only():
        return Batch(make_x(), f"x from {label}")

    def with_targets():
        x = make_x()
        return Batch((x, synthetic_targets(model, x)), f"(x, y) with x from {label} and y "
                     "fitting the model's outputs")

    targets = [with_targets, *_fitted_target_batches(model, make_x, label)]
    yield from (targets + [x_only] if targets_first else [x_only] + targets)


def synthetic_targets(model, x, *, class_ids: bool = False):
    """Targets that fit the model's compiled losses (or, without one, its outputs' values);
    ``class_ids``: sparse class ids for every output (a step whose loss is not compiled)."""
    import keras

    from gradcheck.losses import _per_output_loss_names
    from gradcheck.targets import target_for

    outputs = model(x, training=False)
    names = _per_output_loss_names(model) if getattr(model, "compiled", False) else {}
    if class_ids:
        names = {i: "sparse" for i in range(len(keras.tree.flatten(outputs)))}
    flat = keras.tree.flatten(outputs)
    targets = [target_for(output, names.get(i), i) for i, output in enumerate(flat)]
    return keras.tree.pack_sequence_as(outputs, targets)
