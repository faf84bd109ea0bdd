"""Refinements that look further than the recorded step, for every plan alike: why a ``zero``
gradient is zero, whether an unused weight is read on a branch these inputs did not take, inside
a function the step ran as one op, or only at inference.

Each runs only when some finding needs it, on what the ``StepRun`` offers (its graph, its
branches, ``replay`` and ``learns_at_inference``); a probe that cannot run concludes nothing.
"""

from __future__ import annotations

from dataclasses import replace

import networkx as nx

from gradcheck.diagnose import messages
from gradcheck.diagnose.boundaries import handle_id, refine_boundaries
from gradcheck.diagnose.causes import inference_only_cause, other_branch_cause, unused_cause
from gradcheck.diagnose.facts import layer_facts
from gradcheck.diagnose.flags import refine_flag_branches
from gradcheck.diagnose.zero import ZeroExplainer
from gradcheck.results import CauseDetail, CauseKind, Status, VariableResult, ZeroKind, ZeroReason

#: Python ``if`` statements on tensors flipped at most, one variant of the step each.
MAX_FLIPPED_TESTS = 8


def refine(run, model, results: list[VariableResult], *, judged_by: list[int | None],
           facts: list, connected: dict[str, set[str]]) -> list[VariableResult]:
    """Every refinement in turn: zero reasons, branches not taken, functions, inference-only.

    ``judged_by`` is, per variable, the gradient call its verdict came from; ``connected`` the
    ``reaches_loss`` set of each loss node already computed.
    """
    results = add_zero_reasons(run, results, judged_by, connected)
    results = refine_boundaries(run, results, judged_by)
    results = refine_flag_branches(model, run.variables, results)  # before anything is run again
    results = refine_other_branch(run, results)
    results = refine_inside_functions(run, model, results)
    if run.learns_at_inference is not None:  # a training=False step explains inference-only use
        results = refine_inference_only(run, results, facts)
    return results


def add_zero_reasons(run, results: list[VariableResult], judged_by: list[int | None],
                     connected: dict[str, set[str]]) -> list[VariableResult]:
    """Attach ``zero_reason`` to every ``zero`` variable whose op graph shows why."""
    zero = [i for i, r in enumerate(results) if r.status is Status.ZERO and judged_by[i] is not None]
    if not zero:
        return results
    all_zero = _AllZero(run.variables)
    explainers: dict[str, ZeroExplainer] = {}
    refined = list(results)
    for index in zero:
        loss = run.calls[judged_by[index]].loss_node
        if loss not in explainers:
            explainers[loss] = ZeroExplainer(run.graph, loss, zero_variables=all_zero,
                                             loss_weights=run.loss_weights,
                                             connected=connected.get(loss))
        reason = explainers[loss].reason(run.handles[index])
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


def refine_other_branch(run, results: list[VariableResult]) -> list[VariableResult]:
    """An unused variable read only on the other side of a branch is ``other-branch``, with the
    branch's line and what decided it.  The side not taken of an eager cond is run once more, off
    the tape; a Python ``if`` on a tensor is flipped in a variant of the step (at most
    ``MAX_FLIPPED_TESTS`` of them, and only while some unused variable is unexplained)."""
    waiting = {handle_id(v): i for i, (v, r) in enumerate(zip(run.variables, results))
               if r.cause is not None and r.cause.kind is CauseKind.UNUSED}
    if not waiting:
        return results
    refined = list(results)
    conds = [b for b in run.branches if b.not_taken is not None]
    for index, (decided_by, location) in list(_probe_branches(conds, run.graph, waiting)):
        refined[index] = _branch_refined(refined[index], decided_by, location)
    tests = [b for b in run.branches if b.truth_test is not None][:MAX_FLIPPED_TESTS]
    if not tests or not waiting or run.replay is None:
        return refined
    for index, (decided_by, location) in list(_flip_truth_tests(run, tests, waiting)):
        refined[index] = _branch_refined(refined[index], decided_by, location)
    return refined


def _flip_truth_tests(run, tests, waiting: dict[int, int]):
    """Yield (index, (what decided, location)) for waiting variables that a run of the step with
    one Python ``if`` flipped reads."""
    from gradcheck.hooks.layers import FlippedTruthTest

    def flipped(test):
        with FlippedTruthTest(test.truth_test):
            run.replay()

    yield from _claim_reads(tests, flipped, run.graph, waiting)


def refine_inside_functions(run, model, results: list[VariableResult]) -> list[VariableResult]:
    """Look inside tf.functions the step ran as single ops, by running the step once more with
    functions run eagerly — only when some finding needs it:

    * a ``zero`` weight passed into a function may be read only in a tf.cond branch not taken
      (whose gradient is zeros, not None): probe the sides not taken (``other-branch`` reason);
    * an ``unused`` weight whose layer sits under a function call cannot be told called or not
      from the step: here its ``Layer.__call__`` runs in Python.
    """
    graph, handles = run.graph, run.handles
    zero = {handle_id(v): i for i, (v, r, handle) in enumerate(zip(run.variables, results, handles))
            if r.status is Status.ZERO and r.zero_reason is None and handle is not None
            and any(graph.nodes[n].get("call") for n in graph.succ[handle])}
    unknown = [i for i, r in enumerate(results) if r.cause is not None
               and r.cause.kind is CauseKind.UNUSED and r.cause.detail is None]
    if (not zero and not unknown) or run.replay is None:
        return results
    from gradcheck.hooks.eager import FunctionsRunEagerly

    try:
        with FunctionsRunEagerly():
            read, called, inner = _eager_replay(run)
            refined = list(results)
            facts = layer_facts(model, run.variables, called)
            for index in unknown:
                if handle_id(run.variables[index]) not in read:
                    refined[index] = replace(results[index], cause=unused_cause(
                        results[index].cause.layer, facts[index]))
            waiting = {key: i for key, i in zero.items() if key not in read}
            waiting.update({handle_id(run.variables[i]): i for i in unknown})
            for index, (decided_by, location) in list(_probe_branches(inner.branches, inner.graph,
                                                                      waiting)):
                refined[index] = _branch_refined(refined[index], decided_by, location)
    except Exception:  # the model does not run with eager functions: no conclusion
        return results
    return refined


class _Inner:
    """The branches and op graph of an eager replay."""

    def __init__(self, branches, graph):
        self.branches, self.graph = branches, graph


def _eager_replay(run):
    """Replay the step (functions run eagerly by the caller): the handles it read, the layers it
    called, and its branches with their op graph."""
    import tensorflow as tf

    from gradcheck.hooks.layers import BranchRecorder, LayerCalls
    from gradcheck.hooks.ops import OpRecorder
    from gradcheck.plans.opgraph import build_op_graph

    with OpRecorder({}, run.named_inputs) as recorder, BranchRecorder(recorder) as branches, \
            LayerCalls() as calls, tf.GradientTape(watch_accessed_variables=True) as tape:
        outputs = run.replay()
    read = {id(v.handle) for v in tape.watched_variables()}
    graph, _ = build_op_graph(recorder, handles={}, outputs={}, layer_names=set(),
                              loss=_first_tensor(outputs))
    return read, frozenset(calls.called), _Inner(branches.branches, graph)


def _first_tensor(outputs):
    import tensorflow as tf

    flat = tf.nest.flatten(outputs) if outputs is not None else []
    return flat[0] if flat else tf.constant(0.0)


def _branch_refined(result: VariableResult, decided_by: str, location) -> VariableResult:
    if result.cause is not None:
        return replace(result, cause=other_branch_cause(result.cause, decided_by, location))
    return replace(result, zero_reason=ZeroReason(ZeroKind.OTHER_BRANCH, location=location,
                                                  message=messages.other_branch_zero(decided_by)))


def _probe_branches(branches, graph, waiting: dict[int, int]):
    """Yield (index, (what decided the branch, its location)) for each waiting variable that
    the side not taken of some branch reads; ``waiting`` maps handle ids to indices."""
    yield from _claim_reads(branches, lambda branch: branch.not_taken(), graph, waiting)


def _claim_reads(branches, run_other_side, graph, waiting: dict[int, int]):
    """For each branch, run its other side on a fresh tape (the step's tape is done) and yield
    (index, (what decided it, its location)) for the waiting variables it reads, removing them
    from ``waiting``.  A side that does not run on these inputs tells nothing."""
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
        decided_by = _decided_by(graph, branch)
        for key in read:
            index = waiting.pop(key, None)
            if index is not None:
                yield index, (decided_by, branch.location)


def _decided_by(graph, branch) -> str:
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


def refine_inference_only(run, results: list[VariableResult], facts: list) -> list[VariableResult]:
    """A variable unused or detached in training that a training=False step gives a gradient is
    used only at inference: ``cause.detail`` becomes ``inference-only``; the kind stays."""
    candidates = [i for i, r in enumerate(results) if r.cause is not None
                  and r.cause.kind in (CauseKind.UNUSED, CauseKind.DETACHED)
                  and r.cause.detail not in (CauseDetail.ADD_LOSS_ONLY, CauseDetail.OTHER_BRANCH,
                                             CauseDetail.LEFT_TENSORFLOW)]
    if not candidates:
        return results
    used = run.learns_at_inference([run.variables[i] for i in candidates])
    refined = list(results)
    for index, learns in zip(candidates, used):
        if learns:
            fact = facts[index]
            refined[index] = replace(results[index], cause=inference_only_cause(
                results[index].cause, fact.location or fact.caller_location))
    return refined
