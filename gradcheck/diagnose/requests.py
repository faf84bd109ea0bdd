"""What a gradient request did to a None: refinements from the step's own ``tape.gradient`` calls.

Pure data, like ``diagnose.causes``: read off the ``StepRun``'s gradient calls.

* ``zero-filled``: the call asked for ``UnconnectedGradients.ZERO``, so the variable's None came
  back as zeros and an optimizer applied them: it never learns and nothing says so (and, when the
  sources were Keras 3 variables, the real call raises mid-training — the message says how to
  fix it).  The cause's kind (why it is None) stays.
* ``not-watched``: the tape was never told to watch it (``watch_accessed_variables=False``), which
  is why the op graph shows a path the tape does not take: ``not-trained``, no longer unknown.
"""

from __future__ import annotations

from dataclasses import replace

from gradcheck.diagnose import messages
from gradcheck.locations import short_text
from gradcheck.report import Cause, CauseDetail, CauseKind, VariableResult


def refine_requests(run, results: list[VariableResult],
                    judged_by: list[int | None]) -> list[VariableResult]:
    """Each unconnected variable's cause, refined by what its gradient call asked for."""
    refined = list(results)
    for index, (result, number) in enumerate(zip(results, judged_by)):
        if result.cause is None or number is None:
            continue
        call = run.calls[number]
        cause = result.cause
        if index in call.not_watched and run.handles[index] is not None:  # read, not watched
            cause = Cause(CauseKind.NOT_TRAINED, layer=cause.layer, detail=CauseDetail.NOT_WATCHED,
                          location=call.site, message=messages.not_watched(short_text(call.site)))
            refined[index] = result = replace(result, cause=cause, graph_agrees=True)
        if index in call.filled:
            handed = [a.optimizer for a in (run.applied or {}).get(index, []) if a.filled]
            text = messages.zero_filled(short_text(call.site), handed[-1] if handed else None,
                                        call.raises, cause.message)
            refined[index] = replace(result, cause=replace(
                cause, detail=CauseDetail.ZERO_FILLED, location=call.site or cause.location,
                message=text))
    return refined
