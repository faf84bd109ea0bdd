"""The user's own training loops (``tests/loops/*.py``): verdicts against what the loop really does.

The truth is the loop itself: a fresh copy of the file is imported and its step run three times
for real on the batch its ``data()`` returns (or none).  Every variable the loop changes must be
reported ``connected``; every one it leaves as it was ``unconnected`` or ``zero``.  gradcheck
judges its own copy, with the arguments it finds by itself, and again with ``--data``; the
objects it judged are left as they were.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

LOOPS_DIR = Path(__file__).resolve().parent / "loops"
LOOPS = sorted(p.stem for p in LOOPS_DIR.glob("*.py"))
STEPS = 3


def _fresh_module(name: str):
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    spec = importlib.util.spec_from_file_location(f"loop_truth_{name}", LOOPS_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _values(module, step) -> dict[str, object]:
    from gradcheck.load.steps import StepSource

    source = StepSource(step, "truth", step.__name__ if hasattr(step, "__name__") else "step")
    if hasattr(module, "data"):
        source.arguments = module.data()
    return {v.path: v.numpy().copy() for v in source.judged_variables()}


def _changed_by_the_loop(name: str) -> set[str]:
    """Paths of the variables that ``STEPS`` real steps of the loop change."""
    import numpy as np

    module = _fresh_module(name)
    step = getattr(module, getattr(module, "TRUTH", "train_step"))
    arguments = module.data() if hasattr(module, "data") else ()
    before = _values(module, step)
    step(*arguments)
    first = _values(module, step)  # a variable built by the first step is compared from there
    for _ in range(STEPS - 1):
        step(*arguments)
    after = _values(module, step)
    return {path for path, value in after.items()
            if not np.array_equal(value, before.get(path, first[path]))}


@pytest.fixture(scope="session")
def judged():
    """name -> (report with gradcheck's own arguments, report with --data or None, truth)."""
    import gradcheck

    cache = {}

    def run(name: str):
        if name not in cache:
            path = LOOPS_DIR / f"{name}.py"
            module = _fresh_module(name)
            # --data first: the search that follows builds no layer on made-up shapes
            with_data = (gradcheck.check(f"{path}:train_step", data=f"{path}:data")
                         if hasattr(module, "data") else None)
            own = gradcheck.check(f"{path}:train_step")
            cache[name] = (own, with_data, _changed_by_the_loop(name))
        return cache[name]

    return run


@pytest.mark.parametrize("name", LOOPS)
def test_every_variable_the_loop_trains_is_connected_and_no_other(judged, name):
    own, with_data, changed = judged(name)
    for report in (own, with_data):
        if report is None:
            continue
        assert not report.errors, report.errors[0].error
        (model,) = report.models
        assert model.loss.value == "loop"
        statuses = {v.path: v.status.value for v in model.variables}
        trained = {path for path, status in statuses.items() if status == "connected"}
        assert trained == changed, (f"the loop changes {sorted(changed)}, gradcheck says "
                                    f"{sorted(trained)} learn")
        assert all(status in ("connected", "unconnected", "zero") for status in statuses.values())


@pytest.mark.parametrize("name", LOOPS)
def test_every_unconnected_variable_has_a_cause(judged, name):
    for report in judged(name)[:2]:
        if report is None:
            continue
        for v in report.models[0].variables:
            assert (v.cause is not None) == (v.status.value == "unconnected"), v.path


def test_the_seed_example_raises_for_real_and_says_so(judged):
    import tensorflow as tf

    report = judged("zero_keras_variables")[0]
    model = report.models[0]
    causes = {v.path: v.cause for v in model.variables if v.cause}
    assert set(causes) == {"z2/kernel", "z2/bias"}
    for cause in causes.values():
        assert cause.kind.value == "detached" and cause.detail.value == "zero-filled"
        assert "turned its None into zeros at zero_keras_variables.py:" in cause.message
        assert "'optimizer' applies zeros: it never learns" in cause.message
        assert "_type_enum" in cause.message and "v.value for v in" in cause.message
        assert cause.location.function == "train_step"
    assert any("_type_enum" in w for w in model.warnings)
    module = _fresh_module("zero_keras_variables")
    with pytest.raises(AttributeError, match="_type_enum"):  # the truth: the real step raises
        module.train_step(*module.data())
    assert tf.is_tensor(module.fixed_step(*module.data()))


def test_zero_with_values_is_a_finding_but_no_raise(judged):
    model = judged("zero_values")[0].models[0]
    details = {v.path: v.cause.detail.value for v in model.variables if v.cause}
    assert details == {"z2/kernel": "zero-filled", "z2/bias": "zero-filled"}
    assert not model.warnings
    assert all("_type_enum" not in v.cause.message for v in model.variables if v.cause)


def test_causes_of_the_loops_read_like_the_models(judged):
    def causes(name):
        return {v.path: (v.cause.kind.value, v.cause.detail and v.cause.detail.value,
                         v.cause.op_type) for v in judged(name)[0].models[0].variables if v.cause}

    assert set(causes("stop_gradient").values()) == {("blocked", None, "StopGradient")}
    assert set(causes("argmax_router").values()) == {("blocked", None, "ArgMax")}
    assert set(causes("round_quantizer").values()) == {("blocked", None, "Round")}
    assert set(causes("sliced_list").values()) == {("not-trained", None, None)}
    assert set(causes("watch_selected").values()) == {("not-trained", "not-watched", None)}
    assert set(causes("dataset_iterator").values()) == {("unused", "layer-not-called", None)}
    assert set(causes("module_mlp")) == {"mlp/layers/2/w", "mlp/layers/2/b"}


def test_the_loss_line_names_each_gradient_call_and_its_optimizer(judged):
    model = judged("two_optimizers")[0].models[0]
    assert model.loss_detail.startswith("loop: 2 gradient calls (two_optimizers.py:")
    assert "→ body_optimizer" in model.loss_detail and "→ head_optimizer" in model.loss_detail
    assert "→ optimizer)" in judged("minimize_v1")[0].models[0].loss_detail
    assert "updated by hand" in judged("plain_pair")[0].models[0].loss_detail


def test_a_loop_runs_for_the_steps_training_needs(judged):
    """Accumulation applied on the 2nd call trains from step 2 on: said; an EMA copy assigned
    after the optimizer step moves on step 1 (two steps, the minimum, not said)."""
    accumulating = judged("accumulate_every_other")[0].models[0]
    assert accumulating.steps == 3 and accumulating.loss_detail.endswith("over 3 steps")
    ema = judged("ema_target")[0].models[0]
    assert ema.steps == 2 and "over" not in ema.loss_detail


def _module_state(module) -> list:
    """Every variable the loop's module holds: what its step reaches, and its globals' variables
    (lists of them too: accumulators, counters)."""
    import tensorflow as tf

    from gradcheck.load.steps import StepSource

    found = list(StepSource(module.train_step, "truth", "train_step").variables)
    for value in vars(module).values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, tf.Variable):
                found.append(item)
    return found


@pytest.mark.parametrize("name", ["gan_two_functions", "accumulate_every_other", "ema_target",
                                  "minimize_v1", "keras2_minimize", "two_optimizers"])
def test_the_loops_objects_are_left_as_they_were(name):
    """gradcheck's own copy of the module: weights, optimizer state and RNGs unchanged, though
    the steps it ran applied their updates."""
    import random

    import keras
    import numpy as np

    from gradcheck.api import Options, analyze_model
    from gradcheck.load.steps import StepSource
    from gradcheck.load.user_code import import_target

    path = LOOPS_DIR / f"{name}.py"
    module = import_target(str(path), is_file=True, what="factory")
    variables = _module_state(module)
    state = [v.numpy().copy() for v in variables]
    optimizers = [v for v in vars(module).values() if isinstance(v, keras.optimizers.Optimizer)]
    built = [o.built for o in optimizers]
    randoms = (random.getstate(), np.random.get_state()[1].tobytes())
    report = analyze_model(StepSource(module.train_step, str(path), "train_step"), Options())
    assert report.ok and report.loss.value == "loop"
    assert report.steps >= 2
    after = [v.numpy() for v in variables]
    assert all(np.array_equal(a, b) for a, b in zip(state, after))
    assert [o.built for o in optimizers] == built == [False] * len(optimizers)
    assert (random.getstate(), np.random.get_state()[1].tobytes()) == randoms
    assert sys.modules[module.__name__] is module
