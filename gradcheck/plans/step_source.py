"""What a model's own ``train_step`` does with its batch, read from its source (no code runs).

``fit`` hands ``train_step`` what the dataset yields: ``(x, y)`` for a supervised step.  A step
that unpacks its argument (``x, y = data``, ``data[1]``, ``x, y, sw = data``,
``keras.utils.unpack_x_y_sample_weight(data)``) wants targets; given x alone, ``x, y = data``
would silently split a batch of two rows.  Such a step is tried on ``(x, y)`` batches first.
A ``@tf.function``-decorated step is read through its ``python_function``.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap

#: Functions that take a batch apart into x, y and sample weights.
_UNPACKERS = frozenset({"unpack_x_y_sample_weight", "unpack_data"})


def unpacks_targets(model) -> bool:
    """Does the model's ``train_step`` take targets out of its batch argument?"""
    step = getattr(type(model), "train_step", None)
    step = getattr(step, "python_function", step)  # a tf.function
    return _unpacks(inspect.unwrap(step)) if callable(step) else False


@functools.cache
def _unpacks(function) -> bool:
    try:
        source = textwrap.dedent(inspect.getsource(function))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return False
    definition = next((n for n in ast.walk(tree)
                       if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
    if definition is None or len(definition.args.args) < 2:
        return False
    batch = definition.args.args[1].arg  # train_step(self, data)
    return any(_takes_targets(node, batch) for node in ast.walk(definition))


def _takes_targets(node, batch: str) -> bool:
    if isinstance(node, ast.Assign) and _is_name(node.value, batch):
        return any(isinstance(t, (ast.Tuple, ast.List)) and len(t.elts) >= 2 for t in node.targets)
    if isinstance(node, ast.Subscript) and _is_name(node.value, batch):
        index = node.slice
        return isinstance(index, ast.Constant) and index.value in (1, 2, -1)
    if isinstance(node, ast.Call) and any(_is_name(a, batch) for a in node.args):
        called = node.func
        name = called.attr if isinstance(called, ast.Attribute) else getattr(called, "id", "")
        return name in _UNPACKERS
    return False


def _is_name(node, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name
