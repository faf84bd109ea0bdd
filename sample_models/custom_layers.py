"""Custom layers used by the sample models (pass with --custom-objects)."""

import keras


@keras.saving.register_keras_serializable(package="gradcheck_samples")
class GatedDense(keras.layers.Layer):
    """A dense layer that creates a gate weight in build() but forgets to use it in call()."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")
        self.gate = self.add_weight(shape=(self.units,), initializer="ones", name="gate")

    def call(self, x):
        return keras.ops.relu(x @ self.kernel)  # self.gate is never read

    def get_config(self):
        return {**super().get_config(), "units": self.units}
