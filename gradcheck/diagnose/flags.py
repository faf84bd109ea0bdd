"""``other-branch`` for Python attribute flags: a weight read only behind ``if self.use_bias:``.

A layer configured with a flag off (``use_bias=False``, ``use_residual=False``) that still creates
the weight the flag switches on runs, but never reads it: ``weight-not-read`` would say its
``call()`` does not use it, which is wrong — it does, on the other side of the flag.  This module
reads the layer's own ``call()`` source (``inspect.getsource``, then ``ast``): when every
reference to the weight's attribute (``self.bias``), or, for a sub-layer never called, to the
attribute holding that sub-layer in its parent, sits behind an ``if`` / conditional expression
on the layer's plain attributes whose value sends the step the other way, the finding is
``other-branch`` with the line of that ``if``.  Only attribute values are read: no model code runs.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
from dataclasses import dataclass, replace

from gradcheck.diagnose import messages
from gradcheck.diagnose.facts import ownership
from gradcheck.locations import function_location
from gradcheck.results import CauseDetail, CauseKind, SourceLocation, VariableResult

#: Details a flag can explain: the layer ran without reading the weight, or never ran.
_EXPLAINED = (CauseDetail.WEIGHT_NOT_READ, CauseDetail.LAYER_NOT_CALLED, None)

#: Attribute values a flag may hold (anything else is not read as a flag).
_PLAIN = (bool, int, float, str, type(None), tuple)

_UNKNOWN = object()


@dataclass(frozen=True)
class Flag:
    """The ``if`` that keeps a reference from running."""

    condition: str  #: the test as written, ``self.use_bias`` (a leading ``not`` folded into wanted)
    wanted: bool  #: the reference runs only when the condition is this
    value: str  #: the attribute's value now, ``False``
    location: SourceLocation | None  #: the line of the ``if``


def refine_flag_branches(model, variables: list, results: list[VariableResult]) -> list[VariableResult]:
    """Unused variables read only behind a Python attribute flag that is off: ``other-branch``."""
    waiting = [i for i, r in enumerate(results) if r.cause is not None
               and r.cause.kind is CauseKind.UNUSED and r.cause.detail in _EXPLAINED]
    if not waiting:
        return results
    owners, parents = ownership(model)
    refined = list(results)
    for index in waiting:
        layer = owners.get(id(variables[index]))
        if layer is None:
            continue
        detail = results[index].cause.detail
        flag = None if detail is CauseDetail.LAYER_NOT_CALLED else guarding_flag(layer,
                                                                                  variables[index])
        called, child = False, layer
        while flag is None and detail is not CauseDetail.WEIGHT_NOT_READ and id(child) in parents:
            parent = parents[id(child)]
            flag, called, child = guarding_flag(parent, child), True, parent
        if flag is not None:
            cause = results[index].cause
            refined[index] = replace(results[index], cause=replace(
                cause, detail=CauseDetail.OTHER_BRANCH, location=flag.location or cause.location,
                message=messages.other_branch_flag(cause.layer, flag.condition, flag.wanted,
                                                   flag.value, called)))
    return refined


def guarding_flag(layer, target) -> Flag | None:
    """The flag of ``layer`` that keeps every reference in its ``call()`` to the attribute(s)
    holding ``target`` (a variable or a sub-layer) from running, or None."""
    names = _attributes_holding(layer, target)
    parsed = _parsed_call(type(layer)) if names else None
    if parsed is None:
        return None
    tree, function, first_line = parsed
    guards_per_reference: list[list] = []
    _statements(tree.body[0].body, names, [], guards_per_reference)
    if not guards_per_reference:
        return None
    deciders = [_decider(layer, guards) for guards in guards_per_reference]
    if any(decider is None for decider in deciders):
        return None  # some reference runs (or may run) in this configuration
    node, wanted = deciders[0]
    test, value = node.test, _UNKNOWN
    while isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        test, wanted = test.operand, not wanted
    if _is_self_attribute(test):
        value = _attribute_value(layer, test.attr)
    shown = repr(value) if value is not _UNKNOWN else f"{not wanted}"
    location = function_location(function)
    if location is not None:
        location = replace(location, line=first_line + node.lineno - 1)
    return Flag(ast.unparse(test), wanted, shown, location)


def _attributes_holding(layer, target) -> set[str]:
    """The names of ``layer``'s attributes whose value is ``target`` or holds it in a list."""
    names = set()
    for name, value in vars(layer).items():
        if value is target or (isinstance(value, (list, tuple)) and any(v is target for v in value)):
            names.add(name)
    return names


@functools.cache
def _parsed_call(layer_class):
    """(module AST of ``call``'s source, the function, its first line), or None."""
    call = getattr(layer_class, "call", None)
    function = inspect.unwrap(getattr(call, "__func__", call)) if call is not None else None
    try:
        lines, first_line = inspect.getsourcelines(function)
        return ast.parse(textwrap.dedent("".join(lines))), function, first_line
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None


def _statements(body: list, names: set[str], guards: list, found: list) -> None:
    """Append, for every reference to ``self.<name>`` in ``body``, the guards it sits under:
    (the ``if`` node, the side it is on).  Statements after an ``if`` whose side returns run only
    on the other side."""
    guards = list(guards)
    for statement in body:
        if isinstance(statement, ast.If):
            _expression(statement.test, names, guards, found)
            _statements(statement.body, names, guards + [(statement, True)], found)
            _statements(statement.orelse, names, guards + [(statement, False)], found)
            if _ends(statement.body):
                guards.append((statement, False))
            elif statement.orelse and _ends(statement.orelse):
                guards.append((statement, True))
            continue
        nested = [getattr(statement, field) for field in ("body", "orelse", "finalbody", "handlers")
                  if isinstance(getattr(statement, field, None), list)]
        for child in ast.iter_child_nodes(statement):
            if not any(child in block for block in nested):
                _expression(child, names, guards, found)
        for block in nested:
            handlers = [item for item in block if isinstance(item, ast.ExceptHandler)]
            for handler in handlers:
                _statements(handler.body, names, guards, found)
            if not handlers:
                _statements(block, names, guards, found)


def _expression(node, names: set[str], guards: list, found: list) -> None:
    if isinstance(node, ast.IfExp):
        _expression(node.test, names, guards, found)
        _expression(node.body, names, guards + [(node, True)], found)
        _expression(node.orelse, names, guards + [(node, False)], found)
        return
    if _is_self_attribute(node) and node.attr in names:
        found.append(guards)
        return
    if isinstance(node, ast.stmt):
        _statements([node], names, guards, found)
        return
    for child in ast.iter_child_nodes(node):
        _expression(child, names, guards, found)


def _ends(body: list) -> bool:
    return bool(body) and isinstance(body[-1], (ast.Return, ast.Raise))


def _decider(layer, guards: list):
    """The outermost guard that sends the step away from the reference, or None if it runs."""
    for node, side in guards:
        if _truth(layer, node.test) is (not side):
            return node, side
    return None


def _truth(layer, test) -> bool | None:
    """The test's truth from the layer's plain attributes, or None if they do not decide it."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = _truth(layer, test.operand)
        return None if inner is None else not inner
    if isinstance(test, ast.BoolOp):
        values = [_truth(layer, v) for v in test.values]
        decisive = isinstance(test.op, ast.Or)  # True decides an or, False an and
        if decisive in values:
            return decisive
        return None if None in values else not decisive
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        left, right = _operand(layer, test.left), _operand(layer, test.comparators[0])
        if left is _UNKNOWN or right is _UNKNOWN:
            return None
        return _compare(test.ops[0], left, right)
    value = _operand(layer, test)
    return None if value is _UNKNOWN else bool(value)


def _compare(op, left, right) -> bool | None:
    comparisons = {ast.Eq: lambda: left == right, ast.NotEq: lambda: left != right,
                   ast.Is: lambda: left is right, ast.IsNot: lambda: left is not right,
                   ast.Lt: lambda: left < right, ast.Gt: lambda: left > right,
                   ast.LtE: lambda: left <= right, ast.GtE: lambda: left >= right,
                   ast.In: lambda: left in right, ast.NotIn: lambda: left not in right}
    try:
        return bool(comparisons[type(op)]())
    except (KeyError, TypeError):
        return None


def _operand(layer, node):
    if _is_self_attribute(node):
        return _attribute_value(layer, node.attr)
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError):
        return _UNKNOWN


def _attribute_value(layer, name: str):
    """A plain attribute's value, read without running code (no properties), else unknown."""
    try:
        value = inspect.getattr_static(layer, name)
    except AttributeError:
        return _UNKNOWN
    return value if isinstance(value, _PLAIN) else _UNKNOWN


def _is_self_attribute(node) -> bool:
    return (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == "self")
