"""gradcheck: find the trainable variables of a Keras model that will never learn, and say why.

Library use::

    import gradcheck

    report = gradcheck.check(model, allow=["critic/*"])   # or a path / factory spec, or a list
    gradcheck.testing.assert_connected(model)              # in a model repo's own tests
    model.fit(x, y, callbacks=[gradcheck.keras.GradCheck()])  # the first real batch of fit

``import gradcheck`` stays light: the names below are imported on first use, and TensorFlow only
when a model is analyzed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.3.0"

#: Public names and the module that defines each; loaded on first attribute access (PEP 562).
_LAZY = {
    "check": "gradcheck.api",
    "Options": "gradcheck.options",
    "Report": "gradcheck.report",
    "ModelReport": "gradcheck.report",
    "VariableResult": "gradcheck.report",
    "Status": "gradcheck.report",
    "CauseKind": "gradcheck.report",
    "ExitCode": "gradcheck.report",
}
_SUBMODULES = ("testing", "keras")

__all__ = ["CauseKind", "ExitCode", "ModelReport", "Options", "Report", "Status", "VariableResult",
           "__version__", "check", "keras", "testing"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
