"""Every word a finding says: the rule catalogue (``GC001`` …), causes, details and remedies.

One home for the sentences, so that a finding reads the same in the terminal, a pull-request
annotation and SARIF, and a new cause detail is one entry here.  Pure text: no TensorFlow, no
networkx; the formats read the rules, ``diagnose`` the sentences.
"""

from __future__ import annotations

from dataclasses import dataclass

from gradcheck.results import CauseDetail, CauseKind, Cut, Status, VariableResult

# --- the rule catalogue -------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One kind of finding, with a stable id for SARIF and annotations."""

    id: str  #: stable code, e.g. ``GC003``
    name: str  #: short machine name, e.g. ``blocked``
    short: str  #: one-line description
    full: str  #: what happened
    help: str  #: what to do about it (the remedy)


UNUSED = Rule(
    "GC001", "unused", "Trainable variable is never read in the training step.",
    "The variable is never read while computing the loss, so it can never learn.",
    "Use the weight in the layer's call(), or stop creating it (or make it non-trainable).")
DETACHED = Rule(
    "GC002", "detached", "Trainable variable is read, but nothing it feeds reaches the loss.",
    "The variable feeds only outputs or ops that the loss never uses, e.g. an output without "
    "a loss.",
    "Give that output a loss (or a non-zero loss weight), or drop the unused head.")
BLOCKED = Rule(
    "GC003", "blocked",
    "Every path from the trainable variable to the loss is cut by an op with no gradient.",
    "A path to the loss exists, but an op such as StopGradient, ArgMax, Round or a Cast to int "
    "passes no gradient back.",
    "Remove an unintended StopGradient (or allow the finding if the freeze is intended); for "
    "Round/ArgMax/Cast use a straight-through estimator (x + stop_gradient(round(x) - x)) or a "
    "soft relaxation (softmax instead of argmax).")
UNKNOWN = Rule(
    "GC004", "unknown", "The tape finds no gradient, but the op graph finds a path to the loss.",
    "tape.gradient returned None although the traced op graph connects the variable to the loss; "
    "the tape is trusted.",
    "Inspect the layer for ops without registered gradients or for tape-external computation, "
    "and report the model to gradcheck if the cause is unclear.")
ZERO = Rule(
    "GC005", "zero", "The gradient of the trainable variable is exactly zero on the synthetic input.",
    "The variable is connected to the loss, but its gradient is all zeros (dead ReLU, "
    "cancellation, or a zero loss weight).",
    "Check the activations, initializers and loss weights; try --input overrides, or allow the "
    "finding if it is expected.")
NONFINITE = Rule(
    "GC006", "nonfinite", "The gradient of the trainable variable contains NaN or Inf.",
    "The training step is already numerically broken on the synthetic input.",
    "Look for log(0), division by zero or overflow in the loss and layers, and check the input "
    "ranges.")
NOT_TRAINED = Rule(
    "GC007", "not-trained",
    "The training step never computes or never applies a gradient for the trainable variable.",
    "The model's train_step does not pass the variable to tape.gradient, or does not hand its "
    "gradient to an optimizer, so fit never changes it.",
    "Add it to the variables passed to tape.gradient and to the optimizer (zip each gradient "
    "with its own variable), or make it non-trainable if it is frozen on purpose.")
SOURCE_ERROR = Rule(
    "GC100", "source-error", "gradcheck could not analyze the source.",
    "The model could not be loaded or the training step could not be run.",
    "Fix the problem named in the message (path, custom objects, inputs), or run with --debug.")

RULES: tuple[Rule, ...] = (UNUSED, DETACHED, BLOCKED, UNKNOWN, ZERO, NONFINITE, NOT_TRAINED,
                           SOURCE_ERROR)
_BY_CAUSE = {CauseKind.UNUSED: UNUSED, CauseKind.DETACHED: DETACHED, CauseKind.BLOCKED: BLOCKED,
             CauseKind.UNKNOWN: UNKNOWN, CauseKind.NOT_TRAINED: NOT_TRAINED}


def rule_for(result: VariableResult) -> Rule:
    """The rule a non-connected variable breaks (an unconnected one without a cause is unknown)."""
    if result.status is Status.ZERO:
        return ZERO
    if result.status is Status.NONFINITE:
        return NONFINITE
    if result.cause is None:
        return UNKNOWN
    return _BY_CAUSE[result.cause.kind]


# --- remedies -----------------------------------------------------------------------------------

#: Ops that exist to stop gradient: they win the primary-cut choice when no cut dominates.
STOP_OPS = frozenset({"StopGradient", "PreventGradient"})

#: The remedy that fits each detail: how the user fixes it, or says it is intended.
DETAIL_REMEDY = {
    CauseDetail.LAYER_NOT_CALLED: (
        "call the layer in the training step (a sub-model the loss skips, a teacher or an "
        "unused block is never trained), make its weights non-trainable if it is frozen on "
        "purpose, or allow this finding."),
    CauseDetail.WEIGHT_NOT_READ: "use the weight in call(), or stop creating it.",
    CauseDetail.INFERENCE_ONLY: (
        "expected if the weight is meant for inference only (make it non-trainable, or allow "
        "this finding); otherwise use it under training=True too."),
    CauseDetail.OTHER_BRANCH: (
        "expected if that branch is trained by other inputs (allow this finding, or check with "
        "--input values that take it); otherwise make the branch reachable in training."),
    CauseDetail.ADD_LOSS_ONLY: (
        "include model.losses in the loss (e.g. loss + sum(model.losses)), or make the weight "
        "non-trainable if it is meant to stay fixed."),
    CauseDetail.UNTRACKED: (
        "make it a Keras weight (self.add_weight(...) in the layer's build(), or a "
        "keras.Variable assigned to a Keras layer), so that model.trainable_variables holds it; "
        "a tf.Variable or tf.Module inside a Keras 3 layer is never trained by fit."),
    CauseDetail.LEFT_TENSORFLOW: (
        "compute with keras.ops or tf ops on the tensor itself instead of converting it to NumPy "
        "or a Python number: the tape cannot follow a value back from outside TensorFlow."),
    CauseDetail.OUTSIDE_TAPE: (
        "run the forward pass inside the `with tf.GradientTape() as tape:` block whose "
        "tape.gradient call trains it."),
    CauseDetail.ZERO_FILLED: (
        "drop unconnected_gradients=ZERO (a None is a finding, zeros hide it), then fix why it "
        "is None."),
    CauseDetail.NOT_WATCHED: "watch it with tape.watch(variable), or stop asking for it.",
}

#: Remedies for values that leave TensorFlow through a call that has a TensorFlow equivalent.
LEFT_TENSORFLOW_REMEDY = {
    "predict": ("call the model itself (model(x, training=True)) instead of model.predict*, which "
                "returns NumPy arrays the tape cannot follow."),
    "py_function": ("write the function with keras.ops or tf ops instead of tf.py_function / "
                    "tf.numpy_function: a py_function passes a gradient back only if its Python "
                    "body computes with TensorFlow ops on its inputs, a numpy_function never does."),
}

#: Remedy for a weight read only behind a Python attribute flag that is off.
FLAG_REMEDY = ("if the weight belongs only to the other setting, create it only when that setting "
               "is on (in build()), or make it non-trainable; otherwise allow this finding.")


def remedy(op_type: str) -> str:
    """What to do about a gradient cut by an op of this type."""
    if op_type in STOP_OPS:
        return "remove the stop_gradient, or allow this finding if the freeze is intended."
    if op_type in ("ArgMax", "ArgMin", "TopKV2", "TopK"):
        return ("use a soft relaxation (e.g. softmax weights instead of argmax indices) or a "
                "straight-through estimator.")
    if op_type in ("Round", "Floor", "Ceil", "Rint", "Cast", "Sign"):
        return ("use a straight-through estimator, x + stop_gradient(round(x) - x), or keep the "
                "value floating.")
    return ("replace it with a differentiable op, or use a straight-through estimator, "
            "x + stop_gradient(f(x) - x).")


# --- causes of an unconnected variable ----------------------------------------------------------

def unused(owner: str, called: bool | None) -> str:
    """Never read: its layer never ran (False), ran without reading it (True), or cannot tell."""
    if called is False:
        return (f"never read in the step: layer '{owner}' is never called on these inputs; "
                f"{DETAIL_REMEDY[CauseDetail.LAYER_NOT_CALLED]}")
    if called:
        return (f"never read in the step: layer '{owner}' runs, but its call() does not use this "
                f"weight; {DETAIL_REMEDY[CauseDetail.WEIGHT_NOT_READ]}")
    return (f"never read in the step: layer '{owner}' creates it but the step does not use it; "
            "use the weight in call() or stop creating it.")


def inference_only(kind: CauseKind, layer: str | None) -> str:
    what = "never read" if kind is CauseKind.UNUSED else "read, but cut off from the loss"
    where = f" in layer '{layer}'" if layer else ""
    return (f"{what}{where} with training=True; only a training=False step uses it (an "
            f"inference-only path); {DETAIL_REMEDY[CauseDetail.INFERENCE_ONLY]}")


def other_branch(layer: str | None, decided_by: str) -> str:
    where = f"layer '{layer}'" if layer else "it"
    return (f"never read in the step: {where} is used only on the other side of a branch decided "
            f"by {decided_by}, which these inputs did not take; "
            f"{DETAIL_REMEDY[CauseDetail.OTHER_BRANCH]}")


def add_loss_only(layers: list[str], cut: Cut | None) -> str:
    named = f" of layer {', '.join(repr(layer) for layer in layers)}" if layers else ""
    cut_text = f" (the path to the judged loss is cut at {cut.op_type} '{cut.op}')" if cut else ""
    return (f"its only path to a loss goes through the add_loss term{named}, which the judged "
            f"loss leaves out{cut_text}; {DETAIL_REMEDY[CauseDetail.ADD_LOSS_ONLY]}")


def other_branch_flag(layer: str | None, condition: str, wanted: bool, value: str,
                      called: bool) -> str:
    """Read (or its layer called) only behind ``if <condition>:`` on a Python attribute."""
    where = f"layer '{layer}'" if layer else "its layer"
    what = f"{where} is called only" if called else f"{where} reads it only"
    return (f"never read in the step: {what} when {condition} is {'true' if wanted else 'false'}, "
            f"and it is {value} in this configuration; {FLAG_REMEDY}")


def left_tensorflow(how: str, kind: CauseKind) -> str:
    """Its value leaves TensorFlow through ``how`` (``.numpy()``, ``model.predict_on_batch``,
    ``tf.py_function`` …) before it reaches the loss."""
    lead = ("read, but its value leaves TensorFlow" if kind is CauseKind.DETACHED
            else "every path to the loss leaves TensorFlow")
    if how.startswith("model.predict"):
        remedy_text = LEFT_TENSORFLOW_REMEDY["predict"]
    elif "function" in how:
        remedy_text = LEFT_TENSORFLOW_REMEDY["py_function"]
    else:
        remedy_text = DETAIL_REMEDY[CauseDetail.LEFT_TENSORFLOW]
    return f"{lead} through {how} before it reaches the loss, so no gradient comes back; {remedy_text}"


def outside_tape(call: str) -> str:
    """Read only before the tape of the gradient call ``call`` (``file.py:LINE``) started."""
    return (f"its layer runs in the step, but before the GradientTape of the gradient call at "
            f"{call} starts recording, so that tape never sees the weight; "
            f"{DETAIL_REMEDY[CauseDetail.OUTSIDE_TAPE]}")


def untracked(holder: str | None, layer: str | None) -> str:
    """A trainable tf.Variable read in the step that the model does not track."""
    where = (f"held by {holder}" + (f" of layer '{layer}'" if layer else "")) if holder else \
        "held outside the model's layers"
    return (f"a trainable tf.Variable {where} is read in the step, but Keras does not track it, "
            "so it is not in model.trainable_variables and fit never trains it; "
            f"{DETAIL_REMEDY[CauseDetail.UNTRACKED]}")


UNKNOWN_CAUSE = (
    "tape.gradient returns None, but the op graph shows a path to the loss (probably through a "
    "function or control-flow op whose body does not use it); the tape's verdict stands — check "
    "how the layer uses this weight inside that op.")


def detached_to_outputs(outputs: list[str]) -> str:
    names = ", ".join(f"'{o}'" for o in outputs)
    plural = "s" if len(outputs) > 1 else ""
    return (f"read, but it only feeds output{plural} {names}, which the loss does not use; give "
            "that output a loss (or a non-zero loss weight), or drop the head.")


def detached_to_ops(shown: list[str]) -> str:
    where = ", ".join(f"'{s}'" for s in shown[:5]) + (" …" if len(shown) > 5 else "")
    return (f"read, but its value never reaches the loss (it ends in {where}); use the result in "
            "the model's output, or remove the computation.")


BLOCKED_NO_PRIMARY = "every path to the loss is cut by an op with no gradient; see the cuts listed."


def blocked(cut: Cut, cuts: tuple[Cut, ...]) -> str:
    where = f"{cut.op_type} op '{cut.op}'" + (f" in layer '{cut.layer}'" if cut.layer else "")
    others = [c for c in cuts if c.op != cut.op]
    shown = ", ".join(f"{c.op_type} '{c.op}'" for c in others[:3])
    more = f" (also cut at {shown}{' …' if len(others) > 3 else ''})" if others else ""
    return f"every path to the loss is cut at {where}{more}; {remedy(cut.op_type)}"


def not_trained(computed_at: str | None, handed_to: str | None, calls: list[str]) -> str:
    """A variable the training step never computes, or never applies, a gradient for.

    ``computed_at``: the last gradient call that computed it; ``handed_to``: the last optimizer
    handed None for it; ``calls``: every gradient call of the step that asked for anything.
    """
    if computed_at and handed_to:
        return (f"its gradient is computed at {computed_at}, but '{handed_to}' is handed None for "
                "it: the lists passed to tape.gradient and to the optimizer differ; zip each "
                "gradient with the variable it was computed for.")
    if computed_at:
        return (f"its gradient is computed at {computed_at}, but no optimizer applies it: it is "
                "not among the variables passed to the optimizer; add it to that list (or make it "
                "non-trainable if it is frozen on purpose).")
    where = ", ".join(calls)
    asked = f"no tape.gradient call ({where}) asks for it" if where else \
        "the step makes no tape.gradient call"
    handed = f"so '{handed_to}' is handed None for it" if handed_to else \
        "and no optimizer is handed it"
    return (f"the train_step never computes a gradient for it: {asked}, {handed}; add it to the "
            "variables passed to tape.gradient and to the optimizer (or make it non-trainable if "
            "it is frozen on purpose).")


# --- reasons of a zero gradient -----------------------------------------------------------------

def dead_activation(lead: str, op_type: str, node: str) -> str:
    return (f"{lead} {op_type} '{node}', which is zero on every element of the batch (a dead "
            "activation); check the initializers and input scale, try other --input values, or "
            "use a leaky activation.")


def zero_partner(op_type: str, node: str, partner: str) -> str:
    return (f"every gradient path is multiplied (at {op_type} '{node}') by zeros: the weight "
            f"'{partner}', which is all zeros, or a value computed from it (e.g. LoRA's B, a "
            "zero-initialized kernel or set of learned queries); "
            "expected at initialization — the gradient turns non-zero once that weight moves, so "
            "allow this finding if the zeros are intended.")


def cancellation(node: str) -> str:
    return (f"both operands of Sub '{node}' are computed from this weight, and their gradients "
            "cancel exactly (a shared weight subtracted from itself); compute the two sides from "
            "different weights or inputs, or drop the difference.")


def zero_loss_weight(names: list[str]) -> str:
    shown = ", ".join(f"'{name}'" for name in names)
    return (f"it only feeds output{'s' if len(names) > 1 else ''} {shown}, whose loss weight is 0; "
            "give that output a non-zero loss weight, or allow this finding if the head is "
            "switched off on purpose.")


def other_branch_zero(decided_by: str) -> str:
    return ("it is read only on the side of a tf.cond inside a tf.function that these inputs did "
            f"not take, decided by {decided_by}; a branch not taken sends back zeros, so this is "
            "expected if other inputs take that side (allow this finding, or check with --input "
            "values that take it).")


# --- what a gradient request did to a None ------------------------------------------------------

#: What TensorFlow raises when ZERO must fill a None for a source passed as a Keras 3 variable.
ZERO_RAISES = "AttributeError: 'str' object has no attribute '_type_enum'"

ZERO_FIX = ("pass [v.value for v in variables] as the sources, or drop "
            "unconnected_gradients=ZERO")


def zero_filled(site: str, optimizer: str | None, raises: bool, why: str) -> str:
    """A variable whose None a ``UnconnectedGradients.ZERO`` request turned into zeros; ``why``
    is the sentence that says why it is None (the cause's own message, with its remedy)."""
    applied = f"'{optimizer}' applies zeros" if optimizer else "the zeros go on as its gradient"
    text = (f"unconnected_gradients=ZERO turned its None into zeros at {site} and {applied}: it "
            "never learns, and nothing says so; ")
    if raises:
        text += (f"under Keras 3 this very call raises {ZERO_RAISES} mid-training, as soon as it "
                 f"fills such zeros for a Keras variable: {ZERO_FIX}")
    else:
        text += "drop unconnected_gradients=ZERO so that a None shows"
    return f"{text}. Why it is None: {why}"


def zero_raises_warning(site: str) -> str:
    """The step itself fails under Keras 3 at ``site``."""
    return (f"the step raises {ZERO_RAISES} at {site} when it really runs: ZERO must fill zeros "
            "for an unconnected Keras variable, and TensorFlow builds them from the variable's "
            f"dtype, which Keras gives as a string; {ZERO_FIX}.")


def not_watched(site: str) -> str:
    """A variable the tape was never told to watch (``watch_accessed_variables=False``)."""
    return (f"the tape whose gradient is asked at {site} never watched it "
            "(watch_accessed_variables=False and no tape.watch of this variable), so its "
            "gradient is None; watch it with tape.watch(variable), or stop asking for it if it "
            "is frozen on purpose.")
def compiled_zero() -> str:
    return ("the eager step never reads it, but fit's compiled step (a tf.function) reads it "
            "inside a tf.while_loop or tf.cond on a path these inputs did not run, so it hands "
            "the optimizer exact zeros; expected if other inputs run that path (allow this "
            "finding), otherwise the weight never learns.")


def deferred(count: int, steps: int) -> str:
    """Gradients computed that no optimizer applied within the steps run, a branch deciding."""
    plural = "s" if count != 1 else ""
    return (f"{count} variable{plural} got a gradient that no optimizer applied in the {steps} "
            "steps gradcheck ran, while a branch of the step (a tf.cond or an if on a tensor) "
            "may apply it on a later step (gradient accumulation); they are judged by that "
            "gradient: check that the step applies them, or run with --data so that it does "
            "sooner.")


def one_element_softmax(op_type: str, node: str) -> str:
    return (f"every gradient path goes through {op_type} '{node}', a softmax over an axis of one "
            "element, whose output is constant (1, or 0 for its log); softmax over the right "
            "axis, use a sigmoid for one score, or drop the softmax.")


def shift_removed(shift: str, op_type: str, node: str) -> str:
    return (f"the shift it adds at '{shift}' is taken out again by the normalization right after "
            f"it ({op_type} '{node}' subtracts the mean), so nothing downstream depends on it; "
            "drop the bias (use_bias=False before a normalization), or allow this finding.")


def unreached_part(name: str, count: int) -> str:
    """A tower whose every variable got exact zeros that no reason explains."""
    return (f"the inputs did not reach '{name}': all {count} of its trainable variables got "
            "exact zeros with no reason the op graph shows (a tower entered only where the "
            "inputs hold a placeholder id or a prompt the synthetic batch lacks); its zero "
            "verdicts say nothing about its connectivity: give inputs that reach it with --input "
            "NAME=DIMS@VALUE or --data.")
