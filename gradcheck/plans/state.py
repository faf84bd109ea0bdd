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
