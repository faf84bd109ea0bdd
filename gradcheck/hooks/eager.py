"""``tf.config.run_functions_eagerly`` for the length of a ``with`` block, then as it was."""

from __future__ import annotations


class FunctionsRunEagerly:
    """Context manager: the bodies of ``tf.function``s run op by op (so the op recorder, the
    interceptor and the branch recorder see inside them); the previous setting comes back."""

    def __enter__(self):
        import tensorflow as tf

        self._previous = tf.config.functions_run_eagerly()
        tf.config.run_functions_eagerly(True)
        return self

    def __exit__(self, *exc):
        import tensorflow as tf

        tf.config.run_functions_eagerly(self._previous)
        return False
