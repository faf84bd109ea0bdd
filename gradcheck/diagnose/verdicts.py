"""One code path from a ``StepRun`` to the report's verdicts, whichever plan ran.

A variable is trained when some gradient call returns it a tensor that an optimizer applies (a
loss plan's one call is applied by ``fit`` itself), or when the step's own code changes it;
unconnected when every gradient call that asks for it returns None, with the cause read from the
op graph against *that call's* target; ``not-trained`` when no call asks for it or no optimizer is
handed its gradient.  Then every refinement runs (``diagnose.probes``).
"""

from __future__ import annotations

from dataclasses import replace

from gradcheck.diagnose import messages
from gradcheck.diagnose.boundaries import untracked_results
from gradcheck.diagnose.causes import explain, reaches_loss, status_of
from gradcheck.diagnose.facts import layer_facts, opaque_scopes, owner_of
from gradcheck.diagnose.probes import refine
from gradcheck.diagnose.requests import refine_requests
from gradcheck.locations import short_text
from gradcheck.plans.base import NONE, AppliedGradient, TapeVerdict
from gradcheck.results import (
    Cause,
    CauseKind,
    GradientCallSite,
    Status,
    VariableResult,
    ZeroKind,
    ZeroReason,
)


class _Judge:
    """Per-run memo: each loss node's ``reaches_loss`` set, and the layer facts when needed."""

    def __init__(self, run, model):
        self.run, self.model = run, model
        self.connected: dict[str, set[str]] = {}
        self._facts: list | None = None

    def reach(self, loss: str) -> set[str]:
        if loss not in self.connected:
            self.connected[loss] = reaches_loss(self.run.graph, loss)
        return self.connected[loss]

    def facts(self) -> list:
        if self._facts is None:
            run = self.run
            self._facts = layer_facts(self.model, run.variables, run.called_layers,
                                      opaque_scopes(run.graph))
        return self._facts

    def site(self, call, optimizer: str | None) -> GradientCallSite | None:
        if not self.run.user_calls:
            return None
        return GradientCallSite(short_text(call.site), optimizer, call.site)


def judge(run, model) -> list[VariableResult]:
    """A ``VariableResult`` per variable of ``run`` (a ``plans.base.StepRun``), refined."""
    memo = _Judge(run, model)
    results, judged_by = [], []
    for index, variable in enumerate(run.variables):
        result, call = _verdict(memo, index, variable)
        results.append(result)
        judged_by.append(call)
    needs_facts = any(r.cause is not None for r in results)
    facts = memo.facts() if needs_facts else [None] * len(results)
    results = refine(run, model, results, judged_by=judged_by, facts=facts,
                     connected=memo.connected)
    results = refine_requests(run, results, judged_by)
    results = [replace(r, zero_reason=ZeroReason(ZeroKind.OTHER_BRANCH,
                                                 message=messages.compiled_zero()))
               if index in run.compiled_zero and r.status is Status.ZERO and r.zero_reason is None
               else r for index, r in enumerate(results)]
    return results + untracked_results(run, model)


def _verdict(memo: _Judge, index: int, variable) -> tuple[VariableResult, int | None]:
    """The verdict of one variable, and the gradient call it was judged against."""
    run = memo.run
    owner, handle = owner_of(variable.path), run.handles[index]
    applied = _applied(run, index)
    asking = [n for n, call in enumerate(run.calls) if index in call.results]
    site, agrees, cause, judged_by = None, True, None, None
    if applied:
        # nonfinite only when every applied gradient was (a loss-scale optimizer skips the
        # steps whose scaled gradients overflow); zero only when every finite one was
        finite = [a for a in applied if a.verdict.finite] or applied
        verdict = TapeVerdict(none=False, zero=all(a.verdict.zero for a in finite),
                              finite=finite[0].verdict.finite)
        giver = next((a for a in applied if a.call is not None), None)
        if giver is not None:
            call = run.calls[giver.call]
            site, judged_by = memo.site(call, giver.optimizer), giver.call
            _, agrees = explain(run.graph, handle, call.loss_node, owner=owner, tape_none=False,
                                connected=memo.reach(call.loss_node))
        elif run.user_calls:
            site = GradientCallSite("<unknown>", applied[0].optimizer)
    elif index in run.assigned:  # updated by the step's own code, not through an optimizer
        computed = [n for n in asking if not run.calls[n].results[index].none]
        verdict = (run.calls[computed[-1]].results[index] if computed
                   else TapeVerdict(none=False, zero=False, finite=True))
        site = (memo.site(run.calls[computed[-1]], None) if computed
                else GradientCallSite("<assigned in the step>", None))
    elif index in run.compiled_zero and (run.applied or {}).get(index):
        # None eagerly, but fit's compiled step hands the optimizer exact zeros
        verdict = TapeVerdict(none=False, zero=True, finite=True)
        site = memo.site(run.calls[asking[-1]], run.applied[index][-1].optimizer) if asking else None
    elif index in run.deferred:  # computed, applied by no step within the bound
        computed = [n for n in asking if not run.calls[n].results[index].none]
        verdict, judged_by = run.calls[computed[-1]].results[index], computed[-1]
        site = memo.site(run.calls[judged_by], None)
    elif asking and all(run.calls[n].results[index].none for n in asking):
        verdict, judged_by = NONE, asking[-1]
        call = run.calls[judged_by]
        site = memo.site(call, call.optimizer)
        cause, agrees = explain(run.graph, handle, call.loss_node, owner=owner, tape_none=True,
                                connected=memo.reach(call.loss_node), layer=memo.facts()[index])
    else:
        verdict, cause = NONE, _not_trained(run, index, owner)
    return VariableResult(
        path=variable.path, shape=tuple(int(d) for d in variable.shape), layer=owner,
        dtype=str(variable.dtype), none=verdict.none, zero=verdict.zero, status=status_of(verdict),
        cause=cause, graph_agrees=agrees, gradient_call=site), judged_by


def _applied(run, index: int) -> list:
    """The gradients an optimizer applied to variable ``index`` (tensors, not None).  A loss
    plan has no optimizer to watch: ``fit`` applies every gradient its one call returns."""
    if run.applied is not None:
        return [a for a in run.applied.get(index, []) if not a.verdict.none and not a.filled]
    return [AppliedGradient("", call.results[index], number)
            for number, call in enumerate(run.calls)
            if index in call.results and not call.results[index].none]


def _not_trained(run, index: int, owner: str) -> Cause:
    """The cause of a variable the step never computes, or never applies, a gradient for."""
    computed = [call for call in run.calls
                if index in call.results and not call.results[index].none]
    handed = (run.applied or {}).get(index, [])
    text = messages.not_trained(
        short_text(computed[-1].site) if computed else None,
        handed[-1].optimizer if handed else None,
        [short_text(call.site) for call in run.calls if call.results])
    return Cause(CauseKind.NOT_TRAINED, layer=owner, message=text)
