"""A batch learned from the training step itself, for a trainer with no input signature anywhere.

Some trainers take a dict batch whose keys and shapes nothing declares (bayesflow's
approximators: ``train_step(data)`` hands ``data``'s entries to ``compute_metrics(**kwargs)``, and
the networks build themselves on the first batch).  The step says what it needs when it fails, so
gradcheck asks it: it starts from an empty dict and runs the step (nothing applied, everything
put back: ``plans.steps.nothing_applied``), and on each failure

- adds the keys the error names: a ``KeyError``'s key, the arguments a call was missing
  (``missing 1 required positional argument: 'inference_variables'``), or an argument that was
  None in a frame of the failure and that the message names ("Summary variables are required");
- else gives the next shape of ``SHAPES`` to the entry the failing frames hold (found by
  identity in their locals): features, then a set of items, then a scalar per row;
- else adds an argument the frame that received the entries left None (an optional condition
  the network needs after all), masks and weights last;

for at most ``MAX_ATTEMPTS`` runs.  The first batch the step runs on (reading at least one key)
is the batch; the report's note lists its keys and shapes.  ``--data`` stays the override.
"""

from __future__ import annotations

import re

from gradcheck.hooks.eager import FunctionsRunEagerly
from gradcheck.plans.batches import StepBatch
from gradcheck.plans.steps import nothing_applied
from gradcheck.problems import ErrorKind, SourceProblem

#: Shapes tried for an entry, without the batch dim, in order.
SHAPES: tuple[tuple[int, ...], ...] = ((4,), (8, 4), ())


#: Runs of the step at most, while learning its batch.
MAX_ATTEMPTS = 12


_MISSING = re.compile(r"missing \d+ required (?:positional|keyword-only) arguments?: (.*)")


class _Unlearnable(Exception):
    """The step's failure names nothing a dict batch could give."""


def learned_batch(model, *, batch_size: int, seed: int) -> StepBatch:
    """The dict batch the step runs on, learned from its failures (see the module docstring)."""
    shapes: dict[str, int] = {}  # key -> index into SHAPES
    for _ in range(MAX_ATTEMPTS):
        data = _dict_batch(shapes, batch_size, seed)
        error = _attempt(model, data)
        if error is None:
            if not shapes:
                break  # the step reads nothing from its batch: nothing was learned
            described = ", ".join(f"{key} {tuple(value.shape)}" for key, value in data.items())
            return StepBatch(data, f"a dict learned from the train_step's own reads ({described})")
        keys = [key for key in _named_keys(error) if key not in shapes]
        if keys:
            shapes.update(dict.fromkeys(keys, 0))
            continue
        key = _implicated(error, data)
        if key is not None and shapes[key] + 1 < len(SHAPES):
            shapes[key] += 1
            continue
        optional = _unset_arguments(error, data, shapes)
        if not optional:
            break
        shapes[optional[0]] = 0
    raise SourceProblem(ErrorKind.NO_BATCH, "neither the model nor its sub-models have an input "
                        "signature to build the batch of its train_step from, and the step's own "
                        "errors did not say what it reads; give the batch with --data module:fn "
                        "(a function returning x, (x, y) or (x, y, sample_weight)).")


def _dict_batch(shapes: dict[str, int], batch_size: int, seed: int) -> dict:
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    data = {}
    for key, index in shapes.items():
        shape = (batch_size, *SHAPES[index])
        value = np.ones(shape) if "mask" in key.lower() else rng.standard_normal(shape)
        data[key] = tf.convert_to_tensor(value.astype("float32"))
    return data


def _attempt(model, data: dict) -> BaseException | None:
    """Run the step once on ``data``, changing nothing; its error, or None if it ran."""
    try:
        with nothing_applied(model, list(model.trainable_variables)), FunctionsRunEagerly():
            model.train_step(dict(data))
    except Exception as exc:
        return exc
    return None


def _named_keys(error: BaseException) -> list[str]:
    """The keys an error asks for: a missing key, missing arguments, or arguments that were None
    in a failing frame and that the message names."""
    if isinstance(error, KeyError) and error.args and isinstance(error.args[0], str):
        return [error.args[0]]
    text = str(error)
    missing = _MISSING.search(text)
    if isinstance(error, TypeError) and missing:
        return re.findall(r"'(\w+)'", missing.group(1))
    words = re.sub(r"[^a-z0-9]+", "_", text.lower())
    named = []
    for frame in _frames(error):
        code = frame.f_code
        arguments = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
        named += [name for name in arguments if frame.f_locals.get(name, 0) is None
                  and len(name) > 2 and name.lower() in words and name not in named]
    return named


def _unset_arguments(error: BaseException, data: dict, shapes: dict) -> list[str]:
    """The arguments left None by the failing frame that received the batch's entries (an
    optional condition the network needs after all), masks and weights last."""
    for frame in reversed(_frames(error)):
        if not any(local is value for value in data.values() for local in frame.f_locals.values()):
            continue
        code = frame.f_code
        arguments = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
        unset = [name for name in arguments if frame.f_locals.get(name, 0) is None
                 and name not in shapes]
        return sorted(unset, key=lambda name: "mask" in name or "weight" in name)
    return []


def _implicated(error: BaseException, data: dict) -> str | None:
    """The entry of ``data`` held by the innermost failing frame that holds one (the one the
    message names, if that frame holds several)."""
    text = str(error).lower()
    for frame in reversed(_frames(error)):
        held = [key for key, value in data.items()
                if any(local is value for local in frame.f_locals.values())]
        if held:
            return next((key for key in held if key.lower() in text), held[0])
    return None


def _frames(error: BaseException) -> list:
    """The frames of the error's traceback, outermost first."""
    frames, tb = [], error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames
