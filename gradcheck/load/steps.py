"""A training-step function given as a source: ``train.py:train_step`` or ``pkg.mod:fn``.

``file.py:fn`` names either a model factory or one step of the user's own training loop.  They
are told apart without running anything, because a factory must never run twice and a step must
never run outside the interception (``plans.loop``):

- a ``tf.function``, or a function with a required positional argument (a batch), is a step;
- a function of no argument is a step when its code, or user code it calls, computes or applies
  gradients (it names ``GradientTape``, ``gradient``, ``apply_gradients`` or ``minimize``);
  a class defined inside a factory (a trainer with its own ``train_step``) does not count;
- anything else is a factory, called once as before.

A no-argument step that turns out to return a model without computing any gradient was a
factory after all: the loop plan ran it once, intercepted, and the model it returned is judged
(``StepReturnedModel``).
"""

from __future__ import annotations

import inspect
import types
from typing import Any

from gradcheck.load.reach import Reached, reach, reached_variables
from gradcheck.locations import is_user_file

#: Names whose presence in a function's code means it computes or applies gradients.
TRAINING_NAMES = frozenset({"GradientTape", "gradient", "apply_gradients", "minimize"})

#: How deep ``computes_gradients`` follows the user functions a function calls.
CALL_DEPTH = 4


def is_tf_function(function) -> bool:
    """A ``tf.function`` (its Python body is ``python_function``)."""
    return callable(function) and hasattr(function, "python_function")


def positional_parameters(function) -> tuple[list[str], int]:
    """The names of the positional parameters a step is called with, and how many are required."""
    target = function.python_function if is_tf_function(function) else function
    try:
        parameters = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):  # a builtin: no signature to read
        return [], 0
    positional = [p for p in parameters
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    return [p.name for p in positional], len(required)


def is_step_function(function) -> bool:
    """Is ``function`` one step of a training loop rather than a model factory?"""
    if inspect.isclass(function):
        return False
    if is_tf_function(function):
        return True
    if positional_parameters(function)[1] > 0:
        return True
    return computes_gradients(function)


def computes_gradients(function, depth: int = CALL_DEPTH) -> bool:
    """Does the code of ``function``, or of the user functions it refers to, name a gradient
    computation or an optimizer step?  Class bodies defined inside it are left out."""
    seen: set[int] = set()
    pending = [(function, depth)]
    while pending:
        current, left = pending.pop()
        current = getattr(current, "python_function", current)
        current = getattr(current, "__func__", current)
        code = getattr(current, "__code__", None)
        if code is None or id(code) in seen or not is_user_file(code.co_filename):
            continue
        seen.add(id(code))
        if TRAINING_NAMES & _names_in(code):
            return True
        if left == 0:
            continue
        namespace = getattr(current, "__globals__", {})
        called = [namespace.get(name) for name in _names_in(code)]
        called += [cell.cell_contents for cell in (current.__closure__ or ())
                   if _filled(cell)]
        pending.extend((c, left - 1) for c in called if callable(c) and not inspect.isclass(c))
    return False


def _names_in(code: types.CodeType) -> set[str]:
    """Every name the code and the functions nested in it use (class bodies left out)."""
    names, stack = set(), [code]
    while stack:
        current = stack.pop()
        if not current.co_flags & inspect.CO_NEWLOCALS:
            continue  # a class body: a trainer defined inside a factory
        names.update(current.co_names)
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    return names


def _filled(cell) -> bool:
    try:
        return cell.cell_contents is not _EMPTY
    except ValueError:  # a name the enclosing function assigns later
        return False


_EMPTY = object()


class StepSource:
    """One step of the user's training loop, as the source to judge (``plans.loop``).

    It stands where a model stands: ``name``, the ``variables`` a step may change (for
    ``plans.state``), the Keras layers its code reaches (``_flatten_layers``, for the diagnosis's
    layer facts), and the trainable variables it judges (``judged_variables``).
    """

    built = True

    def __init__(self, function, source: str, spec_name: str):
        self.function = function  #: as the user wrote it (a ``tf.function`` or plain Python)
        self.source = source
        self.name = spec_name
        self.parameters, self.required = positional_parameters(function)
        #: the ``tf.function``'s ``input_signature``, if it has one
        self.input_signature = getattr(function, "input_signature", None)
        self.arguments: tuple = ()  #: the positional arguments of the step being run
        self.extra: list = []  #: variables the step used that its code does not reach

    def reached(self) -> Reached:
        """What the step's code (and its arguments) reach, as of now (models build lazily)."""
        roots = [(self.function, self.name)]
        roots += [(value, name) for value, name in zip(self.arguments, self.parameters)]
        return reach(*roots)

    def judged_variables(self) -> list:
        """The trainable variables judged: every one the step reaches, and every one it asked a
        gradient for or handed an optimizer, each named (``plans.variables``)."""
        from gradcheck.plans.variables import judged

        variables, hints, forced = reached_variables(self.reached())
        return judged([*variables, *self.extra], hints, prefer_hints=forced)

    @property
    def trainable_variables(self) -> list:
        return self.judged_variables()

    @property
    def variables(self) -> list:
        """Every variable the step may change: its layers', modules', optimizers' and metrics',
        and the variables it holds directly."""
        found = self.reached()
        variables: list[Any] = list(found.variables) + list(self.extra)
        for owner in (*found.layers, *found.modules, *found.metrics):
            variables.extend(_all_variables(owner))
        for optimizer in found.optimizers:
            variables.extend(_all_variables(optimizer))
        return variables

    @property
    def metrics(self) -> list:
        return self.reached().metrics

    def optimizer_names(self) -> dict[int, str]:
        """``id(optimizer)`` -> the name the step's code holds it by (``d_optimizer``)."""
        found = self.reached()
        return {id(o): found.names.get(id(o), "").rsplit(".", 1)[-1] for o in found.optimizers}

    def _flatten_layers(self, include_self: bool = False, recursive: bool = True):
        from gradcheck.layers import layers_of

        for layer in self.reached().layers:
            yield from (layers_of(layer, include_self=True) if recursive else [layer])


def _all_variables(owner) -> list:
    variables = getattr(owner, "variables", ())
    if callable(variables):  # legacy optimizers: variables() is a method
        try:
            variables = variables()
        except Exception:
            variables = ()
    return list(variables or ())


class StepReturnedModel(Exception):
    """A no-argument function run as a step computed no gradient and returned a model: it was a
    factory, and ``model`` is what it built."""

    def __init__(self, model):
        super().__init__("the step function returned a model")
        self.model = model
