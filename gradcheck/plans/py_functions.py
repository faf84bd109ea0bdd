"""A step that failed in a ``tf.py_function`` / ``tf.numpy_function``: the error names the
function and the line that calls it, not ``--input``.

TensorFlow reports an exception raised in the wrapped Python function as an error of the
``EagerPyFunc`` / ``PyFunc`` op, with the function's own traceback in the message; a backward
pass through a py_function fails on its output, which has no static shape.  Other input shapes
cannot help with either.
"""

from __future__ import annotations

import re

from gradcheck.hooks.ops import PY_FUNCTION_OPS
from gradcheck.locations import is_named_file, location_of_frame, where_text
from gradcheck.problems import ErrorKind, SourceProblem, describe_exception

_OP = re.compile(r"\b(EagerPyFunc|PyFunc|PyFuncStateless)\b")
_FRAME = re.compile(r'File "(?P<path>[^"]+)", line \d+, in (?P<function>[\w<>.]+)')


def py_function_failure(stage: str, exc: BaseException, ops=(), *,
                        kind: ErrorKind = ErrorKind.FORWARD_FAILED) -> SourceProblem | None:
    """The error (of ``kind``) of a step that failed in (or, backward, through) a py_function,
    else None.  ``ops`` are the ``hooks.ops.RecordedOp`` s recorded before the failure."""
    text = str(exc)
    if _OP.search(text):
        location = _calling_line(exc)
    else:
        through = [op for op in ops if op.type in PY_FUNCTION_OPS]
        if stage != "backward pass" or not through:
            return None
        location = through[-1].location
    names = [m.group("function") for m in _FRAME.finditer(text)
             if "/tensorflow/" not in m.group("path").replace("\\", "/")]
    named = f" {names[-1]}" if names else ""
    where = f" called {where_text(location)}" if location is not None else ""
    return SourceProblem(
        kind,
        f"the model's {stage} failed in the tf.py_function/numpy_function{named}{where}: "
        f"{describe_exception(exc)}; fix that function, or write it with keras.ops or tf ops: a "
        "py_function's output has no static shape and passes a gradient back only if its body "
        "computes with TensorFlow ops (other --input shapes do not change this).")


def _calling_line(exc: BaseException):
    """The innermost line of user (or third-party) code in the exception's traceback(s)."""
    found, seen = None, set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            if is_named_file(tb.tb_frame.f_code.co_filename):
                found = location_of_frame(tb.tb_frame, tb.tb_lineno)
            tb = tb.tb_next
        if found is not None:
            return found
        exc = exc.__cause__ or exc.__context__
    return None
