"""Arrays a model's config makes Keras allocate while it is deserialized, sized before they are.

Keras' deserializer turns ``{"class_name": "__numpy__", "config": {"value": V, "dtype": D}}``
into ``np.array(V, dtype=D)`` wherever it appears in a config (a Lambda's ``arguments``,
``compile_config.loss_weights``, a Functional node's call kwargs …), ``__tensor__`` into a
tensor, and the legacy ``.h5`` decoder turns a ``CompositeTensor`` into tensors.  A NumPy dtype
may declare a shape (``"(16000,16000)f8"`` is one element of 1.9 GiB) or a huge item
(``"V2000000000"``), so a hundred bytes of JSON can make NumPy allocate gigabytes before any
layer exists.  ``charge_config_arrays`` walks the parsed JSON, sizes every such array from its
declared value and dtype (NumPy's dtype parser reads metadata only), and charges the memory
budget in force before Keras builds any of them.  No Keras here.
"""

from __future__ import annotations

from typing import Any

from gradcheck.budget import charge_declared, human, variable_bytes
from gradcheck.load.places import walk_places

#: Copies of a declared array alive at once while Keras rebuilds a model: the array, and the one
#: a second deserialization makes (a Functional node whose inputs are not ready yet is
#: deserialized again; a ``__tensor__`` is converted from a NumPy copy).
DECLARED_COPIES = 2


def charge_config_arrays(source: str, config: Any, what: str = "config.json") -> None:
    """Charge the arrays ``config`` declares to the budget in force, or refuse the source."""
    arrays = [(size, description, place) for place in walk_places(config)
              for size, description in _declared_arrays(place.node)]
    if not arrays:
        return
    size, description, place = max(arrays, key=lambda item: item[0])
    largest = f"{description} at {place.describe()}"
    if len(arrays) == 1:
        named = f"{source}: {largest}, declared in its {what},"
    else:
        named = (f"{source}: the {len(arrays)} arrays its {what} declares (the largest: "
                 f"{largest}, {human(size)})")
    charge_declared(DECLARED_COPIES * sum(item[0] for item in arrays), named)


def _declared_arrays(node: dict) -> list[tuple[int, str]]:
    """(bytes, description) of each array this config object turns into when deserialized."""
    class_name, inner = node.get("class_name"), node.get("config")
    if class_name == "__numpy__" and isinstance(inner, dict):
        dtype = inner.get("dtype")
        count, longest = _leaves(inner.get("value"))
        itemsize = _numpy_itemsize(dtype, longest)
        return [(count * itemsize, f"the NumPy array of dtype {_short(dtype)} ({count} "
                                   f"element{'s' if count != 1 else ''} of {human(itemsize)})")]
    if class_name == "__tensor__" and isinstance(inner, dict):
        dtype = inner.get("dtype")
        count, longest = _leaves(inner.get("value"))
        itemsize = longest if str(dtype) == "string" else variable_bytes((), str(dtype))
        return [(count * max(itemsize, 1), f"the tensor of dtype {_short(dtype)} ({count} elements)")]
    if class_name == "CompositeTensor" and isinstance(node.get("tensors"), list):  # legacy .h5
        found = []
        for item in node["tensors"]:
            if isinstance(item, list) and len(item) == 2:
                count, longest = _leaves(item[1])
                itemsize = longest if str(item[0]) == "string" else variable_bytes((), str(item[0]))
                found.append((count * max(itemsize, 1), f"the composite tensor's {_short(item[0])} "
                                                        f"component ({count} elements)"))
        return found
    return []


def _leaves(value: Any) -> tuple[int, int]:
    """(elements, longest string) of a nested-list value: what ``np.array`` makes of it."""
    count, longest, stack = 0, 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        count += 1
        if isinstance(item, str):
            longest = max(longest, len(item))
    return count, longest


def _numpy_itemsize(dtype: Any, longest: int) -> int:
    """Bytes of one element of ``np.dtype(dtype)``; a string dtype without a length (``"U"``)
    takes the longest string; a dtype NumPy refuses costs nothing (NumPy refuses it again)."""
    import numpy as np

    try:
        parsed = np.dtype(dtype)  # metadata only: nothing of that size is allocated here
    except Exception:  # TypeError, ValueError, OverflowError …: np.array raises the same
        return 0
    if parsed.itemsize:
        return parsed.itemsize
    return longest * (4 if parsed.kind == "U" else 1)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

