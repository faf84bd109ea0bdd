"""Intercepting a training step: every ``tape.gradient`` call and every optimizer apply.

``StepInterceptor`` patches ``tf.GradientTape.gradient`` and the ``apply`` / ``apply_gradients``
methods of every Keras optimizer class.  A gradient call is answered as asked, but always
computed under ``UnconnectedGradients.NONE`` first, so gradcheck sees which results are None
(a caller that asked for ZERO still gets zeros back); an optimizer is handed its gradients and
applies **nothing**.  What happened is kept in a ``StepRecord``, each gradient summarized at once
by the caller's ``summarize`` (so no gradient outlives its use); on exit every patch is undone.
"""

from __future__ import annotations

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
    #: every variable the tape watched, when it watches what it reads (the default): a variable
    #: it did not watch was never read while it recorded; None for a tape that watches by hand
    watched: tuple | None = None


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
    #: ``id(handle)`` of every variable outside the watched ones an optimizer was handed a
    #: gradient for (a ``tf.Variable`` the model does not track, trained by the step itself)
    handed_others: set[int] = field(default_factory=set)
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
                 name_optimizer: Callable[[Any], str]):
        self.record = StepRecord()
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

        def gradient(tape, *args, **kwargs):
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
        """Replace ``cls.name`` by ``replacement`` (called with the instance first) until exit."""
        self._patched.append((cls, name, vars(cls)[name]))

        def patched(instance, *args, **kwargs):
            return replacement(instance, *args, **kwargs)

        setattr(cls, name, patched)

    def _gradient(self, original, tape, target, sources, output_gradients=None,
                  unconnected_gradients=None):
        import tensorflow as tf

        site = calling_location(skip=3)
        watched = (tuple(tape.watched_variables())
                   if getattr(tape, "_watch_accessed_variables", False) else None)
        result = original(tape, target, sources, output_gradients=output_gradients,
                          unconnected_gradients=tf.UnconnectedGradients.NONE)
        flat_sources, flat_grads = tf.nest.flatten(sources), tf.nest.flatten(result)
        call = InterceptedCall(site, target, {}, watched=watched)
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

    def _apply(self, optimizer, grads, trainable_variables=None):
        if trainable_variables is None:
            trainable_variables = getattr(optimizer, "_trainable_variables", None) or []
        self._hand(optimizer, list(grads), list(trainable_variables))

    def _apply_gradients(self, optimizer, grads_and_vars, *args, **kwargs):
        pairs = list(grads_and_vars)
        self._hand(optimizer, [g for g, _ in pairs], [v for _, v in pairs])
        return optimizer.iterations

    def _hand(self, optimizer, grads: list, variables: list) -> None:
        name = self._name(optimizer)
        for grad, variable in zip(grads, variables):
            _check_shape(name, grad, variable)
            index = self._index.get(id(tf_variable(variable)))
            if index is None:
                if grad is not None and hasattr(tf_variable(variable), "handle"):
                    self.record.handed_others.add(id(tf_variable(variable).handle))
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
