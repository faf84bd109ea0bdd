"""Remembering how a model was first called while a factory builds it.

A subclassed model whose ``call()`` Keras cannot trace symbolically, built by calling it on
data, keeps no input signature: Keras builds its layers during the eager call and records no
``_build_shapes_dict`` for the model.  ``FirstCalls`` notes, on every layer called at the top
level (not from inside another layer) with concrete values, the shape and dtype of each leaf of
its first argument, so that gradcheck can call it again the same way (``plans.inputs``).  It
restores ``Layer.__call__`` on exit.
"""

from __future__ import annotations

import functools

#: Attribute holding a layer's first top-level call: its first argument as a pytree of
#: ``ArgumentSpec`` leaves.
FIRST_CALL = "_gradcheck_first_call"


class ArgumentSpec:
    """One leaf of a recorded call: its full shape (batch included) and dtype.  A plain class,
    so that ``keras.tree`` keeps it a leaf."""

    def __init__(self, shape: tuple[int, ...], dtype: str):
        self.shape, self.dtype = shape, dtype


class FirstCalls:
    """Context manager noting the first concrete top-level call of every layer (see above)."""

    def __enter__(self):
        from keras.src.layers.layer import Layer

        self._layer_class = Layer
        self._original = original = Layer.__dict__["__call__"]
        depth = [0]

        @functools.wraps(original)
        def noting(layer, *args, **kwargs):
            if depth[0] == 0 and args and FIRST_CALL not in vars(layer):
                spec = _concrete_spec(args[0])
                if spec is not None:
                    vars(layer)[FIRST_CALL] = spec
            depth[0] += 1
            try:
                return original(layer, *args, **kwargs)
            finally:
                depth[0] -= 1

        Layer.__call__ = noting
        return self

    def __exit__(self, *exc):
        self._layer_class.__call__ = self._original
        return False


def _concrete_spec(value):
    """``value`` as a pytree of ``(shape, dtype)``, or None if some leaf is not a concrete array."""
    import keras

    leaves = keras.tree.flatten(value)
    if not leaves:
        return None
    specs = []
    for leaf in leaves:
        shape, dtype = getattr(leaf, "shape", None), getattr(leaf, "dtype", None)
        if shape is None or dtype is None or isinstance(leaf, keras.KerasTensor):
            return None
        try:
            specs.append(ArgumentSpec(tuple(int(d) for d in shape),
                                      keras.backend.standardize_dtype(dtype)))
        except (TypeError, ValueError):  # an unknown dim: a symbolic tensor
            return None
    return keras.tree.pack_sequence_as(value, specs)
