"""Ground truth for model-level tests: what an eager tf.GradientTape says, independently of the trace."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Truth:
    none: bool  #: None under UnconnectedGradients.NONE
    zero: bool  #: all zeros under UnconnectedGradients.ZERO


def eager_truth(model, *, seed: int = 0, batch_size: int = 2, training: bool = True) -> dict[str, Truth]:
    """Eager tape on gradcheck's synthetic inputs and loss; NONE and ZERO asked separately."""
    import keras
    import tensorflow as tf

    from gradcheck.inputs import make_inputs, signature
    from gradcheck.losses import plan_loss

    index_tree, specs = signature(model, [])
    inputs = make_inputs(model, index_tree, specs, batch_size=batch_size, seed=seed)
    loss = plan_loss(model, custom=None, training=training)
    variables = list(model.trainable_variables)
    keras.utils.set_random_seed(seed)
    with tf.GradientTape(persistent=True) as tape:
        outputs = model(inputs, training=training)
        value = loss.compute(model, inputs, outputs)
    # The tf.Variable behind each Keras variable: under ZERO, TensorFlow builds zeros from the
    # source's dtype, and a Keras 3 variable's dtype is a string, which crashes the tape.
    sources = [v.value for v in variables]
    none = tape.gradient(value, sources, unconnected_gradients=tf.UnconnectedGradients.NONE)
    zero = tape.gradient(value, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    del tape
    return {v.path: Truth(none=g is None,
                          zero=bool(tf.reduce_all(tf.equal(tf.convert_to_tensor(z), 0))))
            for v, g, z in zip(variables, none, zero)}


def assert_matches_tape(report, model, **kwargs) -> None:
    """Every verdict in ``report`` equals the eager tape's, and the graph agrees with the tape."""
    truth = eager_truth(model, **kwargs)
    assert [v.path for v in report.variables] == list(truth)
    for v in report.variables:
        assert (v.none, v.zero) == (truth[v.path].none, truth[v.path].zero), v.path
        assert v.graph_agrees, v.path
        assert (v.cause is not None) == v.none, v.path
