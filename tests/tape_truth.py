"""Ground truth for model-level tests: what an eager tf.GradientTape says, independently of the trace."""

from __future__ import annotations

from modelgen import TapeResult, tape_truth


def eager_truth(model, *, seed: int = 0, batch_size: int = 2,
                training: bool = True) -> dict[str, TapeResult]:
    """Eager tape on gradcheck's synthetic inputs and loss; NONE and ZERO asked separately."""
    from gradcheck.inputs import make_inputs, signature
    from gradcheck.losses import plan_loss

    index_tree, specs = signature(model, [])
    inputs = make_inputs(model, index_tree, specs, batch_size=batch_size, seed=seed)
    loss = plan_loss(model, custom=None, training=training)
    results = tape_truth(model, inputs, loss.compute, seed=seed, training=training)
    return {r.path: r for r in results}


def assert_matches_tape(report, model, **kwargs) -> None:
    """Every verdict in ``report`` equals the eager tape's, and the graph agrees with the tape."""
    truth = eager_truth(model, **kwargs)
    assert [v.path for v in report.variables] == list(truth)
    for v in report.variables:
        assert (v.none, v.zero) == (truth[v.path].none, truth[v.path].zero), v.path
        assert v.graph_agrees, v.path
        assert (v.cause is not None) == v.none, v.path
