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
from gradcheck.layers import layers_of
from gradcheck.report import Status, VariableResult


def unreached_parts(model, variables: list, results: list[VariableResult]) -> list[str]:
    """One warning per largest part whose variables are all unexplained zeros."""
    unexplained = {id(_tf(v)) for v, r in zip(variables, results)
                   if r.status is Status.ZERO and r.zero_reason is None}
    if not unexplained:
        return []
    judged = {id(_tf(v)) for v in variables}
    warnings: list[str] = []
    stack, seen = list(reversed(layers_of(model, recursive=False))), set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:  # a layer held by two parents is one part
            continue
        seen.add(id(layer))
        own = [id(_tf(v)) for v in getattr(layer, "trainable_variables", [])]
        own = [key for key in own if key in judged]
        children = layers_of(layer, recursive=False)
        if own and children and all(key in unexplained for key in own):
            warnings.append(messages.unreached_part(getattr(layer, "path", None) or layer.name,
                                                    len(own)))
            continue  # the largest such part: its own parts need no warning of their own
        stack.extend(reversed(children))
    return warnings


def _tf(variable):
    return getattr(variable, "value", variable)
