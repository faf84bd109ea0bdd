"""Plain TensorFlow (a ``tf.Module`` factory, a SavedModel) and Keras 2 (``tf_keras`` files and
factories): verdicts against an independent eager tape, and the trust rules of model files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")

HERE = Path(__file__).resolve().parent / "plain_tf"
MODULES = HERE / "modules.py"


def _import():
    from gradcheck.load.user_code import import_target

    return import_target(str(MODULES), is_file=True, what="factory")


def _tape(call, variables, x) -> dict[str, tuple[bool, bool]]:
    """(none, zero) per variable name: an eager tape on a random projection of the outputs."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        outputs = tf.nest.flatten(call(x))
        loss = tf.add_n([tf.reduce_sum(o * tf.random.stateless_normal(o.shape, seed=[7, i]))
                         for i, o in enumerate(outputs)])
    grads = tape.gradient(loss, variables)
    return {v.name.split(":")[0]: (g is None, g is None or not g.numpy().any())
            for v, g in zip(variables, grads)}


def _verdicts(report) -> dict[str, tuple[bool, bool]]:
    (model,) = report.models
    assert model.ok, model.error
    return {v.path.rsplit("/", 1)[-1]: (v.none, v.zero) for v in model.variables}


@pytest.fixture(scope="session")
def saved(tmp_path_factory):
    """The files: a tf.Module SavedModel (with and without a signature) and the tf_keras
    two-head model as .keras, .h5 and SavedModel."""
    import tensorflow as tf

    module = _import()
    root = tmp_path_factory.mktemp("plain_tf")
    net = module.net()
    tf.saved_model.save(net, str(root / "net_sm"), signatures=net.__call__.get_concrete_function())
    tf.saved_model.save(module.unsigned(), str(root / "unsigned_sm"))
    model = module.two_heads_tf_keras()
    model.save(root / "two_heads.keras")
    model.save(root / "two_heads.h5")
    model.save(root / "two_heads_sm", save_format="tf")
    return root


def test_a_tf_module_factory_gives_the_tapes_verdicts():
    import tensorflow as tf

    import gradcheck

    report = gradcheck.check(f"{MODULES}:net")
    net = _import().net()
    truth = _tape(net, net.trainable_variables, tf.random.stateless_normal((2, 4), seed=[0, 0]))
    assert _verdicts(report) == truth
    causes = {v.path: v.cause.kind.value for v in report.models[0].variables if v.cause}
    assert causes == {"net/gate": "blocked", "net/spare": "unused"}


def test_a_tf_module_without_a_signature_takes_input_or_a_loss():
    import gradcheck

    refused = gradcheck.check(f"{MODULES}:unsigned")
    assert refused.errors[0].error.type == "no-signature"
    report = gradcheck.check(f"{MODULES}:unsigned", inputs=["x=3"])
    assert _verdicts(report) == {"w": (False, False), "unused": (True, True)}


def test_a_tf_module_savedmodel_gives_the_tapes_verdicts(saved):
    import tensorflow as tf

    import gradcheck

    report = gradcheck.check(str(saved / "net_sm"))
    loaded = tf.saved_model.load(str(saved / "net_sm"))
    variables = [loaded.w1, loaded.b1, loaded.w2, loaded.gate, loaded.spare]
    function = loaded.signatures["serving_default"]
    truth = _tape(lambda x: function(x=x), variables, tf.ones((2, 4)))
    assert _verdicts(report) == truth
    assert report.models[0].loss.value == "projection"


def test_a_savedmodel_without_a_signature_is_refused_with_what_to_do(saved):
    import gradcheck

    (error,) = gradcheck.check(str(saved / "unsigned_sm")).errors
    assert error.error.type == "no-signature"
    assert "signatures=" in error.error.message and "file.py:fn" in error.error.message


def test_a_savedmodel_holding_a_link_is_refused_unread(saved, tmp_path):
    import shutil

    import gradcheck

    copy = tmp_path / "linked_sm"
    shutil.copytree(saved / "net_sm", copy)
    os.symlink("/etc/passwd", copy / "assets" / "vocab.txt")
    (error,) = gradcheck.check(str(copy)).errors
    assert error.error.type == "unsafe-content" and "vocab.txt" in error.error.message


def test_a_savedmodels_declared_variables_are_held_to_the_budget(saved):
    import gradcheck

    (error,) = gradcheck.check(str(saved / "net_sm"), max_memory=64).errors
    assert error.error.type == "too-large" and "variables" in error.error.message


@pytest.mark.parametrize("name", ["two_heads.keras", "two_heads.h5", "two_heads_sm"])
def test_keras2_files_give_the_tapes_verdicts(saved, name):
    import tensorflow as tf

    import gradcheck

    report = gradcheck.check(str(saved / name))
    model = tf_keras.models.load_model(saved / name)
    x = tf.random.stateless_normal((2, 4), seed=[0, 1])
    with tf.GradientTape() as tape:  # the compiled loss: the actor's mse, the critic has none
        actor, critic = model(x, training=True)
        loss = model.compiled_loss([tf.zeros_like(actor), tf.zeros_like(critic)], [actor, critic])
    grads = tape.gradient(loss, model.trainable_variables)
    truth = {v.name.split(":")[0]: g is None for v, g in zip(model.trainable_variables, grads)}
    (judged,) = report.models
    assert judged.loss.value == "compiled"
    assert {v.path: v.none for v in judged.variables} == truth
    assert {v.path for v in judged.variables if v.cause} == {"critic/kernel", "critic/bias"}
    assert {v.cause.kind.value for v in judged.variables if v.cause} == {"detached"}


def test_without_tf_keras_a_keras2_file_names_the_extra(saved, monkeypatch):
    import importlib.util

    import gradcheck

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tf_keras" else real(name, *a))
    for name in ("two_heads.keras", "two_heads_sm"):
        (error,) = gradcheck.check(str(saved / name)).errors
        assert error.error.type == "missing-package"
        assert "pip install gradcheck[tf-keras]" in error.error.message


def test_a_keras2_lambda_is_refused_in_safe_mode(tmp_path):
    import gradcheck

    inputs = tf_keras.Input((4,))
    outputs = tf_keras.layers.Lambda(lambda t: t * 2.0, name="doubler")(inputs)
    tf_keras.Model(inputs, tf_keras.layers.Dense(1)(outputs)).save(tmp_path / "lambda.keras")
    (error,) = gradcheck.check(str(tmp_path / "lambda.keras")).errors
    assert error.error.type == "unsafe-lambda" and "'doubler'" in error.error.message


@pytest.mark.parametrize(("class_name", "module"), [("Evil", "os"), ("Dense", "evil_module")])
def test_a_keras2_class_nobody_provides_is_refused_by_name(saved, tmp_path, class_name, module):
    import zipfile

    import gradcheck

    source = saved / "two_heads.keras"
    crafted = tmp_path / "crafted.keras"
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(crafted, "w") as out:
        for item in archive.infolist():
            data = archive.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                config["config"]["layers"][1].update(class_name=class_name, module=module,
                                                     registered_name=f"{module}>{class_name}")
                data = json.dumps(config).encode()
            out.writestr(item, data)
    (error,) = gradcheck.check(str(crafted)).errors  # the module it names is never imported
    assert error.error.type == "custom-object" and f"{module}>{class_name}" in error.error.message
    assert "evil_module" not in sys.modules


def test_a_factory_under_tf_use_legacy_keras_is_judged():
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    run = subprocess.run([sys.executable, "-m", "gradcheck", f"{MODULES}:legacy_keras_factory",
                          "--format", "json", "-v"], capture_output=True, text=True, env=env,
                         timeout=300)
    report = json.loads(run.stdout)
    (model,) = report["models"]
    assert model["ok"], model
    assert model["loss"] == "compiled"
    assert [v["path"] for v in model["variables"]] == ["body/kernel", "body/bias", "head/kernel",
                                                       "head/bias"]
    assert all(v["status"] == "connected" for v in model["variables"])


def test_a_keras2_trainers_own_train_step_is_judged_as_fit_trains_it():
    import numpy as np
    import tensorflow as tf

    import gradcheck

    report = gradcheck.check(f"{MODULES}:keras2_trainer", data=f"{MODULES}:trainer_batch")
    (model,) = report.models
    assert model.ok and model.loss.value == "train_step", model.error
    statuses = {v.path: v.status.value for v in model.variables}
    fresh = _import().keras2_trainer()

    def values():
        return {f"{layer.name}/{w.name.split('/')[-1].split(':')[0]}": w.numpy().copy()
                for layer in fresh.layers for w in layer.trainable_weights}

    before = values()
    fresh.fit(tf.data.Dataset.from_tensors(_import().trainer_batch()).repeat(), steps_per_epoch=3,
              epochs=1, verbose=0)
    changed = {path for path, value in values().items() if not np.array_equal(value, before[path])}
    assert {p for p, s in statuses.items() if s == "connected"} == changed
    assert {p for p, s in statuses.items() if s == "unconnected"} == {"unused/kernel", "unused/bias"}


def test_a_keras2_model_without_a_loss_is_judged_by_the_projection():
    import gradcheck

    (model,) = gradcheck.check(f"{MODULES}:keras2_projection", unsafe=True).models
    assert model.ok and model.loss.value == "projection", model.error
    causes = {v.path: v.cause for v in model.variables if v.cause}
    assert set(causes) == {"torso/kernel", "torso/bias"}
    assert {c.op_type for c in causes.values()} == {"StopGradient"}
