"""Patches used while a model is loaded: each a context manager that restores what it patched."""

from __future__ import annotations

import contextlib
import math

from gradcheck.hooks.patching import replaced
from gradcheck.locations import CREATED_AT, creation_location


class ShapeMismatch(Exception):
    """A variable met a stored dataset of another shape (``shapes_compared_not_assigned``)."""


@contextlib.contextmanager
def sequential_built_once():
    """Build each deserialized ``Sequential`` once, after all its layers are added.

    ``Sequential.from_config`` calls ``add`` per layer, and each ``add`` rebuilds the whole
    stack symbolically: n layers cost n² layer calls (a 400-layer model took 40 s to load, a
    1000-layer one minutes).  Adding without rebuilding and building once at the end gives the
    same model, with the same layers built in the same order.
    """
    from keras.src.models.sequential import Sequential

    original_add = Sequential.add
    original_from_config = Sequential.__dict__["from_config"]

    def add(self, layer, rebuild=True):
        return original_add(self, layer, rebuild=False)

    def from_config(cls, config, custom_objects=None):
        model = original_from_config.__func__(cls, config, custom_objects=custom_objects)
        if model._functional is None and model._layers:
            model._maybe_rebuild()
        return model

    Sequential.add = add
    Sequential.from_config = classmethod(from_config)
    try:
        yield
    finally:
        Sequential.add = original_add
        Sequential.from_config = original_from_config


@contextlib.contextmanager
def shapes_compared_not_assigned():
    """``Variable.assign(dataset)`` compares shapes instead of reading the dataset."""
    import h5py
    from keras.src.backend import Variable
    from keras.src.saving import saving_lib

    original = Variable.assign

    def dataset(self, key):  # the dataset itself, not np.array(dataset): metadata only
        return saving_lib.safe_get_h5_dataset(self._h5_entry_group, key)

    def assign(self, value):
        if not isinstance(value, h5py.Dataset):
            return original(self, value)
        if tuple(value.shape) != tuple(self.shape):
            raise ShapeMismatch(f"variable '{self.path}': rebuilt {tuple(self.shape)}, stored "
                                 f"{tuple(value.shape)}")
        return self

    with replaced(Variable, "assign", assign), \
            replaced(saving_lib.H5IOStore, "__getitem__", dataset):
        yield


#: The standard deviation of a normal truncated at ±2σ, as a fraction of σ.
_TRUNCATED_NORMAL_STD = 0.8796256610342398


@contextlib.contextmanager
def cheap_fresh_weights():
    """Draw fresh truncated-normal weights as a uniform of the same mean and variance.

    Only for weights that replace the stored ones: the verdicts need random weights of the
    right scale, not Keras' exact draw, and TensorFlow's truncated normal is the bulk of
    rebuilding a large model (about half of BERT-base's 3.8 s; a uniform takes a fraction).
    """
    from keras.src.backend.tensorflow import random as backend_random

    original = backend_random.truncated_normal

    def uniform_like_truncated_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
        half_width = math.sqrt(3.0) * _TRUNCATED_NORMAL_STD * stddev
        return backend_random.uniform(shape, minval=mean - half_width, maxval=mean + half_width,
                                      dtype=dtype, seed=seed)

    backend_random.truncated_normal = uniform_like_truncated_normal
    try:
        yield
    finally:
        backend_random.truncated_normal = original


class recording_creation:  # noqa: N801  (a context manager used like a function)
    """While active, every Keras operation that is not a layer (``keras.ops.argmax`` … on symbolic
    tensors, in a factory) remembers the user's line that created it, when the nearest frame
    outside Keras is user code.  Layers are skipped: their ops run inside their own ``call()``."""

    def __enter__(self):
        from keras.src.layers.layer import Layer
        from keras.src.ops.operation import Operation

        self._original = original = Operation.__dict__["__new__"]

        def remembering(cls, *args, **kwargs):
            instance = original(cls, *args, **kwargs)
            if not issubclass(cls, Layer):
                vars(instance)[CREATED_AT] = creation_location()
            return instance

        Operation.__new__ = staticmethod(remembering)
        return self

    def __exit__(self, *exc):
        from keras.src.ops.operation import Operation

        Operation.__new__ = self._original
        return False
