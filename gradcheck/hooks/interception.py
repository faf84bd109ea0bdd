"""Intercepting a training step: every ``tape.gradient`` call and every optimizer apply.

``StepInterceptor`` patches ``tf.GradientTape.gradient`` and the ``apply`` / ``apply_gradients``
/ ``minimize`` methods of every optimizer class loaded: Keras 3's, ``tf.compat.v1.train``'s and,
when ``tf_keras`` is imported, its optimizers and legacy optimizers.  A gradient call is answered
as asked, but always computed under ``UnconnectedGradients.NONE`` first, so gradcheck sees which
results are None; a caller that asked for ZERO still gets zeros back, and the record keeps which
variables got zeros in place of None (and whether the real call would have raised: TensorFlow
fills those zeros from the source's dtype, which a Keras 3 variable gives as a string).  An
optimizer is handed its gradients and applies **nothing** — or, with ``apply=True`` (the steps of
``plans.steps``, run on a snapshot the caller restores), applies them for real after they are
recorded: ``before_apply`` hears each optimizer before its first real update (to snapshot it),
``while_applying`` is entered around every real update (the optimizer's own ops are no part of
the step's record), and an apply nested in another (a loss-scale optimizer's inner optimizer) is
not recorded twice.  ``minimize`` computes its gradients through the patched ``tape.gradient``,
named after the line that called ``minimize``.  What
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
    #: every variable the tape watched, when it watches what it reads (the default): a variable
    #: it did not watch was never read while it recorded; None for a tape that watches by hand
    watched: tuple | None = None
    zero_requested: bool = False  #: asked with ``unconnected_gradients=ZERO``
    filled: set[int] = field(default_factory=set)  #: variables whose None ZERO turned into zeros
    #: the real call raises: a source ZERO had to fill was passed as a Keras 3 variable
    raises: bool = False
    not_watched: set[int] = field(default_factory=set)  #: asked for, but the tape never watched it


@dataclass
class Handed:
    """One watched variable handed to an optimizer, with or without a gradient."""

    optimizer: str  #: the model attribute holding the optimizer (or the optimizer's name)
    result: Any  #: ``summarize`` of the gradient it was handed (of None: none)
    call: int | None  #: index of the gradient call that produced it, if known
    filled: bool = False  #: it was handed the zeros ZERO put in place of a None gradient


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
    #: the same for the zeros a ZERO request returned in place of None
    filled: dict[int, tuple[Any, int, int]] = field(default_factory=dict)
    #: trainable variables asked for or handed to an optimizer that are not watched, by
    #: ``id`` of their ``tf.Variable`` (a loop's variable its code reached some other way)
    unjudged: dict[int, Any] = field(default_factory=dict)


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
        self._minimize_sites: list = []  #: the lines of the ``minimize`` calls under way

    def _returned_tensor(self, call: int, index: int) -> bool:
        return index in self._tensors[call]

    def __enter__(self):
        import tensorflow as tf

        original_gradient = vars(tf.GradientTape)["gradient"]

        def gradient(original, tape, *args, **kwargs):
            return self._gradient(original_gradient, tape, *args, **kwargs)

        self._patch(tf.GradientTape, "gradient", gradient)
        for cls in optimizer_classes():  # subclasses may override apply (loss scaling)
            if "apply" in vars(cls) and _is_keras3(cls):
                self._patch(cls, "apply", self._apply)
            if "apply_gradients" in vars(cls):
                self._patch(cls, "apply_gradients", self._apply_gradients)
            if "minimize" in vars(cls):
                self._patch(cls, "minimize", self._minimize)
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

    def _minimize(self, original, optimizer, *args, **kwargs):
        """``minimize`` as written, its gradient calls named after the line that called it."""
        self._minimize_sites.append(calling_location(skip=3))
        try:
            return original(optimizer, *args, **kwargs)
        finally:
            self._minimize_sites.pop()

    def _gradient(self, original, tape, target, sources, output_gradients=None,
                  unconnected_gradients=None):
        import tensorflow as tf

        site = self._minimize_sites[-1] if self._minimize_sites else calling_location(skip=3)
        by_hand = _watched(tape)
        accessed = (tuple(tape.watched_variables())
                    if getattr(tape, "_watch_accessed_variables", False) else None)
        result = original(tape, target, sources, output_gradients=output_gradients,
                          unconnected_gradients=tf.UnconnectedGradients.NONE)
        flat_sources, flat_grads = tf.nest.flatten(sources), tf.nest.flatten(result)
        zero = unconnected_gradients is not None and \
            str(unconnected_gradients).lower().endswith("zero")
        call = InterceptedCall(site, target, {}, watched=accessed, zero_requested=zero)
        number = len(self.record.calls)
        self._tensors.append(set())
        filled = [tf.zeros_like(s) if g is None and zero else g
                  for s, g in zip(flat_sources, flat_grads)]
        for source, grad, given in zip(flat_sources, flat_grads, filled):
            if zero and grad is None and not isinstance(getattr(source, "dtype", None), tf.DType):
                call.raises = True  # TensorFlow reads the fill's dtype from the source itself
            index = self._index.get(id(tf_variable(source)))
            if index is None:  # a tensor (a gradient penalty's input), or a variable not judged
                self._unjudged(source)
                continue
            call.results[index] = self._summarize(grad)
            if grad is None and by_hand is not None and id(tf_variable(source)) not in by_hand:
                call.not_watched.add(index)
            if grad is not None:
                self.record.produced[id(grad)] = (grad, number, index)
                self._tensors[number].add(index)
            elif zero:
                call.filled.add(index)
                self.record.filled[id(given)] = (given, number, index)
        self.record.calls.append(call)
        return tf.nest.pack_sequence_as(result, filled) if zero else result

    def _apply(self, original, optimizer, grads, trainable_variables=None, *args, **kwargs):
        if self._applying:  # inside a real apply: the outer one recorded it
            self._note(optimizer)
            return original(optimizer, grads, trainable_variables, *args, **kwargs)
        grads = list(grads)
        handed = trainable_variables
        if handed is None:
            handed = getattr(optimizer, "_trainable_variables", None) or []
        self._hand(optimizer, grads, list(handed))
        if self._really_apply and _any_gradient(grads):
            return self._applied(original, optimizer, grads, trainable_variables, *args, **kwargs)
        return None

    def _apply_gradients(self, original, optimizer, grads_and_vars, *args, **kwargs):
        if self._applying:
            self._note(optimizer)
            return original(optimizer, grads_and_vars, *args, **kwargs)
        pairs = list(grads_and_vars)
        self._hand(optimizer, [g for g, _ in pairs], [v for _, v in pairs])
        if self._really_apply and _any_gradient([g for g, _ in pairs]):
            return self._applied(original, optimizer, pairs, *args, **kwargs)
        return getattr(optimizer, "iterations", None)

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
                if grad is not None and hasattr(tf_variable(variable), "handle"):
                    self.record.handed_others.add(id(tf_variable(variable).handle))
                self._unjudged(variable)
                continue
            call, filled = self._origin(index, grad)
            if call is not None and self.record.calls[call].optimizer is None:
                self.record.calls[call].optimizer = name
            self.record.handed.setdefault(index, []).append(
                Handed(name, self._summarize(grad), call, filled))

    def _unjudged(self, source) -> None:
        import tensorflow as tf

        variable = tf_variable(source)
        if isinstance(variable, tf.Variable) and variable.trainable:
            self.record.unjudged.setdefault(id(variable), source)

    def _origin(self, index: int, grad) -> tuple[int | None, bool]:
        """The gradient call that produced ``grad`` for variable ``index``, and whether it is
        (still) the zeros a ZERO request put in place of None (clipped or scaled, zeros stay
        zeros)."""
        for table, filled in ((self.record.produced, False), (self.record.filled, True)):
            entry = table.get(id(grad)) if grad is not None else None
            if entry is not None and entry[0] is grad:
                return entry[1], filled
        call = self._asking_call(index, returned_tensor=grad is not None)
        if call is None and grad is not None:
            call = self._asking_call(index, returned_tensor=False)
            if call is not None and index in self.record.calls[call].filled:
                return call, _all_zeros(grad)
        return call, False

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


def _watched(tape) -> set[int] | None:
    """``id`` of every ``tf.Variable`` a tape that watches only what it is told watches (None: it
    watches every variable read, or it cannot tell)."""
    if getattr(tape, "_watch_accessed_variables", True):
        return None
    try:
        return {id(tf_variable(v)) for v in tape.watched_variables()}
    except Exception:  # a tape already used
        return None


def _all_zeros(grad) -> bool:
    values = getattr(grad, "values", grad)  # IndexedSlices: its rows
    return not values.numpy().any()


def optimizer_classes() -> list[type]:
    """Every optimizer class loaded: Keras 3's, ``tf.compat.v1.train``'s, and ``tf_keras``'s
    (new and legacy) once the user's code has imported it, with all their subclasses."""
    import sys

    import tensorflow as tf
    from keras.src.optimizers.base_optimizer import BaseOptimizer

    bases = [BaseOptimizer, tf.compat.v1.train.Optimizer]
    if "tf_keras" in sys.modules:
        for module, name in (("tf_keras.src.optimizers.optimizer", "_BaseOptimizer"),
                             ("tf_keras.src.optimizers.legacy.optimizer_v2", "OptimizerV2"),
                             ("tf_keras.src.optimizers.optimizer_v1", "Optimizer")):
            base = getattr(sys.modules.get(module), name, None)
            if base is not None:
                bases.append(base)
    found, seen = [], set()
    for base in bases:
        for cls in _with_subclasses(base):
            if cls not in seen:
                seen.add(cls)
                found.append(cls)
    return found


def _is_keras3(cls) -> bool:
    """Keras 3's ``apply(grads, variables)``; other optimizers' ``apply`` means something else."""
    from keras.src.optimizers.base_optimizer import BaseOptimizer

    return issubclass(cls, BaseOptimizer)


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
    """The ``tf.Variable`` behind a Keras variable or a named view of one (``plans.variables``),
    the object itself otherwise."""
    import tensorflow as tf

    value = getattr(variable, "value", None)
    return value if isinstance(value, tf.Variable) else variable


def _any_gradient(grads: list) -> bool:
    """Is there anything to apply?  With every gradient None there is not, and Keras' optimizer
    raises "No gradients provided for any variable" instead: the steps go on applying nothing,
    and every variable handed is judged unconnected."""
    return any(grad is not None for grad in grads)
