"""Never pass what it did not see, and name what the user really did (issue 16).

Each model of ``tests/cause_models/boundaries.py`` hides a weight ``fit`` never trains behind
something the tape cannot see.  Ground truth is ``fit`` itself: three real steps; every variable
they leave unchanged must fail the gate, every variable they change must pass, and each finding
carries the cause kind, the detail and the user's line (found by its marker comment).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = Path(__file__).resolve().parent / "cause_models"
sys.path.insert(0, str(MODELS))

pytest.importorskip("tensorflow")

import boundaries  # noqa: E402  (tests/cause_models is on sys.path)


def marker_line(marker: str, module: str = "boundaries") -> int:
    lines = (MODELS / f"{module}.py").read_text().splitlines()
    hits = [i + 1 for i, text in enumerate(lines) if f"# marker: {marker}" in text]
    assert len(hits) == 1, marker
    return hits[0]


MODEL_PATH = (MODELS / "boundaries.py").relative_to(ROOT).as_posix()

#: name -> factory, and per failing variable (kind, detail, marker of the line it names or None)
CASES = {
    "built_by_shape": (boundaries.built_by_shape, {
        "built_by_shape/encoder/kernel": ("blocked", None, "stop"),
        "built_by_shape/encoder/bias": ("blocked", None, "stop"),
        "built_by_shape/aux/kernel": ("detached", None, None),
        "built_by_shape/aux/bias": ("detached", None, None)}),
    "built_by_call": (boundaries.built_by_call, {
        "built_by_call/body/kernel": ("blocked", None, "untraceable"),
        "built_by_call/body/bias": ("blocked", None, "untraceable")}),
    "left_numpy": (boundaries.left("numpy"), {
        "left_numpy/encoder/kernel": ("detached", "left-tensorflow", "to-numpy"),
        "left_numpy/encoder/bias": ("detached", "left-tensorflow", "to-numpy"),
        "left_numpy/aux/kernel": ("detached", None, None),
        "left_numpy/aux/bias": ("detached", None, None)}),
    "left_asarray": (boundaries.left("asarray"), {
        "left_asarray/encoder/kernel": ("detached", "left-tensorflow", "asarray"),
        "left_asarray/encoder/bias": ("detached", "left-tensorflow", "asarray"),
        "left_asarray/aux/kernel": ("detached", None, None),
        "left_asarray/aux/bias": ("detached", None, None)}),
    "left_numpy_function": (boundaries.left("numpy_function"), {
        "left_numpy_function/encoder/kernel": ("detached", "left-tensorflow", "numpy_function"),
        "left_numpy_function/encoder/bias": ("detached", "left-tensorflow", "numpy_function"),
        "left_numpy_function/aux/kernel": ("detached", None, None),
        "left_numpy_function/aux/bias": ("detached", None, None)}),
    "untracked": (boundaries.untracked, {
        # read by TensorFlow's C++ fast path (x * tf.Variable): the holding layer's call()
        "migrated/scale/gain": ("not-trained", "untracked", "module-read"),
        "migrated/offset": ("not-trained", "untracked", "untracked")}),
    "flags": (boundaries.flags, {
        "block/bias": ("unused", "other-branch", "use_bias"),
        "block/shortcut/kernel": ("unused", "other-branch", "use_residual"),
        "block/shortcut/bias": ("unused", "other-branch", "use_residual")}),
    "before_tape": (boundaries.before_tape, {
        "before_tape/body/kernel": ("detached", "outside-tape", "outside-tape"),
        "before_tape/body/bias": ("detached", "outside-tape", "outside-tape"),
        "before_tape/head/kernel": ("detached", "outside-tape", "outside-tape"),
        "before_tape/head/bias": ("detached", "outside-tape", "outside-tape")}),
    "predict_in_step": (boundaries.predict_in_step, {
        "predict_in_step/body/kernel": ("detached", "left-tensorflow", "predict"),
        "predict_in_step/body/bias": ("detached", "left-tensorflow", "predict"),
        "predict_in_step/head/kernel": ("detached", "left-tensorflow", "predict"),
        "predict_in_step/head/bias": ("detached", "left-tensorflow", "predict")}),
    "own_temperature": (boundaries.own_temperature, {}),
    "forgotten_temperature": (boundaries.forgotten_temperature, {
        "own_temperature/temperature": ("not-trained", "untracked", "temperature")}),
    "left_in_loss": (boundaries.left_in_loss, {
        "head/kernel": ("detached", "left-tensorflow", "loss-numpy"),
        "head/bias": ("detached", "left-tensorflow", "loss-numpy")}),
}


#: Steps ``fit`` itself refuses to run — Keras' predict needs the cross-replica context a
#: train_step does not have; a loss through NumPy gives "No gradients provided for any variable"
#: — and the error it raises: nothing of them trains.
FIT_FAILS = {"predict_in_step": RuntimeError, "left_in_loss": ValueError}


@pytest.fixture(scope="session")
def reports():
    """name -> ModelReport, each model analyzed once with no flags."""
    from gradcheck.api import Options, analyze_model, quiet_tensorflow

    quiet_tensorflow()
    found = {}

    def run(name):
        if name not in found:
            import keras

            keras.utils.set_random_seed(0)
            found[name] = analyze_model(CASES[name][0](), Options())
        return found[name]

    return run


def _changed_by_fit(factory) -> tuple[set[str], dict[str, bool]]:
    """Paths of the trainable variables three ``fit`` steps change, and for every variable some
    layer holds that Keras does not track, whether fit changed it."""
    import keras
    import numpy as np
    import tensorflow as tf

    from gradcheck.diagnose.holders import holders_of

    keras.utils.set_random_seed(0)
    model = factory()
    x, y = boundaries.batch()
    model(x)  # fit builds a model before its first step, too
    tracked = {id(v.value.handle) for v in model.variables}
    holders = holders_of(model)
    strangers = {holders[id(v.handle)].path: v for v in _all_tf_variables(model)
                 if id(v.handle) not in tracked and id(v.handle) in holders}
    before = {v.path: np.array(v.numpy()) for v in model.trainable_variables}
    stranger_before = {path: np.array(v.numpy()) for path, v in strangers.items()}
    model.fit(tf.data.Dataset.from_tensors((x, y)).repeat(), steps_per_epoch=3, epochs=1,
              verbose=0)
    changed = {v.path for v in model.trainable_variables
               if not np.array_equal(before[v.path], v.numpy())}
    moved = {path: not np.array_equal(stranger_before[path], v.numpy())
             for path, v in strangers.items()}
    return changed, moved


def _all_tf_variables(model):
    """Every tf.Variable a layer holds directly or in a tf.Module: what fit could never see."""
    import tensorflow as tf

    found = []
    for layer in model._flatten_layers(include_self=True):
        for value in vars(layer).values():
            if isinstance(value, tf.Variable):
                found.append(value)
            elif isinstance(value, tf.Module):
                found.extend(value.trainable_variables)
    return found


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_variable_fit_never_trains_fails_and_every_one_it_trains_passes(reports, name):
    report = reports(name)
    assert report.ok, report.error
    assert report.variables, "a model with weights must never pass with 0 variables"
    failing = {v.path for v in report.variables if v.status.value == "unconnected"}
    assert failing == set(CASES[name][1])
    if name in FIT_FAILS:
        with pytest.raises(FIT_FAILS[name]):
            _changed_by_fit(CASES[name][0])
        return
    changed, strangers = _changed_by_fit(CASES[name][0])
    for path, moved in strangers.items():  # untracked: trained only if the step trains it itself
        assert moved == (path not in failing), path
    passing = {v.path for v in report.variables if v.status.value in ("connected", "nonfinite")}
    zero = {v.path for v in report.variables if v.status.value == "zero"}  # may stay unchanged
    assert passing <= changed <= passing | zero, (
        f"fit changes {sorted(changed - passing - zero)} gradcheck fails, "
        f"leaves {sorted(passing - changed)} gradcheck passes")


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_finding_names_its_kind_detail_and_line(reports, name):
    from gradcheck.diagnose.messages import DETAIL_REMEDY, FLAG_REMEDY, LEFT_TENSORFLOW_REMEDY
    from gradcheck.report import CauseDetail

    for v in reports(name).variables:
        if v.status.value != "unconnected":
            continue
        kind, detail, marker = CASES[name][1][v.path]
        assert (v.cause.kind.value, v.cause.detail.value if v.cause.detail else None) == (
            kind, detail), v.path
        if marker is not None:
            location = v.cause.location
            assert location is not None, v.path
            assert (location.path, location.line) == (MODEL_PATH, marker_line(marker)), v.path
        if detail == "other-branch":
            assert v.cause.message.endswith(FLAG_REMEDY)
        elif marker == "predict":
            assert v.cause.message.endswith(LEFT_TENSORFLOW_REMEDY["predict"])
        elif marker == "numpy_function":
            assert v.cause.message.endswith(LEFT_TENSORFLOW_REMEDY["py_function"])
        elif detail is not None:
            assert v.cause.message.endswith(DETAIL_REMEDY[CauseDetail(detail)])


def test_a_flag_names_the_attribute_and_its_value(reports):
    found = {v.path: v.cause.message for v in reports("flags").variables if v.cause}
    assert "reads it only when self.use_bias is true, and it is False" in found["block/bias"]
    assert ("is called only when self.use_residual is true, and it is False"
            in found["block/shortcut/kernel"])


def test_an_untracked_variable_names_the_attribute_that_holds_it(reports):
    found = {v.path: v for v in reports("untracked").variables if v.cause}
    assert "self.scale.gain of layer 'migrated'" in found["migrated/scale/gain"].cause.message
    assert "self.offset of layer 'migrated'" in found["migrated/offset"].cause.message
    assert found["migrated/offset"].shape == (4,)


def test_a_model_built_with_build_shape_is_called_before_it_is_judged(reports):
    report = reports("built_by_shape")
    assert len(report.variables) == 6
    assert not report.notes or "no trainable variables" not in " ".join(report.notes)


def test_a_subclassed_model_built_by_a_call_is_not_refused(reports):
    report = reports("built_by_call")
    shapes = [(i.name, i.shape) for i in report.inputs]
    assert report.ok and shapes == [("input", (2, boundaries.FEATURES))]


def test_a_model_that_cannot_be_called_is_an_error_not_a_pass():
    import keras

    from gradcheck.api import Options, analyze_model

    class Broken(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            raise RuntimeError("this model cannot run")

    model = Broken()
    model.build((None, 3))
    from gradcheck.problems import SourceProblem

    with pytest.raises(SourceProblem) as raised:
        analyze_model(model, Options())
    assert raised.value.kind.value == "forward-failed"
    assert "this model cannot run" in raised.value.message


def test_a_py_function_failure_names_the_function_not_input():
    from gradcheck.api import Options, analyze_model
    from gradcheck.problems import SourceProblem

    with pytest.raises(SourceProblem) as raised:
        analyze_model(boundaries.py_function_model(), Options())
    message = raised.value.message
    assert "regroup" in message and f"{MODEL_PATH}:{marker_line('py_function')}" in message
    assert "--input NAME" not in message


def test_a_tf_function_train_step_that_unpacks_x_y_gets_x_y(reports):
    from gradcheck.plans.step_source import unpacks_targets

    assert unpacks_targets(boundaries.before_tape())
    assert "(x, y)" in " ".join(reports("before_tape").notes)


def test_json_gives_every_location_a_package_key(reports):
    from gradcheck import __version__
    from gradcheck.formats import json as json_format
    from gradcheck.gate import apply

    report = apply([reports("flags")], version=__version__, fail_on=frozenset(), allow=[],
                   baseline=None)
    data = json.loads(json_format.render(report))
    locations = [v["cause"]["location"] for m in data["models"] for v in m["variables"]
                 if v["cause"]]
    assert locations and all(loc["package"] is None for loc in locations)


def _pade_model():
    import keras

    rkan = pytest.importorskip("rkan.tensorflow")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((boundaries.FEATURES,), name="features")
    hidden = keras.layers.Dense(4, name="dense")(inputs)
    # degree_p=2: PadeRKAN's range(2, degree_p) loop never runs, so alpha_p, beta_p and zeta_p
    # are computed in its call() and dropped
    outputs = rkan.PadeRKAN(degree_p=2, degree_q=3, name="pade")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(outputs), name="rkan_pade")
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_a_finding_inside_a_third_party_package_names_the_package_and_its_line():
    import importlib.metadata

    from gradcheck import __version__
    from gradcheck.api import Options, analyze_model
    from gradcheck.formats import Format, render
    from gradcheck.gate import apply

    report = analyze_model(_pade_model(), Options(), source="models/rkan_pade.py:build")
    failing = {v.path: v for v in report.variables if v.status.value == "unconnected"}
    changed, _ = _changed_by_fit(_pade_model)
    assert set(failing) == {"pade/alpha_p", "pade/beta_p", "pade/zeta_p"}
    assert not set(failing) & changed
    assert {v.path for v in report.variables} - set(failing) == changed
    version = importlib.metadata.version("rkan")
    for v in failing.values():
        location = v.cause.location
        assert (location.path, location.package) == ("rkan/tensorflow.py", f"rkan {version}")
        assert location.function == "call"
    gated = apply([report], version=__version__, fail_on=frozenset(), allow=[], baseline=None)
    text = render(gated, Format.TEXT)
    assert f"in rkan {version}, rkan/tensorflow.py:" in text
    sarif = json.loads(render(gated, Format.SARIF))["runs"][0]["results"][0]
    assert sarif["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == \
        "models/rkan_pade.py"
    assert sarif["relatedLocations"][-1]["message"]["text"] == f"in rkan {version}"
    github = render(gated, Format.GITHUB)
    assert "file=models/rkan_pade.py" in github and "file=rkan/" not in github


def test_a_model_built_by_a_call_in_its_factory_is_called_the_same_way():
    from gradcheck.api import Options, analyze_source

    report = analyze_source(f"{MODELS / 'boundaries.py'}:tagger_built_by_call", Options(), {})
    assert report.ok, report.error
    assert [(i.name, i.shape, i.dtype) for i in report.inputs] == [
        ("ids", (2, 5), "int32"), ("mask", (2, 5), "float32")]
    assert {v.path: v.status.value for v in report.variables} == {
        "tagger/embed/embeddings": "connected", "tagger/head/kernel": "connected",
        "tagger/head/bias": "connected"}
