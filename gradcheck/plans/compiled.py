"""A model's compile settings, read in one place: output keys, per-output losses, loss weights.

Everything that asks "what did ``compile()`` say?" (the compiled-loss plan, the targets, the loss
line, the zero-loss-weight reason) reads it here, so the loss line and the diagnosis can never
disagree about a loss weight.
"""

from __future__ import annotations

from gradcheck.plans.legacy import compiled_loss_container, is_compiled
from gradcheck.plans.loss import LossFunction
from gradcheck.plans.targets import default_targets
from gradcheck.results import LossKind


def has_compiled_loss(model) -> bool:
    """Compiled with a loss, or with ``add_loss`` terms the compiled step adds."""
    if not is_compiled(model):
        return False
    return compiled_loss_container(model) is not None or bool(_safe_losses(model))


def _safe_losses(model):
    try:
        return list(model.losses)
    except Exception:
        return []


def output_keys(model, outputs=None) -> list[str]:
    """The outputs' names, in the order of the flattened outputs (``outputs`` if at hand).

    A model that returns a dict is compiled (and reported) by that dict's keys; ``output_names``
    names the layers that produce the outputs, which differ whenever a key is not its layer's name.
    """
    import keras

    struct = outputs if outputs is not None else getattr(model, "_outputs_struct", None)
    if isinstance(struct, dict):
        return list(keras.tree.flatten({key: key for key in struct}))
    names = list(getattr(model, "output_names", None) or [])
    loss = getattr(model, "loss", None)
    if not names and isinstance(loss, dict):  # a subclassed model: its dict outputs, as compiled
        return list(keras.tree.flatten({key: key for key in loss}))
    return names


def loss_names(model) -> dict[int, str | None]:
    """Output index -> the name of its compiled loss (None: that output has no loss)."""
    loss = getattr(model, "loss", None)
    names = output_keys(model)
    count = max(len(names), 1)
    if isinstance(loss, dict):
        return {i: _loss_name(loss.get(name)) for i, name in enumerate(names)}
    if isinstance(loss, (list, tuple)):
        return {i: _loss_name(loss[i]) if i < len(loss) else None for i in range(count)}
    return {i: _loss_name(loss) for i in range(count)}


def _loss_name(loss) -> str | None:
    if loss is None:
        return None
    if isinstance(loss, str):
        return loss
    return getattr(loss, "name", None) or getattr(loss, "__name__", None) or type(loss).__name__


def user_loss_weights(model):
    """``compile(loss_weights=…)`` as given: None, a number, a list or a dict.

    Keras 3 keeps them on the compiled loss (what the training step really uses); older models
    kept them on the model.
    """
    weights = getattr(compiled_loss_container(model), "_user_loss_weights", None)
    return weights if weights is not None else getattr(model, "loss_weights", None)


def loss_weights(model) -> dict[str, float]:
    """Output name -> its compiled loss weight (outputs without one are left out)."""
    weights = user_loss_weights(model)
    names = output_keys(model)
    if weights is None:
        return {}
    if isinstance(weights, dict):
        return {name: float(w) for name, w in weights.items()}
    if isinstance(weights, (list, tuple)):
        return {name: float(w) for name, w in zip(names, weights)}
    return {name: float(weights) for name in names}


def describe(model) -> str:
    """The loss line's detail: each output's loss and the loss weights (``plans.loss.
    with_model_losses`` adds what else the step added)."""
    names = output_keys(model)
    parts = []
    for i, name in loss_names(model).items():
        label = names[i] if i < len(names) else f"output {i}"
        parts.append(f"{label}: {name or 'no loss'}")
    weights = user_loss_weights(model)
    text = "; ".join(parts)
    if weights is not None:
        text += f"; loss_weights={weights}"
    return text


def compute_with(build_targets, training: bool):
    """A compiled loss ``compute(model, inputs, outputs)`` on ``build_targets(inputs, outputs)
    -> (y, sample_weight)``: Keras' own ``compute_loss`` (per-output losses and weights,
    ``add_loss`` terms, regularizers)."""

    def compute(model, inputs, outputs):
        y, sample_weight = build_targets(inputs, outputs)
        if hasattr(model, "_compute_loss"):
            return model._compute_loss(x=inputs, y=y, y_pred=outputs, sample_weight=sample_weight,
                                       training=training)
        return model.compute_loss(x=inputs, y=y, y_pred=outputs, sample_weight=sample_weight)

    return compute


def compiled_loss(model, training: bool, data=None, kind: str | None = None) -> LossFunction:
    """The compiled loss on synthetic targets that fit each output's loss (``plans.targets``;
    of ``kind`` if given), or on ``--data``'s y and sample weights when given (``data`` is
    (x, y, sample_weight))."""
    names = loss_names(model)
    detail = describe(model) + (f"; {kind} targets (the default ones left the loss constant)"
                                if kind else "")
    given_y, sample_weight = (data[1], data[2]) if data is not None else (None, None)
    if given_y is not None:
        detail += "; targets from --data"

    def targets(inputs, outputs):
        y = given_y if given_y is not None else default_targets(outputs, names, kind)
        return y, sample_weight

    return LossFunction(LossKind.COMPILED, detail, compute_with(targets, training),
                        adds_model_losses=True)
