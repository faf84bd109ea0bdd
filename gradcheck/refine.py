"""Keras-side facts that make a cause precise: which layer owns a variable and whether it ran,
where its ``call()`` is, what a ``training=False`` step uses, and why a ``zero`` gradient is zero.

``diagnose`` words the causes from these facts; this module only gathers them from the model and,
when some variable is unused or detached, from one extra ``training=False`` step.
"""

from __future__ import annotations

import functools
from dataclasses import replace

from gradcheck.diagnose import LayerFacts, ZeroExplainer, inference_only_cause, other_branch_cause
from gradcheck.graph import CUSTOM_GRADIENT
from gradcheck.locations import function_location
from gradcheck.report import CauseDetail, CauseKind, Status, VariableResult, ZeroKind, ZeroReason


def refine(model, inputs, variables: list, results: list[VariableResult], step, *,
           facts: list[LayerFacts], connected: set[str], custom_loss: str | None,
           training: bool, data=None) -> list[VariableResult]:
    """Every refinement in turn: zero reasons, branches not taken, then inference-only.

    ``custom_loss`` and ``data`` are ``--loss`` and ``--data``'s batch, for the training=False step.
    """
    from gradcheck.losses import plan_loss

    results = add_zero_reasons(step, model, variables, results, connected=connected)
    results = refine_other_branch(model, inputs, variables, results, step, training=training)
    results = refine_inside_functions(model, inputs, variables, results, step, training=training)
    if training:  # a training=False step explains what only inference uses
        results = refine_inference_only(model, inputs, variables, results,
                                        plan_loss(model, custom=custom_loss, training=False,
                                                  data=data), facts)
    return results


def opaque_scopes(graph) -> set[str | None]:
    """The layer scopes of the function calls the step ran as single ops (None: outside layers)."""
    return {data["layer"] for _, data in graph.nodes(data=True)
            if data.get("call") and data["type"] != CUSTOM_GRADIENT}


def layer_facts(model, variables: list, called_layers: frozenset[int],
                opaque: set[str | None] = frozenset()) -> list[LayerFacts]:
    """Per variable: did its owning layer run in the step, where is its call(), and its caller's.

    A layer called inside an already traced tf.function runs no Python, so it is not seen
    calling: under an ``opaque`` scope (``opaque_scopes``), "not seen" means "cannot tell".
    """
    owners, parents = _ownership(model)
    facts = []
    for variable in variables:
        layer = owners.get(id(variable))
        if layer is None:
            facts.append(LayerFacts())
            continue
        called = id(layer) in called_layers
        owner = variable.path.rsplit("/", 1)[0]
        if not called and any(scope is None or owner == scope or owner.startswith(scope + "/")
                              for scope in opaque):
            called = None
        caller = next((p for p in _ancestors(layer, parents) if id(p) in called_layers
                       and _call_location(p) is not None), None)
        facts.append(LayerFacts(called=called, location=_call_location(layer),
                                caller_location=_call_location(caller) if caller else None))
    return facts


def _ownership(model) -> tuple[dict[int, object], dict[int, object]]:
    """``id(variable)`` -> the layer that created it; ``id(layer)`` -> a layer that contains it."""
    owners: dict[int, object] = {}
    parents: dict[int, object] = {}
    stack = [model]
    seen = {id(model)}
    while stack:
        layer = stack.pop()
        own = list(getattr(layer, "_trainable_variables", ())) + list(
            getattr(layer, "_non_trainable_variables", ()))
        for variable in own:
            owners.setdefault(id(variable), layer)
        flatten = getattr(layer, "_flatten_layers", None)
        for child in (flatten(include_self=False, recursive=False) if flatten else ()):
            if id(child) not in seen:
                seen.add(id(child))
                parents[id(child)] = layer
                stack.append(child)
    return owners, parents


def _ancestors(layer, parents: dict[int, object]):
    while id(layer) in parents:
        layer = parents[id(layer)]
        yield layer


def _call_location(layer):
    return _class_call_location(type(layer))


@functools.cache
def _class_call_location(layer_class):
    call = getattr(layer_class, "call", None)
    return function_location(call) if call is not None else None


def refine_other_branch(model, inputs, variables: list, results: list[VariableResult], step, *,
                        training: bool) -> list[VariableResult]:
    """An unused variable read only on the other side of a branch is ``other-branch``, with the
    branch's line and what decided it.  The side not taken of an eager cond is run once more, off
    the tape; a Python ``if`` on a tensor is flipped in a variant forward (at most
    ``MAX_FLIPPED_TESTS`` of them, and only while some unused variable is unexplained)."""
    waiting = {_handle_id(v): i for i, (v, r) in enumerate(zip(variables, results))
               if r.cause is not None and r.cause.kind is CauseKind.UNUSED}
    if not waiting:
        return results
    refined = list(results)
    conds = [b for b in step.branches if b.not_taken is not None]
    for index, (decided_by, location) in list(_probe_branches(conds, step.graph, waiting)):
        refined[index] = _branch_refined(refined[index], decided_by, location)
    tests = [b for b in step.branches if b.truth_test is not None][:MAX_FLIPPED_TESTS]
    if not tests or not waiting:
        return refined
    for index, (decided_by, location) in list(_flip_truth_tests(model, inputs, tests, step.graph,
                                                                waiting, training)):
        refined[index] = _branch_refined(refined[index], decided_by, location)
    return refined


#: Python ``if`` statements on tensors flipped at most, one variant forward each.
MAX_FLIPPED_TESTS = 8


def _flip_truth_tests(model, inputs, tests, graph, waiting: dict[int, int], training: bool):
    """Yield (index, (what decided, location)) for waiting variables that a forward with one
    Python ``if`` flipped reads."""
    from gradcheck.graph import FlippedTruthTest
    from gradcheck.step import forward, named_tensors

    tensors, _ = named_tensors(model, inputs)

    def flipped(test):
        with FlippedTruthTest(test.truth_test):
            forward(model, tensors, training)

    yield from _claim_reads(tests, flipped, graph, waiting)


def refine_inside_functions(model, inputs, variables: list, results: list[VariableResult], step,
                            *, training: bool) -> list[VariableResult]:
    """Look inside tf.functions the step ran as single ops, by running the forward once more with
    functions run eagerly — only when some finding needs it:

    * a ``zero`` weight passed into a function may be read only in a tf.cond branch not taken
      (whose gradient is zeros, not None): probe the sides not taken (``other-branch`` reason);
    * an ``unused`` weight whose layer sits under a function call cannot be told called or not
      from the step: here its ``Layer.__call__`` runs in Python.
    """
    import tensorflow as tf

    from gradcheck.diagnose import unused_cause
    from gradcheck.graph import BranchRecorder, LayerCalls, OpRecorder, build_op_graph
    from gradcheck.step import forward, named_tensors

    zero = {_handle_id(v): i for i, (v, r, handle) in enumerate(zip(variables, results, step.handles))
            if r.status is Status.ZERO and r.zero_reason is None and handle is not None
            and any(step.graph.nodes[n].get("call") for n in step.graph.succ[handle])}
    unknown = [i for i, r in enumerate(results) if r.cause is not None
               and r.cause.kind is CauseKind.UNUSED and r.cause.detail is None]
    if not zero and not unknown:
        return results
    previous = tf.config.functions_run_eagerly()
    tf.config.run_functions_eagerly(True)
    try:
        tensors, named = named_tensors(model, inputs)
        with OpRecorder({}, named) as recorder, BranchRecorder(recorder) as branches, \
                LayerCalls() as calls, tf.GradientTape(watch_accessed_variables=True) as tape:
            outputs = forward(model, tensors, training)
        read = {id(v.handle) for v in tape.watched_variables()}
        graph, _ = build_op_graph(recorder, handles={}, outputs={}, layer_names=set(),
                                  loss=tf.nest.flatten(outputs)[0])
        refined = list(results)
        facts = layer_facts(model, variables, frozenset(calls.called))
        for index in unknown:
            if _handle_id(variables[index]) not in read:
                refined[index] = replace(results[index], cause=unused_cause(
                    results[index].cause.layer, facts[index]))
        waiting = {key: i for key, i in zero.items() if key not in read}
        waiting.update({_handle_id(variables[i]): i for i in unknown})
        for index, (decided_by, location) in list(_probe_branches(branches.branches, graph, waiting)):
            refined[index] = _branch_refined(refined[index], decided_by, location)
    except Exception:  # the model does not run with eager functions: no conclusion
        return results
    finally:
        tf.config.run_functions_eagerly(previous)
    return refined


def _branch_refined(result: VariableResult, decided_by: str, location) -> VariableResult:
    if result.cause is not None:
        return replace(result, cause=other_branch_cause(result.cause, decided_by, location))
    return replace(result, zero_reason=ZeroReason(ZeroKind.OTHER_BRANCH, location=location, message=(
        "it is read only on the side of a tf.cond inside a tf.function that these inputs did "
        f"not take, decided by {decided_by}; a branch not taken sends back zeros, so this is "
        "expected if other inputs take that side (allow this finding, or check with --input "
        "values that take it).")))


def _handle_id(variable) -> int:
    return id(getattr(variable, "value", variable).handle)


def _probe_branches(branches, graph, waiting: dict[int, int]):
    """Yield (index, (what decided the branch, its location)) for each waiting variable that
    the side not taken of some branch reads; ``waiting`` maps handle ids to indices."""
    yield from _claim_reads(branches, lambda branch: branch.not_taken(), graph, waiting)


def _claim_reads(branches, run_other_side, graph, waiting: dict[int, int]):
    """For each branch, run its other side on a fresh tape (the step's tape is done) and yield
    (index, (what decided it, its location)) for the waiting variables it reads, removing them
    from ``waiting``.  A side that does not run on these inputs tells nothing."""
    import networkx as nx
    import tensorflow as tf

    for branch in branches:
        if not waiting:
            return
        try:
            with tf.GradientTape(watch_accessed_variables=True) as tape:
                run_other_side(branch)
            read = [id(v.handle) for v in tape.watched_variables()]
        except Exception:  # the other side does not run on these inputs: no conclusion
            continue
        decided_by = _decided_by(graph, branch, nx)
        for key in read:
            index = waiting.pop(key, None)
            if index is not None:
                yield index, (decided_by, branch.location)


def _decided_by(graph, branch, nx) -> str:
    """Which model input (or Python value, or op) the cond's predicate is computed from."""
    if branch.predicate is None or branch.predicate not in graph:
        return f"a Python value (it was {branch.taken})"
    upstream = nx.ancestors(graph, branch.predicate) | {branch.predicate}
    names = sorted({name for node in upstream for name in graph.nodes[node].get("reads_inputs", ())})
    if names:
        plural = "s" if len(names) > 1 else ""
        return f"input{plural} {', '.join(repr(n) for n in names)} (its predicate was {branch.taken})"
    kind = graph.nodes[branch.predicate]["type"]
    return f"the predicate {kind} '{branch.predicate}' (it was {branch.taken})"


def refine_inference_only(model, inputs, variables: list, results: list[VariableResult],
                          loss_plan, facts: list[LayerFacts]) -> list[VariableResult]:
    """Re-run the step with training=False when some variable is unused or detached.

    A variable the training=False step gives a gradient is used only at inference:
    ``cause.detail`` becomes ``inference-only``; the kind stays.
    """
    candidates = [i for i, r in enumerate(results) if r.cause is not None
                  and r.cause.kind in (CauseKind.UNUSED, CauseKind.DETACHED)
                  and r.cause.detail not in (CauseDetail.ADD_LOSS_ONLY, CauseDetail.OTHER_BRANCH)]
    if not candidates:
        return results
    used = _learns_at_inference(model, inputs, [variables[i] for i in candidates], loss_plan)
    refined = list(results)
    for index, learns in zip(candidates, used):
        if learns:
            refined[index] = replace(results[index], cause=inference_only_cause(
                results[index].cause, facts[index].location or facts[index].caller_location))
    return refined


def _learns_at_inference(model, inputs, variables: list, loss_plan) -> list[bool]:
    """Per variable: does a training=False step's loss give it a gradient?

    Only these variables are watched, so the tape records just the ops downstream of them.
    """
    import tensorflow as tf

    from gradcheck.step import forward

    tf_vars = [getattr(v, "value", v) for v in variables]
    try:
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(tf_vars)
            outputs = forward(model, inputs, False)
            value = tf.convert_to_tensor(loss_plan.compute(model, inputs, outputs))
        return [g is not None for g in tape.gradient(value, tf_vars)]
    except Exception:  # the model does not run at inference on these inputs: no conclusion
        return [False] * len(tf_vars)


def add_zero_reasons(step, model, variables: list, results: list[VariableResult], *,
                     connected: set[str] | None = None):
    """Attach ``zero_reason`` to every ``zero`` variable whose op graph shows why."""
    from gradcheck.losses import output_keys

    zero = [i for i, r in enumerate(results) if r.status is Status.ZERO]
    if not zero:
        return results
    explainer = ZeroExplainer(step.graph, step.loss_op, zero_variables=_AllZero(variables),
                              loss_weights=_loss_weights(model, output_keys(model)),
                              connected=connected)
    refined = list(results)
    for index in zero:
        reason = explainer.reason(step.handles[index])
        if reason is not None:
            refined[index] = replace(results[index], zero_reason=reason)
    return refined


class _AllZero:
    """``path in all_zero``: is that variable's value all zeros?  Read only for the variables asked
    about (the partners of a product), not for the whole model."""

    def __init__(self, variables: list):
        self._by_path = {v.path: v for v in variables}
        self._known: dict[str, bool] = {}

    def __contains__(self, path: str) -> bool:
        import numpy as np

        if path not in self._known:
            variable = self._by_path.get(path)
            self._known[path] = variable is not None and not np.any(variable.numpy())
        return self._known[path]


def _loss_weights(model, names: list[str]) -> dict[str, float]:
    """Output name -> its compiled loss weight (outputs without one are left out)."""
    weights = getattr(model, "loss_weights", None)
    if weights is None:  # Keras 3 keeps them on the compiled loss only
        weights = getattr(getattr(model, "_compile_loss", None), "_user_loss_weights", None)
    if weights is None:
        return {}
    if isinstance(weights, dict):
        return {name: float(w) for name, w in weights.items()}
    if isinstance(weights, (list, tuple)):
        return {name: float(w) for name, w in zip(names, weights)}
    return {name: float(weights) for name in names}
