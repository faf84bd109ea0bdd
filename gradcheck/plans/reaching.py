"""Inputs that reach every tower: another fill of the masks when a whole part gets exact zeros.

A mask means "on" for one model and "padding" for the next (Gemma3n's audio mask marks the
frames to drop), so the synthetic batch's masks, all on, can shut a whole tower out.  When some
part of the model (a sub-model, or a layer with layers of its own) gets exact zeros on every
variable, the step is run again with each mask (or bool) input all off, one at a time, and the
batch that leaves the fewest such parts wins; the report's note says which.  A part still
missed is a warning (``diagnose.reach``).
"""

from __future__ import annotations

from collections.abc import Iterator

from gradcheck.layers import largest_parts
from gradcheck.plans.inputs import INT_DTYPES
from gradcheck.plans.synthetic import Batch, id_ranges, largest_table, with_special_ids


def parts_missed(model, variables: list, verdicts: list) -> int:
    """How many largest parts of ``model`` got exact zeros on every judged variable."""
    zero = {i for i, verdict in enumerate(verdicts) if not verdict.none and verdict.zero}
    return len(largest_parts(model, variables, zero)) if zero else 0


def id_variants(model, batch: Batch, compared: set[int]) -> Iterator[tuple[Batch, str]]:
    """The batch with the integer constants the step compared its ids with (``ops.equal(ids,
    7)``) placed in every id input that indexes a table, if they are not there yet."""
    import keras
    import numpy as np

    ranges = id_ranges(model, len(batch.specs))
    largest = largest_table(model)
    arrays = list(batch.arrays)
    for index, (spec, ids) in enumerate(zip(batch.specs, ranges)):
        wanted = sorted(c for c in compared if c >= 0 and not np.isin(c, arrays[index]))
        if ids is not None and spec.dtype in INT_DTYPES and spec.values is None and wanted:
            arrays[index] = with_special_ids(np.array(arrays[index]), ids[0], largest, wanted)
    if all(a is b for a, b in zip(arrays, batch.arrays)) or \
            all(np.array_equal(a, b) for a, b in zip(arrays, batch.arrays)):
        return
    value = keras.tree.map_structure(lambda i: arrays[i], batch.index_tree)
    yield (Batch(value, batch.index_tree, batch.specs, arrays, batch.sizes),
           f"ids {', '.join(map(str, sorted(compared)))} (which the step compares them with) placed")


def mask_variants(batch: Batch) -> Iterator[tuple[Batch, str]]:
    """The batch with one mask or bool input all off, for each such input the user did not set."""
    import keras
    import numpy as np

    for index, spec in enumerate(batch.specs):
        if spec.values is not None or not (spec.dtype == "bool" or "mask" in spec.name.lower()):
            continue
        arrays = list(batch.arrays)
        arrays[index] = np.zeros_like(arrays[index])
        value = keras.tree.map_structure(lambda i, arrays=arrays: arrays[i], batch.index_tree)
        yield (Batch(value, batch.index_tree, batch.specs, arrays, batch.sizes),
               f"'{spec.name}' all off")
