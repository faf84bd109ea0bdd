"""Intercepting a training step: every ``tape.gradient`` call and every optimizer apply.

``StepInterceptor`` patches ``tf.GradientTape.gradient`` and the ``apply`` / ``apply_gradients``
methods of every Keras optimizer class.  A gradient call is answered as asked, but always
computed under ``UnconnectedGradients.NONE`` first, so gradcheck sees which results are None
(a caller that asked for ZERO still gets zeros back); an optimizer is handed its gradients and
applies **nothing** — or, with ``apply=True`` (the steps of ``plans.steps``, run on a snapshot
the caller restores), applies them for real after they are recorded: ``before_apply`` hears
each optimizer before its first real update (to snapshot it), ``while_applying`` is entered
around every real update (the optimizer's own ops are no part of the step's record), and an
apply nested in another (a loss-scale optimizer's inner optimizer) is not recorded twice.  What
happened is kept in a ``StepRecord``, each gradient summarized at once by the caller's
``summarize`` (so no gradient outlives its use); on exit every patch is undone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from gradcheck.locations import SourceLocation, calling_location


@dataclass
class InterceptedCall:
    """One ``tape.gradient`` call of the step."""

    site: SourceLocation | None  #: the line that called it (the user's, or Keras' own step)
    target: Any  #: the differentiated tensor (alive until the op graph is built)
    results: dict[int, Any]  #: index of an asked-for watched variable -> ``summarize(gradient)``
    optimizer: str | None = None  #: the optimizer that applied (some of) its gradients


@dataclass
class Handed:
    """One watched variable handed to an optimizer, with or without a gradient."""

    optimizer: str  #: the model attribute holding the optimizer (or the optimizer's name)
    result: Any  #: ``summarize`` of the gradient it was handed (of None: none)
    call: int | None  #: index of the gradient call that produced it, if known


@dataclass
class StepRecord:
    """What one run of the training step did, in terms of the watched variables' indices."""

    calls: list[InterceptedCall] = field(default_factory=list)
    handed: dict[int, list[Handed]] = field(default_factory=dict)  #: by variable index
    #: id(gradient tensor) -> (the tensor, its gradient call, its variable index), during the step
    produced: dict[int, tuple[Any, int, int]] = field(default_factory=dict)


class StepInterceptor:
    """Context manager patching ``GradientTape.gradient`` and the optimizers' apply methods.

    ``variables`` are the watched variables (Keras or ``tf.Variable``); ``summarize`` turns a
    gradient (or None) into what the record keeps; ``name_optimizer`` turns an optimizer into the
    name the report gives it.  A gradient handed with another variable's shape raises
    ``ValueError``, as the real optimizer would.
    """

    def __init__(self, variables: list, summarize: Callable[[Any], Any],
                 name_optimizer: Callable[[Any], str], *, apply: bool = False,
                 before_apply: Callable[[Any], None] | None = None,
                 while_applying: Callable[[], Any] | None = None):
        self.record = StepRecord()
        self._really_apply = apply
        self._before_apply = before_apply or (lambda optimizer: None)
        self._while_applying = while_applying or contextlib.nullcontext
        self._applying = 0  #: depth of real applies in progress (nested ones are not recorded)
        self._seen_optimizers: set[int] = set()
        self._index = {id(tf_variable(v)): i for i, v in enumerate(variables)}
        self._summarize = summarize
        self._name = name_optimizer
        self._patched: list[tuple[type, str, Any]] = []
        self._tensors: list[set[int]] = []  #: per call, the variables it returned a tensor for

    def _returned_tensor(self, call: int, index: int) -> bool:
        return index in self._tensors[call]

    def __enter__(self):
        import tensorflow as tf
        from keras.src.optimizers.base_optimizer import BaseOptimizer

        original_gradient = vars(tf.GradientTape)["gradient"]

        def gradient(original, tape, *args, **kwargs):
            return self._gradient(original_gradient, tape, *args, **kwargs)

        self._patch(tf.GradientTape, "gradient", gradient)
        for cls in _with_subclasses(BaseOptimizer):  # subclasses may override apply (loss scaling)
            if "apply" in vars(cls):
                self._patch(cls, "apply", self._apply)
            if "apply_gradients" in vars(cls):
                self._patch(cls, "apply_gradients", self._apply_gradients)
        return self

    def __exit__(self, *exc):
        for cls, name, original in reversed(self._patched):
            setattr(cls, name, original)
        self._patched.clear()
        return False

    def _patch(self, cls, name: str, replacement: Callable) -> None:
        """Replace ``cls.name`` by ``replacement`` (called with the original, then the instance)
        until exit."""
        original = vars(cls)[name]
        self._patched.append((cls, name, original))

        def patched(instance, *args, **kwargs):
            return replacement(original, instance, *args, **kwargs)

        setattr(cls, name, patched)

    def _gradient(self, original, tape, target, sources, output_gradients=None,
                  unconnected_gradients=None):
        import tensorflow as tf

        site = calling_location(skip=3)
        result = original(tape, target, sources, output_gradients=output_gradients,
                          unconnected_gradients=tf.UnconnectedGradients.NONE)
        flat_sources, flat_grads = tf.nest.flatten(sources), tf.nest.flatten(result)
        call = InterceptedCall(site, target, {})
        number = len(self.record.calls)
        self._tensors.append(set())
        for source, grad in zip(flat_sources, flat_grads):
            index = self._index.get(id(tf_variable(source)))
            if index is None:
                continue  # a gradient with respect to a tensor (a gradient penalty's input)
            call.results[index] = self._summarize(grad)
            if grad is not None:
                self.record.produced[id(grad)] = (grad, number, index)
                self._tensors[number].add(index)
        self.record.calls.append(call)
        if unconnected_gradients is not None and \
                str(unconnected_gradients).lower().endswith("zero"):
            zeros = [tf.zeros_like(s) if g is None else g for s, g in zip(flat_sources, flat_grads)]
            return tf.nest.pack_sequence_as(result, zeros)
        return result

    def _apply(self, original, optimizer, grads, trainable_variables=None, *args, **kwargs):
        if self._applying:  # inside a real apply: the outer one recorded it
            self._note(optimizer)
            return original(optimizer, grads, trainable_variables, *args, **kwargs)
        grads = list(grads)
        handed = trainable_variables
        if handed is None:
            handed = getattr(optimizer, "_trainable_variables", None) or []
        self._hand(optimizer, grads, list(handed))
        if self._really_apply:
            return self._applied(original, optimizer, grads, trainable_variables, *args, **kwargs)
        return None

    def _apply_gradients(self, original, optimizer, grads_and_vars, *args, **kwargs):
        if self._applying:
            self._note(optimizer)
            return original(optimizer, grads_and_vars, *args, **kwargs)
        pairs = list(grads_and_vars)
        self._hand(optimizer, [g for g, _ in pairs], [v for _, v in pairs])
        if self._really_apply:
            return self._applied(original, optimizer, pairs, *args, **kwargs)
        return optimizer.iterations

    def _applied(self, original, optimizer, *args, **kwargs):
        """Run the optimizer's own update, unrecorded, after ``before_apply`` has heard of it."""
        self._applying += 1
        try:
            with self._while_applying():
                self._note(optimizer)
                return original(optimizer, *args, **kwargs)
        finally:
            self._applying -= 1

    def _note(self, optimizer) -> None:
        if id(optimizer) not in self._seen_optimizers:
            self._seen_optimizers.add(id(optimizer))
            self._before_apply(optimizer)

    def _hand(self, optimizer, grads: list, variables: list) -> None:
        name = self._name(optimizer)
        for grad, variable in zip(grads, variables):
            _check_shape(name, grad, variable)
            index = self._index.get(id(tf_variable(variable)))
            if index is None:
                continue
            produced = self.record.produced.get(id(grad)) if grad is not None else None
            call = produced[1] if produced is not None and produced[0] is grad else None
            if call is None:
                call = self._asking_call(index, returned_tensor=grad is not None)
            if call is not None and self.record.calls[call].optimizer is None:
                self.record.calls[call].optimizer = name
            self.record.handed.setdefault(index, []).append(
                Handed(name, self._summarize(grad), call))

    def _asking_call(self, index: int, *, returned_tensor: bool) -> int | None:
        """The last gradient call that asked for variable ``index`` (and got a tensor, if
        ``returned_tensor``)."""
        for number in range(len(self.record.calls) - 1, -1, -1):
            results = self.record.calls[number].results
            if index in results and self._returned_tensor(number, index) == returned_tensor:
                return number
        return None


def _check_shape(optimizer: str, grad, variable) -> None:
    """Refuse what the real optimizer would fail on: a gradient of another variable's shape."""
    if grad is None:
        return
    shape = getattr(grad, "dense_shape", None)
    shape = tuple(int(d) for d in shape) if shape is not None else tuple(grad.shape)
    if shape != tuple(variable.shape):
        raise ValueError(f"{optimizer} is handed a gradient of shape {shape} for "
                         f"'{getattr(variable, 'path', variable.name)}' of shape "
                         f"{tuple(variable.shape)}: the lists passed to tape.gradient and to the "
                         "optimizer are not in the same order")


def _with_subclasses(cls) -> Iterator[type]:
    seen, stack = set(), [cls]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        yield current
        stack.extend(current.__subclasses__())


def tf_variable(variable):
    """The ``tf.Variable`` behind a Keras variable (the object itself otherwise)."""
    import keras

    return variable.value if isinstance(variable, keras.Variable) else variable
