"""Leaving the model as it was: what a training step may change, snapshotted and restored.

A model's own ``train_step`` is run for real (only the optimizers' applies are intercepted), so
everything it may change — the model's variables, its metrics, every optimizer's slots and
iterations, Keras' and TensorFlow's global seed generators, Python's and NumPy's RNGs — is
snapshotted before and restored after.
"""

from __future__ import annotations

from gradcheck.plans.variables import underlying


def state_variables(model) -> list:
    """Every variable a training step may change: the model's, its metrics', its optimizers',
    and the Keras global seed generator's."""
    import keras
    import tensorflow as tf
    from keras.src.backend.common import global_state

    found = list(model.variables)
    for metric in _metrics(model):
        found.extend(metric.variables)
    for optimizer in optimizers_of(model):
        found.extend(optimizer.variables)
    generator = global_state.get_global_attribute("global_seed_generator")
    if generator is not None:
        found.append(generator.state)
    tf_generator = _stateful_random_ops().global_generator
    if tf_generator is not None:  # tf.random.get_global_generator(), if the user made one
        found.append(tf_generator.state)
    unique, seen = [], set()
    for variable in found:
        if isinstance(variable, (keras.Variable, tf.Variable)) and id(underlying(variable)) not in seen:
            seen.add(id(underlying(variable)))
            unique.append(variable)
    return unique


def _stateful_random_ops():
    from tensorflow.python.ops import stateful_random_ops

    return stateful_random_ops


def _metrics(model) -> list:
    import keras

    try:
        metrics = list(getattr(model, "metrics", []) or [])
    except Exception:  # an uncompiled or half-built model: its attributes still count
        metrics = []
    metrics += [v for v in vars(model).values() if isinstance(v, keras.metrics.Metric)]
    return metrics


def optimizers_of(model) -> list:
    """The optimizers the model holds as attributes (``optimizer``, ``d_optimizer`` …)."""
    import keras

    found = []
    for value in vars(model).values():
        if isinstance(value, keras.optimizers.Optimizer) and all(value is not f for f in found):
            found.append(value)
    return found


class PreservedState:
    """Context manager: the variables of ``state_variables`` and the global RNGs come back as
    they were on exit."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        import random

        import numpy as np
        from keras.src.backend.common import global_state

        self._values = [(v, np.array(v.numpy(), copy=True)) for v in state_variables(self.model)]
        self._by_id = {id(underlying(v)): value for v, value in self._values}
        self._python_random = random.getstate()
        self._numpy_random = np.random.get_state()
        # A generator the step creates lazily must not outlive it.
        self._keras_generator = global_state.get_global_attribute("global_seed_generator")
        self._tf_generator = _stateful_random_ops().global_generator
        return self

    def changed(self, variables: list) -> set[int]:
        """Indices of ``variables`` whose value differs from the snapshot (NaN equals NaN)."""
        import numpy as np

        return {i for i, v in enumerate(variables) if id(underlying(v)) in self._by_id
                and not np.array_equal(v.numpy(), self._by_id[id(underlying(v))], equal_nan=True)}

    def __exit__(self, *exc):
        import random

        import numpy as np
        from keras.src.backend.common import global_state

        for variable, value in self._values:
            variable.assign(value)
        random.setstate(self._python_random)
        np.random.set_state(self._numpy_random)
        global_state.set_global_attribute("global_seed_generator", self._keras_generator)
        _stateful_random_ops().global_generator = self._tf_generator
        return False


class ObjectsRestored:
    """Context manager: objects ``add``ed inside (optimizers that really apply, so build their
    slots) get their attributes back on exit — the containers they hold restored in place, so
    that what shares them (Keras' tracker) stays consistent — and the variables they held
    their values.  An optimizer built by the step is unbuilt again, exactly as it was."""

    def __init__(self):
        self._objects: dict[int, tuple] = {}  #: id -> (object, its attributes)
        self._containers: dict[int, tuple] = {}  #: id -> (container, its items)
        self._values: list[tuple] = []

    def __enter__(self):
        return self

    def add(self, obj) -> None:
        """Snapshot ``obj`` (and the tracker and inner optimizer it holds) before it changes."""
        import numpy as np

        if id(obj) in self._objects or not hasattr(obj, "__dict__"):
            return
        attributes = dict(vars(obj))
        self._objects[id(obj)] = (obj, attributes)
        for value in attributes.values():
            self._snapshot_container(value)
        for variable in _held_variables(obj):
            if hasattr(variable, "numpy"):
                self._values.append((variable, np.array(variable.numpy(), copy=True)))
        for name in ("_tracker", "inner_optimizer"):
            if name in attributes:
                self.add(attributes[name])

    def _snapshot_container(self, value) -> None:
        if id(value) in self._containers:
            return
        if isinstance(value, list):
            self._containers[id(value)] = (value, list(value))
            children = list(value)
        elif isinstance(value, dict):
            self._containers[id(value)] = (value, dict(value))
            children = list(value.values())
        elif isinstance(value, set):
            self._containers[id(value)] = (value, set(value))
            children = []
        else:
            return
        for child in children:
            self._snapshot_container(child)

    def __exit__(self, *exc):
        for container, items in self._containers.values():
            _refill(container, items)
        for obj, attributes in self._objects.values():
            current = vars(obj)
            for name in [name for name in current if name not in attributes]:
                del current[name]
            current.update(attributes)
        for variable, value in self._values:
            variable.assign(value)
        return False


def _held_variables(obj) -> list:
    """``obj.variables``: an attribute, or a method (``tf.compat.v1`` and legacy optimizers)."""
    held = getattr(obj, "variables", None)
    if callable(held):
        try:
            held = held()
        except Exception:  # an optimizer that cannot list them yet: nothing to snapshot
            held = ()
    return list(held or ())


def _refill(container, items) -> None:
    """Put ``items`` back into ``container`` in place: past the tracking a Keras container adds
    (its base class's methods), through the methods of a TensorFlow wrapper (which keeps its
    items elsewhere than its base class does)."""
    kind = list if isinstance(container, list) else dict if isinstance(container, dict) else set
    if _same_items(container, items):
        return
    cls = type(container)
    storage = getattr(container, "_storage", None)  # TensorFlow's list and dict wrappers
    if isinstance(storage, kind):
        container = storage
    if cls is kind or isinstance(storage, kind) or cls.__module__.startswith("keras"):
        if kind is list:
            list.__setitem__(container, slice(None), items)
        else:
            kind.clear(container)
            kind.update(container, items)
    elif kind is list:
        container[:] = items
    else:
        container.clear()
        container.update(items)


def _same_items(container, items) -> bool:
    """Does ``container`` hold exactly ``items`` (the same objects)?"""
    if len(container) != len(items):
        return False
    if isinstance(container, dict):
        return all(key in container and container[key] is value for key, value in items.items())
    if isinstance(container, set):
        return all(item in container for item in items)
    return all(a is b for a, b in zip(container, items))
