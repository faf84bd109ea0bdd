"""Where a Keras 2 (``tf_keras``) model or a plain ``tf.Module`` differs from a Keras 3 model, in
the terms the plans ask about: is it compiled, with which loss weights, what are its inputs.

The plans were written against Keras 3's attributes (``compiled``, ``_compile_loss``,
``_inputs_struct``, variables with a ``path``); each assumption that does not hold for the
others is answered here, so that the compiled loss, the projection and an own ``train_step``
judge a ``tf_keras`` model as they judge a Keras 3 one.  ``tf_keras``'s variables have no
``path``: ``plans.variables`` names them by ``name``.  Nothing here imports ``tf_keras``.
"""

from __future__ import annotations

import sys


def is_tf_keras(obj) -> bool:
    """A ``tf_keras`` layer or model (a class from the ``tf_keras`` package in its MRO)."""
    return is_tf_keras_class(type(obj))


def is_tf_keras_class(cls) -> bool:
    """A class derived from one of ``tf_keras``'s (a user's Keras 2 layer, say)."""
    if "tf_keras" not in sys.modules:
        return False
    return any(base.__module__.split(".")[0] == "tf_keras" for base in cls.__mro__)


def is_compiled(model) -> bool:
    """Keras 3's ``compiled``; ``tf_keras``'s ``_is_compiled``."""
    return bool(getattr(model, "compiled", False) or
                (is_tf_keras(model) and getattr(model, "_is_compiled", False)))


def compiled_loss_container(model):
    """The object that holds the compiled loss: Keras 3's ``_compile_loss``, ``tf_keras``'s
    ``compiled_loss`` (None: not compiled with a loss)."""
    container = getattr(model, "_compile_loss", None)
    if container is None and is_tf_keras(model):
        container = getattr(model, "compiled_loss", None)
        if container is not None and getattr(container, "_user_losses", None) is None:
            return None
    return container


def input_struct(model):
    """The model's symbolic inputs: Keras 3's ``_inputs_struct``, ``tf_keras``'s
    ``_nested_inputs`` (None: no functional signature)."""
    struct = getattr(model, "_inputs_struct", None)
    if struct is None and getattr(model, "_functional", None) is not None:
        struct = model._functional._inputs_struct  # Sequential keeps its graph here
    if struct is None and is_tf_keras(model):
        struct = getattr(model, "_nested_inputs", None)
    return struct


def build_shapes(model) -> dict:
    """The shapes a subclassed model was built with: Keras 3's ``_build_shapes_dict``,
    ``tf_keras``'s ``_build_input_shape``."""
    shapes = getattr(model, "_build_shapes_dict", None)
    if not shapes and is_tf_keras(model):
        shape = getattr(model, "_build_input_shape", None)
        if shape is not None and getattr(shape, "rank", None) is not None:
            shapes = {"input_shape": tuple(shape.as_list())}
    return shapes or {}


def call_signature(model) -> list | None:
    """The ``tf.TensorSpec``s a ``tf.Module`` (or a restored SavedModel) is called with, from its
    ``__call__``'s ``input_signature`` or the model's own ``input_signature`` (None: none)."""
    import tensorflow as tf

    signature = getattr(model, "input_signature", None)
    if signature is None:
        call = next((vars(c)["__call__"] for c in type(model).__mro__ if "__call__" in vars(c)), None)
        signature = getattr(call, "input_signature", None)
    if not signature:
        return None
    flat = tf.nest.flatten(signature)
    return flat if all(isinstance(spec, tf.TensorSpec) for spec in flat) else None


def dtype_name(dtype) -> str:
    """``float32`` for a Keras 3 string dtype and for a ``tf.DType`` alike."""
    return str(getattr(dtype, "name", dtype))


def variable_paths(model) -> dict[int, str]:
    """``id(variable)`` -> a Keras-3-like path for a ``tf_keras`` model's variables: the names of
    the layers that hold it below the model, then its own short name (``generator/g_in/kernel``),
    whatever name scope it was created under."""
    paths: dict[int, str] = {}
    stack = [(model, "")]
    seen = set()
    while stack:
        layer, prefix = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        own = list(getattr(layer, "_trainable_weights", ())) + list(
            getattr(layer, "_non_trainable_weights", ()))
        for variable in own:
            short = str(getattr(variable, "name", "variable")).split("/")[-1].split(":")[0]
            paths.setdefault(id(variable), f"{prefix}{short}")
        children = getattr(layer, "_flatten_layers", None)
        if children is None:
            continue
        for child in children(include_self=False, recursive=False):
            stack.append((child, f"{prefix}{child.name}/"))
    return paths
