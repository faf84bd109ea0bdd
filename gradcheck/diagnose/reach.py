"""Parts of the model the inputs did not reach: never a silent ``zero``.

A whole tower (a sub-model, or a composite layer with layers of its own) whose every trainable
variable gets exact zeros with no reason the op graph shows is most likely a part the synthetic
inputs never reached: a vision or audio tower entered only where the token ids hold a
placeholder id, a prompt encoder whose labels were all padding.  The verdicts stay the tape's;
the report warns, in every format, naming the part, so that nobody reads its ``zero`` as a
disconnected tower or a clean one.
"""

from __future__ import annotations

from gradcheck.diagnose import messages
from gradcheck.layers import largest_parts
from gradcheck.report import Status, VariableResult


def unreached_parts(model, variables: list, results: list[VariableResult]) -> list[str]:
    """One warning per largest part whose variables are all unexplained zeros."""
    unexplained = {i for i, r in enumerate(results)
                   if r.status is Status.ZERO and r.zero_reason is None}
    if not unexplained:
        return []
    return [messages.unreached_part(getattr(layer, "path", None) or layer.name, count)
            for layer, count in largest_parts(model, variables, unexplained)]
