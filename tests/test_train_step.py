"""Models judged by their own training step: verdicts against what real ``fit`` steps change.

The truth is ``fit``: three steps on a fresh copy of the model (same seed, same batch).  A
variable ``fit`` changes must not be reported unconnected, and every variable reported
connected (or nonfinite) must change; a ``zero`` may stay as it was.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

import trainers  # noqa: E402  (tests/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "sample_models"))
SEED = 0


def _fresh(name: str):
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(SEED)
    return trainers.TRAINERS[name][0]()


def _batch(name: str):
    return getattr(trainers, trainers.TRAINERS[name][1])()


def _state_checksum(model) -> dict[str, str]:
    """Every variable a step could touch (weights, metrics, optimizers, seed generators): a
    digest of each, by path."""
    import keras
    from keras.src.backend.common import global_state

    variables = list(model.variables)
    for value in vars(model).values():
        if isinstance(value, keras.optimizers.Optimizer):
            variables += list(value.variables)
        if isinstance(value, keras.metrics.Metric):
            variables += list(value.variables)
    for metric in model.metrics:
        variables += list(metric.variables)
    generator = global_state.get_global_attribute("global_seed_generator")
    variables += [generator.state] if generator is not None else []
    digests, seen = {}, Counter()
    for v in variables:  # two optimizers may both hold an 'adam/iteration'
        seen[v.path] += 1
        digests[f"{v.path}#{seen[v.path]}"] = hashlib.sha256(v.numpy().tobytes()).hexdigest()
    return digests


def _changed_by_fit(name: str, steps: int = 3) -> set[str]:
    import numpy as np

    model = _fresh(name)
    build = trainers.BUILD.get(name)
    if build is not None:  # weights that the first fit step would create (and update at once)
        build(model)
    before = {v.path: np.array(v.numpy()) for v in model.trainable_variables}
    model.fit(tf_dataset(_batch(name)), steps_per_epoch=steps, epochs=1, verbose=0)
    after = {v.path: v.numpy() for v in model.trainable_variables}
    assert set(after) == set(before), "fit created trainable variables: compare like with like"
    return {path for path in before if not np.array_equal(before[path], after[path])}


def tf_dataset(batch):
    import tensorflow as tf

    return tf.data.Dataset.from_tensors(batch).repeat()


@pytest.fixture(scope="session")
def judged():
    """name -> (report with --data, report with gradcheck's own batch, checksums before/after)."""
    from gradcheck.api import Options, analyze_model

    cache = {}

    def run(name: str):
        if name not in cache:
            model = _fresh(name)
            before = _state_checksum(model)
            with_data = analyze_model(model, Options(data=f"trainers:{trainers.TRAINERS[name][1]}"))
            after = _state_checksum(model)
            own_batch = None if name in trainers.NEED_DATA else analyze_model(_fresh(name), Options())
            cache[name] = (with_data, own_batch, before, after)
        return cache[name]

    return run


@pytest.mark.parametrize("name", sorted(trainers.TRAINERS))
def test_verdicts_equal_what_fit_trains(judged, name):
    report = judged(name)[0]
    assert report.ok and report.loss.value in ("train_step", "compute_loss"), report.error
    changed = _changed_by_fit(name)
    trained = {v.path for v in report.variables if v.status.value != "unconnected"}
    must_change = {v.path for v in report.variables if v.status.value in ("connected", "nonfinite")}
    assert changed <= trained, f"fit trains {sorted(changed - trained)}, gradcheck says unconnected"
    assert must_change <= changed, f"fit leaves {sorted(must_change - changed)} as they were"
    fresh = _fresh(name)
    trainers.BUILD.get(name, lambda model: None)(fresh)
    assert {v.path for v in report.variables} == {v.path for v in fresh.trainable_variables}


@pytest.mark.parametrize("name", sorted(trainers.TRAINERS))
def test_the_users_model_is_left_unchanged(judged, name):
    _, _, before, after = judged(name)
    if name in trainers.BUILD:  # the step had to create the weights: the rest stays as it was
        assert before.items() <= after.items()
        assert len(after) > len(before)
    else:
        assert before == after


def test_the_sample_gan_leaves_weights_optimizers_and_rngs_unchanged():
    """The sample draws its noise from Keras' global seed generator and builds no optimizer."""
    import random

    import factories
    import keras
    import numpy as np

    from gradcheck.api import Options, analyze_model

    keras.utils.set_random_seed(SEED)
    model = factories.gan_missing_layer()
    keras.random.normal((1,))  # the global seed generator exists and has a state to keep
    before = (_state_checksum(model), random.getstate(), np.random.get_state()[1].tobytes())
    report = analyze_model(model, Options())
    after = (_state_checksum(model), random.getstate(), np.random.get_state()[1].tobytes())
    assert before == after
    assert not model.d_optimizer.built and int(model.g_optimizer.iterations.numpy()) == 0
    assert {v.path for v in report.variables if v.status.value == "unconnected"} == {
        "generator/g_refine/kernel", "generator/g_refine/bias"}


@pytest.mark.parametrize("name", sorted(set(trainers.TRAINERS) - trainers.NEED_DATA))
def test_gradchecks_own_batch_gives_the_same_verdicts(judged, name):
    with_data, own_batch = judged(name)[:2]
    assert own_batch.ok, own_batch.error
    assert any(note.startswith("batch: ") for note in own_batch.notes)
    unconnected = [(v.path, v.status.value == "unconnected") for v in own_batch.variables]
    assert unconnected == [(v.path, v.status.value == "unconnected") for v in with_data.variables]


def test_findings_name_their_cause(judged):
    kinds = {name: {v.path: v.cause.kind.value for v in judged(name)[0].variables if v.cause}
             for name in ("gan_partial_generator", "gan_stopped_generator", "split_lists",
                          "function_step", "frozen_features", "gan")}
    assert kinds["gan"] == {} and kinds["frozen_features"] == {}
    assert kinds["gan_partial_generator"] == {"generator_0/kernel": "not-trained",
                                              "generator_0/bias": "not-trained"}
    assert set(kinds["gan_stopped_generator"].values()) == {"blocked"}
    assert set(kinds["function_step"]) == {"aux_0/kernel", "aux_0/bias"}
    assert set(kinds["split_lists"].values()) == {"not-trained"}
    messages = {v.path: v.cause.message for v in judged("split_lists")[0].variables if v.cause}
    assert "no optimizer applies it" in messages["body_0/kernel"]  # asked for, never applied
    assert "'optimizer' is handed None" in messages["aux_0/kernel"]  # applied, never asked for
    stopped = next(v for v in judged("gan_stopped_generator")[0].variables if v.cause)
    assert stopped.cause.op_type == "StopGradient"


def test_a_layer_the_train_step_never_calls_is_not_called_not_unread(judged):
    causes = {v.path: v.cause for v in judged("skipped_decoder")[0].variables if v.cause}
    assert set(causes) == {"decoder_0/kernel", "decoder_0/bias"}
    assert {(c.kind.value, c.detail.value) for c in causes.values()} == {
        ("unused", "layer-not-called")}


def test_each_result_names_the_gradient_call_that_trains_it(judged):
    report = judged("gan")[0]
    source = (Path(trainers.__file__)).read_text().splitlines()
    optimizers = {}
    for v in report.variables:
        file, line = v.gradient_call.location.split(":")
        assert file == "trainers.py" and "tape.gradient(" in source[int(line) - 1]
        optimizers.setdefault(v.gradient_call.optimizer, set()).add(v.path.split("_")[0])
    assert optimizers == {"d_optimizer": {"discriminator"}, "g_optimizer": {"generator"}}
    calls = sorted({v.gradient_call.location for v in report.variables},
                   key=lambda loc: int(loc.split(":")[1]))
    assert report.loss_detail == (f"train_step: 2 gradient calls ({calls[0]} → d_optimizer, "
                                  f"{calls[1]} → g_optimizer)")


def test_a_loop_of_critic_steps_is_one_entry_of_the_loss_line(judged):
    report = judged("wgan_gp")[0]
    assert report.loss_detail.startswith("train_step: 3 gradient calls (")
    assert "→ d_optimizer ×2, " in report.loss_detail and report.loss_detail.endswith("→ g_optimizer)")


def test_a_hand_written_update_counts_as_training(judged):
    report = judged("manual_sgd")[0]
    assert report.loss_detail.endswith("→ updated by hand)")
    assert {v.path for v in report.variables if v.status.value == "connected"} == {
        "body_0/kernel", "body_0/bias", "head_0/kernel", "head_0/bias"}


def test_a_trainer_without_its_optimizers_gets_one_sentence():
    import gradcheck

    report = gradcheck.check(trainers.needs_optimizers())
    (error,) = report.errors
    assert error.error.type == "missing-optimizer"
    assert "d_optimizer" in error.error.message and "\n" not in error.error.message


def test_gradients_zipped_with_the_wrong_variables_are_refused_like_fit_refuses_them():
    import tensorflow as tf

    import gradcheck

    report = gradcheck.check(trainers.swapped_lists(), data="trainers:regression_batch")
    (error,) = report.errors
    assert error.error.type == "train-step-failed"
    assert "not in the same order" in error.error.message and "'head_0/kernel'" in error.error.message
    model = trainers.swapped_lists()
    with pytest.raises((ValueError, TypeError)):  # the truth: fit fails on this step too
        model.fit(tf.data.Dataset.from_tensors(trainers.regression_batch()).repeat(),
                  steps_per_epoch=1, epochs=1, verbose=0)


def test_a_trainer_missing_what_its_compile_sets_names_the_attribute():
    import factories
    import keras

    import gradcheck

    model = factories.GAN(name="gan")
    keras.Model.compile(model)  # not the trainer's own compile(): no loss_fn, no optimizers
    (error,) = gradcheck.check(model).errors
    assert error.error.type == "train-step-failed" and "self.loss_fn" in error.error.message


def test_a_trainer_with_no_signature_and_no_data_says_how_to_give_the_batch():
    import keras

    import gradcheck

    class Bare(keras.Model):
        def __init__(self):
            super().__init__()
            self.w = self.add_weight(shape=(2,), name="w")

        def train_step(self, data):
            return {}

    (error,) = gradcheck.check(Bare()).errors
    assert error.error.type == "no-batch" and "--data" in error.error.message


def test_bad_data_functions_are_one_sentence(tmp_path):
    import gradcheck

    (tmp_path / "bad_data.py").write_text("def nothing():\n    return None\n"
                                          "def four():\n    return (1, 2, 3, 4)\n")
    for fn in ("nothing", "four", "missing"):
        (error,) = gradcheck.check(trainers.gan(), data=f"{tmp_path}/bad_data.py:{fn}").errors
        assert error.error.type == "bad-data", error.error


def test_data_replaces_inputs_and_targets_of_an_ordinary_model(tmp_path):
    import keras
    import numpy as np
    import tensorflow as tf

    from gradcheck.api import Options, analyze_model

    inputs = keras.Input((3,), name="x")
    hidden = keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
    model.compile(optimizer="adam", loss="mse")
    # Every input is negative and the ReLU's kernel is 0 on purpose: nothing reaches 'out'
    # from 'hidden' but its bias, so 'hidden' gets exactly zero gradient on *these* inputs only.
    model.get_layer("hidden").kernel.assign(np.ones((3, 4), "float32"))
    model.get_layer("hidden").bias.assign(np.zeros(4, "float32"))
    (tmp_path / "batch_fn.py").write_text(
        "import numpy as np\n"
        "def batch():\n"
        "    return -np.ones((2, 3), 'float32'), np.full((2, 2), 5.0, 'float32')\n")
    report = analyze_model(model, Options(data=f"{tmp_path}/batch_fn.py:batch"))
    x, y = -np.ones((2, 3), "float32"), np.full((2, 2), 5.0, "float32")
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True))
    truth = tape.gradient(loss, model.trainable_variables)
    for v, grad in zip(report.variables, truth):
        assert v.zero == (not np.asarray(grad).any()), v.path
    assert {v.path: v.status.value for v in report.variables}["hidden/kernel"] == "zero"
    assert "targets from --data" in report.loss_detail


def test_cli_json_and_sarif_carry_the_step(tmp_path):
    from typer.testing import CliRunner

    from gradcheck.cli import app

    source = f"{Path(trainers.__file__)}:gan_partial_generator"
    data = f"{Path(trainers.__file__)}:image_batch"
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, [source, "--data", data, "--format", "json", "-o", str(out)])
    assert result.exit_code == 1, result.output
    model = json.loads(out.read_text())["models"][0]
    assert model["loss"] == "train_step"
    found = {v["path"]: v for v in model["variables"]}
    assert found["generator_0/kernel"]["cause"]["kind"] == "not-trained"
    assert found["generator_1/kernel"]["gradient_call"]["optimizer"] == "g_optimizer"
    CliRunner().invoke(app, [source, "--data", data, "--format", "sarif", "-o", str(out)])
    results = json.loads(out.read_text())["runs"][0]["results"]
    assert {r["ruleId"] for r in results} == {"GC007"}


def test_config_accepts_data(tmp_path):
    from gradcheck.config import ConfigError, load_file

    path = tmp_path / "pyproject.toml"
    path.write_text('[tool.gradcheck]\ndata = "batches:make"\n')
    assert load_file(path) == {"data": "batches:make"}
    path.write_text("[tool.gradcheck]\ndata = 3\n")
    with pytest.raises(ConfigError):
        load_file(path)


# --- Keras' default train_step under the same interception = the fast path ---------------------

def _default_step_report(model, kind: str | None = None):
    """Judge ``model`` by running Keras' own train_step, intercepted like a custom one (on
    targets of ``kind``: those the fast path switched to)."""
    import keras

    from gradcheck.api import Options, analyze_model
    from gradcheck.plans.batches import StepBatch, synthetic_batch, synthetic_targets
    from gradcheck.plans.train_step import OwnTrainStepPlan

    options = Options(seed=SEED)
    x = keras.tree.map_structure(lambda a: keras.ops.convert_to_tensor(a),
                                 synthetic_batch(model, options).value)
    batch = StepBatch((x, synthetic_targets(model, x, kind=kind)), "synthetic")
    return analyze_model(model, options, plan=OwnTrainStepPlan(batch))


def _same_verdicts(fast, own) -> None:
    assert [v.path for v in fast.variables] == [v.path for v in own.variables]
    for a, b in zip(fast.variables, own.variables):
        assert (a.status, a.none, a.zero) == (b.status, b.none, b.zero), a.path
        assert (a.cause and a.cause.kind) == (b.cause and b.cause.kind), a.path
        assert (a.cause and a.cause.op_type) == (b.cause and b.cause.op_type), a.path


@pytest.mark.parametrize("name", ["clean", "unused_weight", "two_heads", "frozen_encoder",
                                  "argmax_lookup", "rounded_and_cast"])
def test_keras_default_train_step_gives_the_fast_paths_verdicts(name):
    import build_samples
    import keras

    from gradcheck.api import Options, analyze_model

    keras.utils.set_random_seed(SEED)
    model = build_samples.SAMPLES[f"{name}.keras"]()
    fast = analyze_model(model, Options(seed=SEED))
    assert fast.loss.value == "compiled"
    _same_verdicts(fast, _default_step_report(model))


@pytest.mark.parametrize("examples", [8, pytest.param(60, marks=pytest.mark.slow)])
def test_keras_default_train_step_on_random_models(examples):
    from hypothesis import HealthCheck, given, settings
    from modelgen import build_model, recipes
    from tape_truth import switched_target_kind

    from gradcheck.api import Options, analyze_model

    @settings(max_examples=examples, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(recipes().filter(lambda r: r.compiled))
    def check(recipe):
        import keras

        keras.backend.clear_session()
        keras.utils.set_random_seed(SEED)
        model = build_model(recipe)
        fast = analyze_model(model, Options(seed=SEED))
        _same_verdicts(fast, _default_step_report(model, switched_target_kind(fast.loss_detail)))

    check()


# --- several steps: what training does over the steps it needs ---------------------------------

def test_steps_that_train_later_are_counted_and_said(judged):
    ema = judged("ema_target")[0]
    assert ema.steps == 3 and ema.loss_detail.endswith("over 3 steps")
    targets = {v.path: v for v in ema.variables if v.path.startswith("target")}
    assert {v.status.value for v in targets.values()} == {"connected"}  # fit moves them from step 2
    accumulating = judged("accumulating")[0]
    assert accumulating.steps >= 2
    assert {v.path for v in accumulating.variables if v.status.value == "connected"} == {
        "body_0/kernel", "body_0/bias", "head_0/kernel", "head_0/bias"}
    assert judged("gan")[0].steps == 2 and "over" not in judged("gan")[0].loss_detail


def test_a_weight_read_only_in_loop_iterations_not_run_gets_zeros_like_fits_compiled_step(judged):
    late = {v.path: v for v in judged("late_in_loop")[0].variables if v.path.startswith("late")}
    assert {v.status.value for v in late.values()} == {"zero"}
    assert {v.zero_reason.kind.value for v in late.values()} == {"other-branch"}
    assert all("tf.while_loop" in v.zero_reason.message for v in late.values())


def test_the_compiled_step_hands_zeros_to_what_the_eager_step_never_reads():
    """The truth for ``late_in_loop``: fit's traced step returns exact zeros, not None."""
    import numpy as np
    import tensorflow as tf

    model = _fresh("late_in_loop")
    x, y = trainers.regression_batch()
    late = model.late.trainable_variables

    @tf.function
    def grads():
        with tf.GradientTape() as tape:
            out, _ = model(x, training=True)
            loss = tf.reduce_mean((out - y) ** 2)
        return tape.gradient(loss, late)

    assert all(g is not None and not np.any(g.numpy()) for g in grads())


def test_accumulation_beyond_the_bound_is_warned_never_not_trained():
    from gradcheck.api import Options, analyze_model
    from gradcheck.plans.steps import MAX_STEPS

    keras_model = trainers.accumulating_slowly()
    before = [v.numpy().copy() for v in keras_model.sums] + [keras_model.count.numpy()]
    report = analyze_model(keras_model, Options(data="trainers:regression_batch"))
    assert report.steps == MAX_STEPS and report.loss_detail.endswith(f"over {MAX_STEPS} steps")
    (warning,) = report.warnings
    assert "4 variables got a gradient that no optimizer applied" in warning
    causes = {v.path: v.cause and v.cause.kind.value for v in report.variables}
    assert causes["body_0/kernel"] is None and causes["aux_0/kernel"] == "not-trained"
    after = [v.numpy() for v in keras_model.sums] + [keras_model.count.numpy()]
    assert all((a == b).all() for a, b in zip(before, after))  # untracked variables put back


def test_an_optimizer_the_steps_built_is_unbuilt_again_and_fit_still_runs():
    import numpy as np

    from gradcheck.api import Options, analyze_model

    model = _fresh("cycle_gan")
    analyze_model(model, Options(data="trainers:pair_batch"))
    assert not model.gen_optimizer.built and len(model.gen_optimizer.variables) == 2
    before = {v.path: np.array(v.numpy()) for v in model.trainable_variables}
    model.fit(tf_dataset(trainers.pair_batch()), steps_per_epoch=3, epochs=1, verbose=0)
    after = {v.path: v.numpy() for v in model.trainable_variables}
    changed = {path for path, value in before.items() if not np.array_equal(value, after[path])}
    assert changed == _changed_by_fit("cycle_gan")


def test_a_dict_batch_no_signature_declares_is_learned_from_the_steps_own_errors():
    import keras
    import tensorflow as tf

    from gradcheck.api import Options, analyze_model

    class DictTrainer(keras.Model):
        """Reads data["features"] and data["target"]; its layers build on the first batch."""

        def __init__(self):
            super().__init__(name="dict_trainer")
            self.body = keras.layers.Dense(4, activation="tanh")
            self.head = keras.layers.Dense(1)

        def train_step(self, data):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((self.head(self.body(data["features"])) - data["target"]) ** 2)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            return {"loss": loss}

    model = DictTrainer()
    model.compile(optimizer="adam")
    report = analyze_model(model, Options())
    assert report.ok, report.error
    (note,) = [n for n in report.notes if n.startswith("batch: a dict learned")]
    assert "features (2, 4)" in note and "target (2, 4)" in note
    assert {v.status.value for v in report.variables} == {"connected"}
