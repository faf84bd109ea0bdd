"""Time gradcheck's phases in-process: python benchmarks/phases.py (file MODEL | deep BLOCKS)

Wraps gradcheck's functions with timers (best effort: a function that was renamed is skipped) and
prints one JSON line: seconds per phase, the op count, the variable count.

Phases: ``import_tf``; ``load`` (load.load_source); ``step`` (step.run_step), which contains
``forward`` (the model call), ``tape_gradient``, ``build_op_graph`` (incl. ``probe``: asking
gradient functions) and ``verdicts`` (zero/finite checks), the rest being the loss; if the step
is a ``tf.function`` named ``traced`` it is also split into ``trace`` and ``execute``;
``after_step`` (analyze_model minus run_step: the explain loop and the report, i.e. everything
after the tape step), of which ``explain``.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

TIMES: dict[str, float] = defaultdict(float)
CPU: dict[str, float] = defaultdict(float)  #: process CPU seconds (all threads) per phase
_ACTIVE: set[str] = set()


def timed(owner, attr: str, label: str) -> None:
    """Replace ``owner.attr`` by a wrapper adding its wall time to TIMES[label] (not re-entrant)."""
    original = getattr(owner, attr, None)
    if original is None:
        TIMES.setdefault(label + " (not found)", 0.0)
        return

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        if label in _ACTIVE:
            return original(*args, **kwargs)
        _ACTIVE.add(label)
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            TIMES[label] += time.perf_counter() - start
            CPU[label] += time.process_time() - cpu
            _ACTIVE.discard(label)

    if isinstance(owner, type) and isinstance(owner.__dict__.get(attr), staticmethod):
        wrapper = staticmethod(wrapper)
    setattr(owner, attr, wrapper)


def instrument() -> None:
    start = time.perf_counter()
    from gradcheck import api

    api.quiet_tensorflow()
    import keras  # noqa: F401
    import tensorflow as tf

    TIMES["import_tf"] = time.perf_counter() - start
    CPU["import_tf"] = time.process_time()
    tf.get_logger().setLevel("ERROR")
    import gradcheck.diagnose as diagnose
    import gradcheck.graph as graph
    import gradcheck.load as sources  # load_source moved here from gradcheck.sources
    import gradcheck.step as step

    timed(sources, "load_source", "load")
    timed(step, "run_step", "step")
    timed(step, "build_op_graph", "build_op_graph")
    timed(step, "_forward", "forward")
    timed(step, "_verdict", "verdicts")
    timed(graph.GradientProber, "passes", "probe")
    timed(diagnose, "explain", "explain")
    timed(api, "analyze_model", "analyze_model")
    timed(tf.GradientTape, "gradient", "tape_gradient")

    real_function = tf.function

    def function(fn=None, *args, **kwargs):  # split the step's tf.function into trace / execute
        if fn is None or getattr(fn, "__name__", "") != "traced":
            return real_function(fn, *args, **kwargs)
        compiled = real_function(fn, *args, **kwargs)

        def call(*call_args):
            t0, c0 = time.perf_counter(), time.process_time()
            concrete = compiled.get_concrete_function(*call_args)
            t1, c1 = time.perf_counter(), time.process_time()
            result = concrete(*call_args)
            t2, c2 = time.perf_counter(), time.process_time()
            TIMES["trace"] += t1 - t0
            TIMES["execute"] += t2 - t1
            CPU["trace"] += c1 - c0
            CPU["execute"] += c2 - c1
            return result

        return call

    tf.function = function


def main(argv: list[str]) -> None:
    total_start = time.perf_counter()
    instrument()
    from gradcheck.api import Options, analyze_model, analyze_sources

    kind, target = argv[0], argv[1]
    real_weights = "--real-weights" in argv
    if kind == "file":
        reports = analyze_sources([target], Options(real_weights=real_weights))
    else:
        import keras
        import models

        keras.utils.set_random_seed(0)
        start, cpu = time.perf_counter(), time.process_time()
        model = models.deep_residual_mlp(int(target))
        TIMES["build_model"] = time.perf_counter() - start
        CPU["build_model"] = time.process_time() - cpu
        reports = [analyze_model(model, Options())]
    report = reports[0]
    if not report.ok:
        raise SystemExit(f"analysis failed: {report.error}")
    TIMES["after_step"] = TIMES["analyze_model"] - TIMES["step"]
    CPU["after_step"] = CPU["analyze_model"] - CPU["step"]
    TIMES["total"] = time.perf_counter() - total_start
    CPU["total"] = time.process_time()
    print(json.dumps({"times": dict(TIMES), "cpu": dict(CPU), "op_count": report.op_count,
                      "variables": len(report.variables),
                      "unconnected": sum(v.none for v in report.variables)}))


if __name__ == "__main__":
    # Keras maps a functional graph recursively: a 6k-block model needs a deep stack.
    import threading

    sys.setrecursionlimit(1_000_000)
    threading.stack_size(1 << 29)
    failure: list[BaseException] = []

    def target() -> None:
        try:
            main(sys.argv[1:])
        except BaseException as exc:  # re-raised in the main thread
            failure.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
