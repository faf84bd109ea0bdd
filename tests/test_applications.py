"""Every keras.applications architecture, fresh weights, no flags: verdicts equal the eager tape.

Slow (``make test-slow``): about forty models at a small input size.
"""

from __future__ import annotations

import inspect

import pytest

pytest.importorskip("tensorflow")

#: the smallest input each family accepts is below this for all but a few (tried first)
SIZES = (96, 224, 331)


def _architectures() -> list[str]:
    import keras

    return sorted(name for name, value in vars(keras.applications).items()
                  if name[:1].isupper() and inspect.isfunction(value))


def _build(name: str):
    import keras

    builder = getattr(keras.applications, name)
    for size in SIZES:
        try:
            model = builder(weights=None, input_shape=(size, size, 3), classes=10)
            break
        except ValueError:  # this family needs a larger (or a fixed) input
            continue
    else:
        model = builder(weights=None, classes=10)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    return model


@pytest.mark.slow
def test_every_keras_application_matches_the_tape():
    """As the keras-hub zoo: no flags, the compiled loss, every verdict equal to the tape's on the
    same random draws (stochastic depth drops whole blocks: the seed state is restored)."""
    from test_zoo import check_zoo_model

    from gradcheck.api import quiet_tensorflow

    quiet_tensorflow()
    import keras

    names = _architectures()
    assert len(names) >= 30, names
    failures = []
    for name in names:
        keras.backend.clear_session()
        try:
            check_zoo_model(_build(name))
        except Exception as exc:  # collect every architecture's failure, not just the first
            failures.append(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")
    assert not failures, "\n".join(failures)
