"""The variables a plan judges, each with the ``path`` the report gives it, whatever made it.

Keras 3 variables carry a ``path`` (``dense/kernel``) and are judged as they are.  A plain
``tf.Variable`` (a ``tf.Module``'s, a restored SavedModel's, a ``tf_keras`` layer's, or one a
training loop holds) has only a ``name`` (``dense/kernel:0``, often just ``Variable:0``), so it is
judged through a ``NamedVariable``: the same variable, with a ``path`` that is unique among the
variables judged.  A ``NamedVariable``'s ``value`` is the ``tf.Variable`` itself, as a Keras
variable's is, so every place that reads a handle (``getattr(v, "value", v).handle``) or
intercepts a gradient treats both alike.
"""

from __future__ import annotations

from collections.abc import Container, Iterable


class NamedVariable:
    """A ``tf.Variable`` judged under ``path``: shape, dtype and values read through."""

    def __init__(self, variable, path: str):
        self.value = variable  #: the ``tf.Variable`` (as ``keras.Variable.value`` is)
        self.path = path  #: the name the report gives it

    @property
    def shape(self):
        return self.value.shape

    @property
    def dtype(self) -> str:
        return self.value.dtype.base_dtype.name

    @property
    def trainable(self) -> bool:
        return bool(self.value.trainable)

    @property
    def handle(self):
        return self.value.handle

    @property
    def name(self) -> str:
        return self.value.name

    def numpy(self):
        return self.value.numpy()

    def assign(self, value):
        return self.value.assign(value)

    def __repr__(self) -> str:
        return f"<NamedVariable {self.path} shape={tuple(self.shape)}>"


def is_keras_variable(variable) -> bool:
    """A Keras 3 variable (it has a ``path``, and its ``value`` is the ``tf.Variable``)."""
    import keras

    return isinstance(variable, keras.Variable)


def underlying(variable):
    """The ``tf.Variable`` behind a Keras 3 variable or a ``NamedVariable`` (else the object)."""
    if isinstance(variable, NamedVariable) or is_keras_variable(variable):
        return variable.value
    return variable


def variable_name(variable) -> str:
    """A ``tf.Variable``'s name without the ``:0`` TensorFlow adds."""
    name = str(getattr(variable, "name", "") or "variable")
    return name[:-2] if name.endswith(":0") else name


def judged(variables: Iterable, hints: dict[int, str] | None = None, *,
           prefer_hints: bool | Container[int] = False) -> list:
    """``variables`` ready to judge, deduplicated (the same ``tf.Variable`` reached twice counts
    once), in order: Keras 3 variables as they are, the others as ``NamedVariable``s.

    A plain variable's path is its name, or, when that name is TensorFlow's default or is shared
    with another judged variable, ``hints[id(variable)]`` (where the caller found it, e.g. the
    global ``w1`` or ``mlp/layers/0/w``; always with ``prefer_hints``, or for the ids it holds),
    made unique with ``#N`` if it must be.
    """
    hints = hints or {}
    unique, seen = [], set()
    for variable in variables:
        key = id(underlying(variable))
        if key not in seen:
            seen.add(key)
            unique.append(variable)
    plain = {id(v) for v in unique if not is_keras_variable(v) and not isinstance(v, NamedVariable)}
    counts: dict[str, int] = {}
    for v in unique:
        if id(v) in plain:
            counts[variable_name(v)] = counts.get(variable_name(v), 0) + 1
    taken = {v.path for v in unique if id(v) not in plain}
    result = []
    for variable in unique:
        if id(variable) not in plain:
            result.append(variable)
            continue
        name = variable_name(variable)
        generic = name.split("/")[-1].split("_")[0] == "Variable"
        preferred = prefer_hints is True or (not isinstance(prefer_hints, bool)
                                             and id(variable) in prefer_hints)
        if (counts[name] > 1 or generic or preferred) and id(variable) in hints:
            name = hints[id(variable)]
        path, number = name, 1
        while path in taken:
            number += 1
            path = f"{name}#{number}"
        taken.add(path)
        result.append(NamedVariable(variable, path))
    return result


def trainable_of(obj) -> list:
    """The trainable variables of a Keras layer, a ``tf.Module`` or a variable (else none)."""
    import tensorflow as tf

    if isinstance(obj, tf.Variable) or is_keras_variable(obj):
        return [obj] if obj.trainable else []
    try:
        return list(getattr(obj, "trainable_variables", None) or [])
    except Exception:  # a half-built object: nothing to judge yet
        return []


def judged_variables(model) -> list:
    """The trainable variables a plan judges of ``model`` (Keras 3, ``tf_keras`` or a module);
    a ``tf_keras`` model's are named by the layers that hold them (``plans.legacy``)."""
    from gradcheck.plans.legacy import is_tf_keras, variable_paths

    if is_tf_keras(model):
        return judged(trainable_of(model), variable_paths(model), prefer_hints=True)
    return judged(trainable_of(model))
