"""A model made ready to be judged: every layer that will train has created its weights.

Keras 3 creates a layer's weights when the layer is first called.  ``model.build((None, 8))`` on a
subclassed model without a ``build()`` of its own only marks it built (``Layer.build``'s default
warns and sets ``built``), and a model built lazily has no weights at all until a call: judged as
it is, such a model would pass with 0 variables.  So a model whose layers have not all been
built, or that has no trainable variable yet, is called once on the batch the step will run on
(``--data``'s x, else the synthetic batch); a model that cannot be called is an error, never a
pass.  "No trainable variables" is said only of a model that really has none after that call (and
holds no ``tf.Variable`` Keras does not track: those are findings of their own).
"""

from __future__ import annotations

from gradcheck.layers import layers_of
from gradcheck.problems import ErrorKind, SourceProblem, describe_exception

#: Base classes of layers that prepare data and hold no weights to train (Keras' preprocessing
#: layers, keras-hub's preprocessors and tokenizers): unbuilt, they need no call.
_DATA_LAYERS = frozenset({"Preprocessor", "Tokenizer", "DataLayer", "TFDataLayer"})


def needs_a_call(model) -> bool:
    """Has some layer of ``model`` (or the model itself) not created its weights yet?"""
    if not getattr(model, "trainable_variables", None):
        return True
    return any(not getattr(layer, "built", True) and not _prepares_data(layer)
               for layer in layers_of(model, include_self=True))


def _prepares_data(layer) -> bool:
    return any(cls.__name__ in _DATA_LAYERS for cls in type(layer).__mro__)


def build_by_calling(model, options) -> bool:
    """Call ``model`` once on the batch its step will see, so that every layer builds; False if
    it refused that batch (the step then searches for one it takes, and ``run_until_built`` runs
    it again once it has built the model)."""
    from gradcheck.plans.batches import synthetic_batch, user_batch
    from gradcheck.plans.inputs import describe_tree
    from gradcheck.plans.py_functions import py_function_failure
    from gradcheck.plans.state import PreservedState

    data = user_batch(options)
    inputs = data[0] if data is not None else synthetic_batch(model, options).value
    try:
        with PreservedState(model):  # a call may update metrics or seed generators
            model(inputs)
    except Exception as exc:
        if data is None:
            return False
        raise py_function_failure("forward pass", exc) or SourceProblem(
            ErrorKind.FORWARD_FAILED, "building the model by calling it on the inputs "
            f"[{describe_tree(model, inputs)}] failed: {describe_exception(exc)}; check the shapes "
            "and dtypes given with --input NAME=DIM,DIM[:DTYPE] or --data.") from exc
    return True


def run_until_built(model, run, *, rerun: bool):
    """``run()`` (a plan's step); if the step created trainable variables (layers built only
    by the step's batch), run it again so that every variable is judged from the start."""
    before = [id(v) for v in model.trainable_variables]
    step = run()
    if rerun and [id(v) for v in model.trainable_variables] != before:
        step = run()
    return step
