"""The batch a step runs on: the user's ``--data module:fn``, the synthetic batch of the loss
plans, and for a model's own training step the candidates built from the input signatures of the
model and of its sub-models."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from gradcheck.layers import layers_of
from gradcheck.plans.compiled import loss_names
from gradcheck.plans.inputs import parse_override, signature
from gradcheck.plans.legacy import is_compiled
from gradcheck.plans.synthetic import Batch, concrete_shape, make_batch, make_inputs
from gradcheck.plans.targets import candidate_fits, target_for
from gradcheck.problems import ErrorKind, SourceProblem, describe_exception


@dataclass(frozen=True)
class StepBatch:
    """A ``train_step`` argument: x, (x, y) or (x, y, sample_weight), and where it came from."""

    data: Any  #: exactly what ``train_step(data)`` receives
    description: str  #: for the report, e.g. ``x from the inputs of 'discriminator'``


def load_data(spec: str) -> StepBatch:
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
    return StepBatch(data, f"--data {spec}")


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
               targets_first: bool) -> Iterator[Callable[[], StepBatch]]:
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
            return StepBatch(_inputs(owner, index_tree, specs, batch_size, seed), f"x from {label}")

        def with_targets(owner=owner, index_tree=index_tree, specs=specs, label=label, ids=False):
            x = _inputs(owner, index_tree, specs, batch_size, seed)
            kind = "class ids for" if ids else "y fitting"
            return StepBatch((x, synthetic_targets(model, x, class_ids=ids)),
                         f"(x, y) with x from {label} and {kind} the model's outputs")

        targets = [with_targets, functools.partial(with_targets, ids=True)] if owner is model else []
        if owner is model:  # the structures a compute_loss may ask for (plans.targets)
            targets += _fitted_target_batches(model, lambda o=owner, t=index_tree, s=specs:
                                              _inputs(o, t, s, batch_size, seed), label)
        yield from (targets + [x_only] if targets_first else [x_only] + targets)
    for _, index_tree, specs in own:  # the model refuses its default shapes: search
        yield from _searched_batches(model, index_tree, specs, batch_size, seed, targets_first)
    subs = [s for s in signatures if s[0] is not model]
    if not own:
        for first, second in _distinct_pairs(subs):
            def pair(first=first, second=second):
                return StepBatch((_inputs(*first, batch_size, seed), _inputs(*second, batch_size, seed + 1)),
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
    return layers_of(model, recursive=False)


def _inputs(owner, index_tree, specs, batch_size: int, seed: int):
    import keras
    import tensorflow as tf

    values = make_inputs(owner, index_tree, specs, batch_size=batch_size, seed=seed)
    return keras.tree.map_structure(tf.convert_to_tensor, values)


def _fitted_target_batches(model, make_x: Callable[[], Any], label: str) -> list:
    """(x, y[, sample_weight]) makers for each ``targets.candidate_fits`` structure."""
    def fitted(fit):
        x = make_x()
        y, sample_weight = fit.build(x, model(x, training=False))
        data = (x, y) if sample_weight is None else (x, y, sample_weight)
        return StepBatch(data, f"(x, y) with x from {label} and {fit.description}")

    return [functools.partial(fitted, fit) for fit in candidate_fits(model, loss_names(model))]


def _searched_batches(model, index_tree, specs, batch_size: int, seed: int,
                      targets_first: bool) -> Iterator[Callable[[], StepBatch]]:
    """The candidates again on the first input shapes the model's forward pass accepts after its
    defaults (``inputs.search``), if it refused them."""
    import keras

    from gradcheck.plans.search import search

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
        return StepBatch(make_x(), f"x from {label}")

    def with_targets():
        x = make_x()
        return StepBatch((x, synthetic_targets(model, x)), f"(x, y) with x from {label} and y "
                     "fitting the model's outputs")

    targets = [with_targets, *_fitted_target_batches(model, make_x, label)]
    yield from (targets + [x_only] if targets_first else [x_only] + targets)


def synthetic_targets(model, x, *, class_ids: bool = False, kind: str | None = None):
    """Targets that fit the model's compiled losses (or, without one, its outputs' values);
    ``class_ids``: sparse class ids for every output (a step whose loss is not compiled);
    ``kind``: every target of that kind (``plans.targets.TARGET_KINDS``)."""
    import keras

    outputs = model(x, training=False)
    names = loss_names(model) if is_compiled(model) else {}
    if class_ids:
        names = {i: "sparse" for i in range(len(keras.tree.flatten(outputs)))}
    flat = keras.tree.flatten(outputs)
    targets = [target_for(output, names.get(i), i, kind) for i, output in enumerate(flat)]
    return keras.tree.pack_sequence_as(outputs, targets)


def user_batch(options):
    """``--data``'s batch as (x, y, sample_weight), or None without ``--data``."""
    if not options.data:
        return None
    return unpack(load_data(options.data).data)


def synthetic_batch(model, options) -> Batch:
    """The loss plans' default batch: the model's signature with ``--input`` applied, filled in,
    after its size is charged to the memory budget."""
    from gradcheck.budget import charge_inputs

    index_tree, specs = signature(model, parse_overrides(options))  # none and no --input: refused
    charge_inputs([(spec.name, concrete_shape(spec, options.batch_size), spec.dtype)
                   for spec in specs])
    return make_batch(model, index_tree, specs, batch_size=options.batch_size, seed=options.seed)


def parse_overrides(options) -> list:
    """``--input``'s specs (a ``bad-input`` problem if one does not parse)."""
    try:
        return [parse_override(text) for text in options.inputs]
    except ValueError as exc:
        raise SourceProblem(ErrorKind.BAD_INPUT, str(exc)) from exc
