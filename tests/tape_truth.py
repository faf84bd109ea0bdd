"""Ground truth for model-level tests: what an eager tf.GradientTape says, independently of the trace."""

from __future__ import annotations

from modelgen import TapeResult, tape_truth


def eager_truth(model, **kwargs) -> dict[str, TapeResult]:
    """``eager_results`` by variable path."""
    return {r.path: r for r in eager_results(model, **kwargs)}


def eager_results(model, *, seed: int = 0, batch_size: int = 2,
                  training: bool = True) -> list[TapeResult]:
    """Eager tape on gradcheck's synthetic inputs and loss; NONE and ZERO asked separately.

    As gradcheck does, the default batch and loss first; if the model refuses them, the batch
    and loss ``plans.search.fit_batch_and_loss`` finds.
    """
    from gradcheck.options import Options
    from gradcheck.plans.choice import loss_plan
    from gradcheck.plans.inputs import signature
    from gradcheck.plans.search import fit_batch_and_loss
    from gradcheck.plans.synthetic import make_batch
    from gradcheck.problems import ErrorKind, SourceProblem

    index_tree, specs = signature(model, [])
    batch = make_batch(model, index_tree, specs, batch_size=batch_size, seed=seed)
    loss = loss_plan(model, Options()).loss(model, Options(), training=training, data=None)
    try:
        results = tape_truth(model, batch.value, loss.compute, seed=seed, training=training)
    except Exception as exc:
        fitted = fit_batch_and_loss(model, batch, loss, SourceProblem(ErrorKind.FORWARD_FAILED, str(exc)),
                                    training=training, batch_size=batch_size, seed=seed)
        assert fitted is not None, f"no batch fits the model: {exc}"
        batch, loss, _ = fitted
        results = tape_truth(model, batch.value, loss.compute, seed=seed, training=training)
    return _on_the_inputs_that_reach_most(model, batch, loss, results, seed=seed, training=training)


def _on_the_inputs_that_reach_most(model, batch, loss, results, *, seed, training):
    """The tape on the mask fill gradcheck chose so that its step reaches every part it can."""
    from gradcheck.plans.reaching import mask_variants, parts_missed

    variables = list(model.trainable_variables)
    missed = parts_missed(model, variables, results)
    for variant, _ in mask_variants(batch) if missed else ():
        try:
            other = tape_truth(model, variant.value, loss.compute, seed=seed, training=training)
        except Exception:
            continue
        now = parts_missed(model, variables, other)
        if now < missed:
            results, missed = other, now
        if not missed:
            break
    return results


def assert_matches_tape(report, model, **kwargs) -> None:
    """Every verdict in ``report`` equals the eager tape's, and the graph agrees with the tape."""
    truth = eager_results(model, **kwargs)  # in model order: two variables may share a path
    assert [v.path for v in report.variables] == [r.path for r in truth]
    for v, tape in zip(report.variables, truth):
        assert (v.none, v.zero) == (tape.none, tape.zero), (
            f"{v.path}: gradcheck none={v.none} zero={v.zero}, tape none={tape.none} "
            f"zero={tape.zero} max|grad|={tape.magnitude}")
        assert v.graph_agrees, v.path
        assert (v.cause is not None) == v.none, v.path


def switched_target_kind(loss_detail: str) -> str | None:
    """The kind of target gradcheck switched to because its default targets left the compiled
    loss constant (``; graded targets (the default ones left the loss constant)``), or None."""
    import re

    found = re.search(r"; (\w+) targets \(the default ones left the loss constant\)", loss_detail)
    return found.group(1) if found else None
