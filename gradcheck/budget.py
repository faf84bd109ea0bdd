"""The memory budget: refuse a model whose declared sizes do not fit, before allocating them.

A model file is hostile until proven otherwise: ``Dense(units=10**9)`` is a few bytes of JSON
and gigabytes of RAM.  Every Keras variable is created through one constructor, so the guard
(``hooks.memory.guarded_variables``) checks each variable's declared shape against what is left
of the budget *before* the variable allocates its value, and names the layer and the size when
it refuses.  Synthetic inputs are
checked the same way before they are drawn.  The default budget is derived from the machine:
half of the smaller of its physical memory, the process's address-space limit and its cgroup's
memory limit.
"""

from __future__ import annotations

import contextlib
import math
import os
import re

from gradcheck.problems import ErrorKind, SourceProblem

#: What the step holds per weight byte: the value, its gradient and one temporary (fresh init).
STEP_COPIES_PER_WEIGHT = 3
#: Share of the machine's memory the default budget allows.
DEFAULT_SHARE = 0.5

_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10, "M": 2**20, "MB": 2**20,
          "MIB": 2**20, "G": 2**30, "GB": 2**30, "GIB": 2**30, "T": 2**40, "TB": 2**40,
          "TIB": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text: str | int) -> int:
    """``"6G"``, ``"512MiB"``, ``"2.5GB"`` or a number of bytes -> bytes; ValueError otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text <= 0:
            raise ValueError("a memory size must be positive.")
        return text
    match = _SIZE.match(str(text))
    unit = match.group(2).upper() if match else None
    if not match or unit not in _UNITS:
        raise ValueError(f"'{text}' is not a memory size such as 4G, 512M or 2.5GiB.")
    size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise ValueError("a memory size must be positive.")
    return size


def machine_memory() -> int:
    """Bytes this process may use: the least of RAM, RLIMIT_AS and the cgroup's memory.max."""
    limits = []
    with contextlib.suppress(ValueError, OSError, AttributeError):
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft not in (resource.RLIM_INFINITY, -1) and soft > 0:
            limits.append(soft)
    with contextlib.suppress(OSError, ValueError):
        with open("/sys/fs/cgroup/memory.max") as handle:
            text = handle.read().strip()
        if text.isdigit():
            limits.append(int(text))
    return min(limits) if limits else 8 * 2**30


def default_budget() -> int:
    """The default ``--max-memory``: half of what the machine lets this process use."""
    return int(machine_memory() * DEFAULT_SHARE)


def human(size: float) -> str:
    """``3221225472`` -> ``3.0 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(size) < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} PiB"


class MemoryBudget:
    """Bytes a source may claim; ``charge`` refuses what would exceed it."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0

    def charge(self, size: int, what: str) -> None:
        """Account for ``size`` bytes of ``what``, or raise ``SourceProblem('too-large')``."""
        if self.used + size > self.limit:
            raise SourceProblem(ErrorKind.TOO_LARGE, f"{what} needs {human(size)} for the step "
                                f"({human(self.used)} already claimed), more than the memory "
                                f"budget of {human(self.limit)}; if the machine really has the "
                                "memory, raise it with --max-memory.")
        self.used += size


def variable_bytes(shape, dtype) -> int:
    """Bytes of a variable of ``shape`` and ``dtype`` (unknown dtypes count as 4 bytes)."""
    count = math.prod(int(d) for d in shape) if shape else 1
    return count * _itemsize(dtype)


def _itemsize(dtype) -> int:
    name = str(getattr(dtype, "name", dtype))
    match = re.search(r"(\d+)$", name)
    if name == "bool":
        return 1
    return max(int(match.group(1)) // 8, 1) if match else 4


@contextlib.contextmanager
def in_force(budget: MemoryBudget):
    """Make ``budget`` the one ``charge_inputs`` and ``check_stored`` answer to, until exit."""
    global _current
    outer, _current = _current, budget
    try:
        yield budget
    finally:
        _current = outer


_current: MemoryBudget | None = None


def charge_inputs(shapes: list[tuple[str, tuple[int, ...], str]]) -> None:
    """Check the synthetic batch (name, shape with batch dim, dtype) against the budget in force."""
    if _current is None:
        return
    for name, shape, dtype in shapes:
        _current.charge(variable_bytes(shape, dtype) * STEP_COPIES_PER_WEIGHT,
                        f"the synthetic input '{name}' of shape {tuple(shape)}")


def check_stored(size: int, what: str) -> None:
    """Refuse stored data that would not fit the budget in force once read (``size`` bytes)."""
    if _current is not None and size > _current.limit:
        raise SourceProblem(ErrorKind.TOO_LARGE, f"{what} declares {human(size)} of weights, more than "
                            f"the memory budget of {human(_current.limit)}; refused before "
                            "reading them. If the machine really has the memory, raise it with "
                            "--max-memory.")


def current() -> MemoryBudget | None:
    """The budget in force (``in_force``), if any."""
    return _current
