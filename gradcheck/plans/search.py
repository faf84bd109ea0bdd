"""The input search: other sizes for the unknown dims when the model refuses the defaults.

By general rules (no model is special-cased): sequence lengths become the lengths the model's
layers declare, then 8, 4, 2, 1, then grow 16 → 32 … 512 → 4096, first for the groups of inputs
that hold a floating sequence (raw audio through wide strided convolutions), then for every
input, but only up to 512 when no floating sequence asks for more (token ids never need 4096);
the leading dim of a stack input (rank ≥ 4: images, masks) becomes 1 so that counts of related
inputs agree, and so does, in a second pass, the leading dim of a rank-3 input whose first two
dims are unknown (images × patches × width, clips × frames × mels: the positions an
``*_indices`` input scatters them to are then one item's tokens); unknown spatial dims try 32,
16 and 64, then the other inputs' image sizes and their halvings.  A candidate whose batch
exceeds ``MAX_BATCH_ELEMENTS`` input elements is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from gradcheck.plans.compiled import compute_with, loss_names
from gradcheck.plans.inputs import FLOAT_DTYPES, InputSpec
from gradcheck.plans.loss import LossFunction, projection_fallback
from gradcheck.plans.recorded import forward
from gradcheck.plans.synthetic import (
    DEFAULT_SIZES,
    FEATURE_DEFAULT,
    SEQUENCE_DEFAULT,
    Batch,
    Sizes,
    all_layers,
    concrete_shape,
    id_ranges,
    make_batch,
)
from gradcheck.plans.targets import candidate_fits
from gradcheck.problems import SourceProblem, describe_exception
from gradcheck.results import LossKind

#: The search's sequence lengths for every input, cheapest first: the default and shorter (a
#: fixed token count per image, positions) ...
SEARCH_LENGTHS = (8, 4, 2, 1)


#: ... then longer (image tokens spliced into the text; raw audio through wide strided
#: convolutions), first for the groups of inputs that hold a floating sequence, then for all.
#: Only inputs that hold a floating sequence reach the last, 4096: token ids never need it.
GROWTH_LENGTHS = (16, 32, 64, 128, 256, 512, 4096)


#: The search's sizes for unknown spatial dims (height/width of images and masks).
SEARCH_SPATIAL = (32, 16, 64)


#: No searched dim grows above this (the largest of ``GROWTH_LENGTHS``).
MAX_SEARCH_DIM = max(GROWTH_LENGTHS)


#: A searched batch holds at most this many input elements (all inputs, batch included): about
#: 16 MB of float32, so that the search never costs more memory than a small real batch.
MAX_BATCH_ELEMENTS = 1 << 22


def candidate_sizes(model, specs: list[InputSpec]) -> Iterator[Sizes]:
    """The search's candidates after the defaults, cheapest first (the short lengths again with
    the unknown last dim of floating inputs at each patch width the model declares,
    ``declared_features``; each width first as it is, then with rank-3 inputs ``stacked``, a
    stack of one item), each with every
    ``SEARCH_SPATIAL`` size and each ``_image_fractions`` size: every input at the lengths the
    model's layers declare and at ``SEARCH_LENGTHS``; then at each of ``GROWTH_LENGTHS``, each
    group with a floating sequence alone, those groups together, and every input (a mask named
    unlike its signal; not at the largest length unless a floating sequence asks for it)."""
    spatials = list(dict.fromkeys([*SEARCH_SPATIAL, *_image_fractions(specs)]))
    # flattened patches: the width a vision tower expects, tried after the default width
    for feature in [FEATURE_DEFAULT, *declared_features(model)]:
        for stacked in (False, True):
            for length in dict.fromkeys([*declared_lengths(model), *SEARCH_LENGTHS]):
                for spatial in spatials:
                    yield Sizes(length=length, spatial=spatial, count=1, feature=feature,
                                stacked=stacked)
    groups = _growing_groups(specs)
    for length in GROWTH_LENGTHS:
        choices = [*groups, frozenset().union(*groups)] if groups else []
        if groups or length < MAX_SEARCH_DIM:
            choices.append(None)
        for grown in choices:
            for spatial in spatials:
                yield Sizes(length=length, spatial=spatial, count=1, grown=grown)


def _image_fractions(specs: list[InputSpec]) -> list[int]:
    """Sizes an unknown spatial dim may have to match: the known height and width of the other
    rank-3+ inputs and their halvings down to 4 (a mask prompt at a quarter of the image)."""
    sizes = []
    for spec in specs:
        if len(spec.shape) >= 3:
            for dim in spec.shape[:-1]:
                while isinstance(dim, int) and dim >= 4:
                    sizes.append(dim)
                    dim //= 2
    return sorted(set(sizes) - set(SEARCH_SPATIAL))


def _growing_groups(specs: list[InputSpec]) -> list[frozenset[str]]:
    """Groups of inputs with a length dim whose names start with the same word (``encoder_…``,
    ``decoder_…``: a signal and its padding mask keep one length) and that hold a floating one."""
    groups: dict[str, set[str]] = {}
    floating: set[str] = set()
    for spec in specs:
        if 1 <= len(spec.shape) <= 2 and spec.shape[0] is None:
            word = spec.name.split("_", 1)[0]
            groups.setdefault(word, set()).add(spec.name)
            if spec.dtype in FLOAT_DTYPES:
                floating.add(word)
    return [frozenset(groups[word]) for word in groups if word in floating]


def declared_features(model) -> list[int]:
    """Widths of flattened image patches the model's layers declare: ``patch_size`` p (an int
    or a pair) gives p·p·3 (RGB) and p·p, smallest first."""
    if model is None:
        return []
    widths = set()
    for layer in all_layers(model):
        for attr, value in vars(layer).items():
            if "patch_size" not in attr:
                continue
            sides = (value, value) if type(value) is int else tuple(value) \
                if isinstance(value, (tuple, list)) and len(value) == 2 else ()
            if len(sides) == 2 and all(type(v) is int and v > 0 for v in sides):
                area = sides[0] * sides[1]
                widths.update({area * 3, area} - {8})
    return sorted(w for w in widths if w <= MAX_SEARCH_DIM)


def declared_lengths(model) -> list[int]:
    """Lengths the model states: int attributes named ``*length*`` of its layers (a position
    table's ``sequence_length``, a decoder's ``max_label_length``), smallest first."""
    if model is None:
        return []
    lengths = set()
    for layer in all_layers(model):
        for attr, value in vars(layer).items():
            if "length" in attr and type(value) is int and 1 <= value <= MAX_SEARCH_DIM:
                lengths.add(value)
    return sorted(lengths)


def search(model, index_tree, specs: list[InputSpec], *, batch_size: int, seed: int,
           accepts: Callable[[Batch], bool], include_default: bool = True) -> Batch | None:
    """The first candidate batch that ``accepts`` (e.g. the forward pass runs); None if none does.

    Candidates that give every input the same shapes as one tried before, or that hold more than
    ``MAX_BATCH_ELEMENTS`` elements, are skipped; no searched dim exceeds ``MAX_SEARCH_DIM``.
    """
    import numpy as np

    ranges = id_ranges(model, len(specs))
    seen = set()
    candidates = ([DEFAULT_SIZES] if include_default else []) + list(candidate_sizes(model, specs))
    if not include_default:
        seen.add(tuple(concrete_shape(s, batch_size) for s in specs))
    for sizes in candidates:
        shapes = tuple(concrete_shape(spec, batch_size, sizes) for spec in specs)
        if shapes in seen:
            continue
        seen.add(shapes)
        if sum(int(np.prod(shape)) for shape in shapes) > MAX_BATCH_ELEMENTS:
            continue
        batch = make_batch(model, index_tree, specs, batch_size=batch_size, seed=seed,
                           sizes=sizes, ranges=ranges)
        if accepts(batch):
            return _lengthened(specs, batch, lambda s: make_batch(
                model, index_tree, specs, batch_size=batch_size, seed=seed, sizes=s,
                ranges=ranges), accepts)
    return None


#: The lengthening tries at most this many shortened inputs (singles and pairs of them).
MAX_LENGTHENED = 6


def _lengthened(specs: list[InputSpec], batch: Batch, make: Callable[[Sizes], Batch],
                accepts: Callable[[Batch], bool]) -> Batch:
    """``batch`` with as many of the inputs the search shortened back at the default length as
    the model accepts: one input, else two together (a text and its padding mask), at a time.

    A short length the model needs for some inputs (one box, when keras-hub's SAM3 geometry
    encoder breaks on more) need not shorten the rest: a text of one token leaves its attention
    a one-element softmax, so query and key get exact zeros no real text gives them."""
    from dataclasses import replace
    from itertools import combinations

    sizes = batch.sizes
    if sizes.length >= SEQUENCE_DEFAULT or sizes.grown is not None:
        return batch
    default = replace(sizes, grown=frozenset())
    taking = {spec.name for spec in specs
              if concrete_shape(spec, 1, sizes) != concrete_shape(spec, 1, default)}
    if len(taking) > MAX_LENGTHENED:
        return batch
    while taking:
        subsets = [set(c) for k in (1, 2) for c in combinations(sorted(taking), k)]
        for subset in subsets:
            candidate = make(replace(sizes, grown=frozenset(taking - subset)))
            if accepts(candidate):
                batch, taking = candidate, taking - subset
                break
        else:
            break
    return batch

# --- the batch and the loss together ----------------------------------------------------------
# What the step runs on when the model refuses the defaults: a batch its forward pass accepts
# and targets its compiled loss accepts, searched together, eagerly and outside the recorded
# step.  Each candidate batch (``search`` order: the default first) is called once; on a batch
# the forward pass accepts with no empty output, the loss is tried as it is, then, for a
# compiled loss, with each ``targets.candidate_fits`` structure.  The first batch and loss that
# give a finite float scalar (non-zero preferred) and a backward pass that runs win.  If the
# forward pass accepts some batch but no compiled target fits any, the model is judged by the
# projection on the first accepted batch, with a warning.


def fit_batch_and_loss(model, batch: Batch, plan: LossFunction, problem: SourceProblem, *,
                       training: bool, batch_size: int,
                       seed: int) -> tuple[Batch, LossFunction, list[str]] | None:
    """The batch and loss plan to run the step on, and warnings; None if no batch runs forward.

    ``batch`` is the default batch and ``problem`` how the step failed on it.
    """
    accepted: list[Batch] = []
    fitted: list[LossFunction] = []
    loss_errors: list[str] = []

    def accepts(candidate: Batch) -> bool:
        import tensorflow as tf

        sources = [getattr(v, "value", v) for v in model.trainable_variables]
        try:
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(sources)
                outputs = forward(model, candidate.value, training)
                if _has_empty_output(outputs):  # a conv longer than its input
                    return False
                accepted.append(candidate)
                found, value = _fitting_plan(model, candidate.value, outputs, plan, training,
                                             loss_errors)
            if found is None:
                return False
            tape.gradient(value, sources)  # the backward pass runs too (empty convolutions fail)
        except Exception:
            return False
        fitted.append(found)
        return True

    found = search(model, batch.index_tree, batch.specs, batch_size=batch_size, seed=seed,
                   accepts=accepts)
    if found is not None:
        return found, fitted[-1], []  # the plan of the last accepted batch
    if not accepted or plan.kind is not LossKind.COMPILED:
        return None
    reason = loss_errors[0] if loss_errors else problem.message
    projection, warning = projection_fallback(reason)
    return accepted[0], projection, [warning]


def _fitting_plan(model, inputs, outputs, plan: LossFunction, training: bool,
                  errors: list[str]) -> tuple[LossFunction | None, object]:
    """``plan`` and its loss if that is a finite float scalar on these outputs, else a compiled
    plan with targets that fit and its loss, else (None, None); failures go to ``errors``."""
    plans = [plan]
    if plan.kind is LossKind.COMPILED:
        plans += [LossFunction(plan.kind, f"{plan.detail}; {fit.description}",
                               compute_with(fit.build, training), plan.adds_model_losses)
                  for fit in candidate_fits(model, loss_names(model))]
    zero_loss = None  # a loss of exactly 0 (no target matched anything) is the last resort
    for candidate in plans:
        try:
            value = candidate.compute(model, inputs, outputs)
        except Exception as exc:
            errors.append(describe_exception(exc))
            continue
        if not _is_finite_scalar(value):
            continue
        if float(value) != 0.0:
            return candidate, value
        zero_loss = zero_loss or (candidate, value)
    return zero_loss or (None, None)


def _has_empty_output(outputs) -> bool:
    import keras

    return any(0 in tuple(getattr(output, "shape", ()) or ()) for output in keras.tree.flatten(outputs))


def _is_finite_scalar(value) -> bool:
    import math

    import tensorflow as tf

    try:
        value = tf.convert_to_tensor(value)
    except Exception:
        return False
    return value.shape.rank == 0 and value.dtype.is_floating and math.isfinite(float(value))
