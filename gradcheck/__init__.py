"""gradcheck: find the trainable variables of a Keras model that will never learn, and say why."""

__version__ = "0.1.0"
