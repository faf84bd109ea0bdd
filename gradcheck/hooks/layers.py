"""Watching a step from the Keras side: which layers ran, and which branches chose a side.

``LayerCalls`` notes every ``Layer.__call__``; ``BranchRecorder`` every eager ``tf.cond`` /
``keras.ops.cond`` and every Python ``if`` on a tensor in user code, keeping the side not taken;
``FlippedTruthTest`` reruns a forward with one such ``if`` answered the other way.  Each is a
context manager that restores what it patched.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any


class LayerCalls:
    """Context manager noting every Keras layer whose ``__call__`` runs inside it.

    ``Layer.__call__`` is the one door every layer call goes through (functional models, nested
    models and keras-hub layers that override ``__call__`` all reach it via ``super()``), so
    observing it tells "never called" from "called but did not read the weight" by layer
    identity, where name scopes would be ambiguous between sub-models with equal layer names.
    ``outputs`` keeps what the last call of ``model`` returned (a training step's predictions).
    """

    def __init__(self, model=None):
        self.called: set[int] = set()  #: ``id`` of every layer called
        self.outputs = None  #: the last return value of ``model``'s own call
        self._model = model

    def __enter__(self):
        from keras.src.layers.layer import Layer

        self._layer_class = Layer
        self._original = original = Layer.__call__
        called, model = self.called, self._model

        @functools.wraps(original)
        def observed(layer, *args, **kwargs):
            called.add(id(layer))
            result = original(layer, *args, **kwargs)
            if layer is model:
                self.outputs = result
            return result

        Layer.__call__ = observed
        return self

    def __exit__(self, *exc):
        self._layer_class.__call__ = self._original
        return False


@dataclass
class Branch:
    """One eager ``tf.cond`` / ``keras.ops.cond`` the step ran: the side taken, and the other."""

    predicate: str | None  #: node of the predicate tensor (None: a Python value)
    taken: bool  #: the predicate's value
    not_taken: Any  #: the branch function the step did not run (None for a Python ``if``)
    location: Any  #: ``SourceLocation`` of the cond call in user code, or None
    truth_test: int | None = None  #: a Python ``if`` on a tensor: its index among the step's tests


class BranchRecorder:
    """Context manager noting every eagerly run ``tf.cond`` and ``smart_cond`` (``keras.ops.cond``),
    and every Python ``if`` on a tensor's value written in user code.

    Eagerly a cond is a Python branch: only the taken side runs and the tape never sees the
    other.  Keeping the other side's function lets a probe run it afterwards, off the tape, to
    find the weights read only there; a Python ``if`` is flipped in a variant forward instead
    (``FlippedTruthTest``).
    """

    def __init__(self, recorder):
        """``recorder`` is the step's ``hooks.ops.OpRecorder`` (it names the predicates' producers;
        while it is paused, no branch is noted either)."""
        self.branches: list[Branch] = []
        self._recorder = recorder
        self._truth_tests = 0

    def __enter__(self):
        import tensorflow as tf
        from tensorflow.python.framework import ops

        self._patched = [(tf, "cond"), (tf.__internal__.smart_cond, "smart_cond"),
                         (ops._EagerTensorBase, "__bool__")]
        self._originals = [getattr(module, name) for module, name in self._patched]
        for (module, name), original in zip(self._patched[:2], self._originals):
            setattr(module, name, self._observing(original))
        ops._EagerTensorBase.__bool__ = self._observing_truth(self._originals[2])
        return self

    def _observing_truth(self, original):
        from gradcheck.locations import caller_location

        @functools.wraps(original)
        def observed(tensor):
            value = original(tensor)
            if self._recorder.paused:  # not the step's own test (an optimizer's update)
                return value
            index, self._truth_tests = self._truth_tests, self._truth_tests + 1
            location = caller_location()
            if location is not None:  # a branch in user code, not one inside TF or Keras
                self.branches.append(Branch(self._recorder.producer_of(tensor), value, None,
                                            location, index))
            return value

        return observed

    def __exit__(self, *exc):
        for (module, name), original in zip(self._patched, self._originals):
            setattr(module, name, original)
        return False

    def _observing(self, original):
        from gradcheck.locations import caller_location

        @functools.wraps(original)
        def observed(pred, true_fn=None, false_fn=None, *args, **kwargs):
            taken = None if self._recorder.paused else _eager_truth(pred)
            if taken is not None and callable(true_fn) and callable(false_fn):
                predicate = None if isinstance(pred, bool) else self._recorder.producer_of(pred)
                self.branches.append(Branch(predicate, taken, false_fn if taken else true_fn,
                                            caller_location()))
            return original(pred, true_fn, false_fn, *args, **kwargs)

        return observed


def _eager_truth(pred) -> bool | None:
    """A cond predicate's value when it is a Python bool or an eager scalar, else None."""
    if isinstance(pred, bool):
        return pred
    numpy = getattr(pred, "numpy", None)
    if numpy is None:
        return None
    try:
        return bool(numpy())
    except Exception:  # a symbolic or non-scalar predicate: not an eager branch
        return None


class FlippedTruthTest:
    """Context manager under which the ``index``-th Python truth test of a tensor answers the
    opposite: a forward run under it takes the other side of that ``if``."""

    def __init__(self, index: int):
        self._index = index

    def __enter__(self):
        from tensorflow.python.framework import ops

        self._original = original = ops._EagerTensorBase.__bool__
        seen = [0]

        @functools.wraps(original)
        def flipped(tensor):
            value = original(tensor)
            seen[0] += 1
            return (not value) if seen[0] - 1 == self._index else value

        ops._EagerTensorBase.__bool__ = flipped
        return self

    def __exit__(self, *exc):
        from tensorflow.python.framework import ops

        ops._EagerTensorBase.__bool__ = self._original
        return False
