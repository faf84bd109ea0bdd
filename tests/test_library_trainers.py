"""Third-party trainers judged with no flags: the batch is learned from the step, and the verdicts
equal what three real ``fit`` steps change on that very batch."""

from __future__ import annotations

import pytest

pytest.importorskip("bayesflow")

import library_trainers  # noqa: E402  (tests/ is on sys.path)

SEED = 0


def _fresh(name: str):
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(SEED)
    return library_trainers.LIBRARY_TRAINERS[name]()


def _learned_batch(report):
    """The batch the report's note names, rebuilt the way gradcheck built it."""
    import re

    from gradcheck.plans.learned import SHAPES, _dict_batch

    (note,) = [n for n in report.notes if n.startswith("batch: a dict learned")]
    shapes = {key: SHAPES.index(tuple(int(d) for d in dims.split(",") if d.strip())[1:])
              for key, dims in re.findall(r"(\w+) \(([\d, ]+)\)", note.split("[")[0])}
    return _dict_batch(shapes, 2, SEED)


@pytest.mark.parametrize("name", [
    "bayesflow_coupling_flow_with_summary",
    pytest.param("bayesflow_coupling_flow", marks=pytest.mark.slow)])
def test_no_flags_and_the_verdicts_equal_what_fit_changes(name):
    import keras
    import numpy as np
    import tensorflow as tf

    from gradcheck.api import Options, analyze_model

    report = analyze_model(_fresh(name), Options())
    assert report.ok, report.error
    assert report.loss.value == "train_step" and report.steps >= 2
    model = _fresh(name)
    batch = _learned_batch(report)
    model.build_from_data(batch)  # as the library's own fit does before its first step
    variables = list(model.trainable_variables)  # paths differ between two builds: by position
    assert [tuple(v.shape) for v in variables] == [v.shape for v in report.variables]
    before = [np.array(v.numpy()) for v in variables]
    keras.Model.fit(model, tf.data.Dataset.from_tensors(batch).repeat(), steps_per_epoch=3,
                    epochs=1, verbose=0)
    changed = {i for i, v in enumerate(variables) if not np.array_equal(before[i], v.numpy())}
    statuses = [v.status.value for v in report.variables]
    trained = {i for i, status in enumerate(statuses) if status != "unconnected"}
    must_change = {i for i, status in enumerate(statuses) if status in ("connected", "nonfinite")}
    assert changed <= trained and must_change <= changed, (statuses, sorted(changed))
