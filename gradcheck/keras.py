"""gradcheck where people train: a Keras callback that judges the first real batch of ``fit``.

::

    model.fit(x, y, callbacks=[gradcheck.keras.GradCheck()])

Before the first batch changes any weight, ``GradCheck`` runs the model's real training step
(``train_step``, Keras' own or the model's override) on that very batch, eagerly, every
``tape.gradient`` and optimizer apply intercepted and nothing applied, everything restored
(``plans.train_step``), and judges every trainable variable as the command does.  A variable
that fails the gate stops training with the report (``on_fail="raise"``, the default) or warns
(``on_fail="warn"``).  Then Keras' own train function takes over, untouched: the first batch
is trained exactly as without the callback, and later batches cost nothing.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import keras

from gradcheck.report import Report
from gradcheck.results import AllowRule, Status


class GradientCheckWarning(UserWarning):
    """A variable fails the gate, and ``GradCheck(on_fail="warn")`` lets training go on."""


class GradCheck(keras.callbacks.Callback):
    """Judge the model's real training step on the first batch of ``fit``.

    ``on_fail``: ``"raise"`` (stop ``fit`` with ``gradcheck.testing.GradientCheckFailed``,
    holding the report) or ``"warn"`` (a ``GradientCheckWarning``; training goes on).  ``allow``
    and ``fail_on`` are ``gradcheck.check``'s; ``options`` are ``Options`` fields (``debug``,
    ``graph_dir`` …).  After ``fit``, ``report`` holds the ``Report`` (None if no batch ran).
    """

    def __init__(self, *, on_fail: str = "raise",
                 allow: str | Iterable[str | dict | AllowRule] = (),
                 fail_on: str | Iterable[str | Status] = ("unconnected",), **options: Any):
        from gradcheck.api import keyword_options

        super().__init__()
        if on_fail not in ("raise", "warn"):
            raise ValueError(f"on_fail must be 'raise' or 'warn', got {on_fail!r}.")
        self.on_fail, self.allow, self.fail_on = on_fail, allow, fail_on
        self.options = keyword_options(options, caller="GradCheck()")
        self.report: Report | None = None
        self._train_function = None

    def on_train_begin(self, logs=None):
        self.report = None
        self._train_function = self.model.train_function
        if self._train_function is not None:  # Keras builds it just before this call
            self.model.train_function = self._first_batch

    def on_train_end(self, logs=None):
        if self.model.train_function == self._first_batch:  # fit ran no batch
            self.model.train_function = self._train_function

    def _first_batch(self, iterator):
        """Judge the first batch, then hand it and the rest to Keras' own train function."""
        self.model.train_function = self._train_function
        data = next(iter(iterator))
        self.report = self._judge(data)
        if self.report.failures or self.report.errors:
            self._fail(self.report)
        return self._train_function(_Prepended(data, iterator))

    def _judge(self, data) -> Report:
        from gradcheck.api import analyze_in_process, gated
        from gradcheck.plans.batches import StepBatch
        from gradcheck.plans.train_step import OwnTrainStepPlan

        plan = OwnTrainStepPlan(StepBatch(data, "the first batch of fit"), reseed=False)
        source = f"<fit: {self.model.name}>"
        model_report = analyze_in_process(self.model, self.options, source=source, plan=plan)
        return gated([model_report], allow=self.allow, fail_on=self.fail_on)

    def _fail(self, report: Report) -> None:
        from gradcheck.formats import Format, render
        from gradcheck.testing import GradientCheckFailed

        text = render(report, Format.TEXT).rstrip("\n")
        if self.on_fail == "warn":
            warnings.warn(GradientCheckWarning(text), stacklevel=2)
            return
        self.model.stop_training = True
        raise GradientCheckFailed(text, report)


class _Prepended:
    """The batch already taken, then the rest of ``fit``'s iterator (Keras' train function reads a
    plain iterator one batch per step, so the first batch is trained exactly once)."""

    def __init__(self, first, rest):
        self._first, self._rest = [first], rest

    def __iter__(self):
        return self

    def __next__(self):
        if self._first:
            return self._first.pop()
        return next(self._rest)
