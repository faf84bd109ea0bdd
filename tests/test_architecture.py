"""The house rules of ``gradcheck/``, read from the source: a newcomer finds the room for a change.

No import cycle between gradcheck's modules (lazy imports included), no module over 450 lines, no
function body over 60 lines, no private name imported from another module, and every patch of a
TensorFlow or Keras attribute inside ``gradcheck/hooks/`` — where a test proves it is undone.
No TensorFlow: the files are parsed, not imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gradcheck"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60
#: Packages whose attributes only ``gradcheck/hooks/`` may assign.
PATCHED_PACKAGES = ("tensorflow", "keras", "h5py", "tf_keras")


def _modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = (path, ast.parse(path.read_text(), str(path)))
    return found


MODULES = _modules()


def _imported(module: str, node: ast.AST) -> list[str]:
    """The gradcheck modules an import statement names (``from pkg import submodule`` too)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.startswith("gradcheck")]
    if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
        return []
    if not node.module.startswith("gradcheck"):
        return []
    names = [f"{node.module}.{alias.name}" for alias in node.names]
    return [name for name in names if name in MODULES] or [node.module]


def _runtime_nodes(tree: ast.Module):
    """Every node that runs: an ``if TYPE_CHECKING:`` block (annotations only) is left out."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            skipped |= {id(child) for child in ast.walk(node)}
    return [node for node in ast.walk(tree) if id(node) not in skipped]


def test_no_import_cycle_between_modules():
    graph = nx.DiGraph()
    for module, (_, tree) in MODULES.items():
        graph.add_node(module)
        for node in _runtime_nodes(tree):
            for target in _imported(module, node):
                if target in MODULES and target != module and target != "gradcheck":
                    graph.add_edge(module, target)
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_every_gradcheck_import_names_a_module_that_exists():
    """A module moved or renamed leaves no import behind (lazy imports included)."""
    stale = []
    for module, (_, tree) in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gradcheck"):
                if node.module not in MODULES:
                    stale.append(f"{module}:{node.lineno} {node.module}")
            elif isinstance(node, ast.Import):
                stale += [f"{module}:{node.lineno} {a.name}" for a in node.names
                          if a.name.startswith("gradcheck") and a.name not in MODULES]
    assert not stale, stale


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_and_function_sizes(module):
    path, tree = MODULES[module]
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines"
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body[1:] if ast.get_docstring(node) else node.body
            length = (body[-1].end_lineno - body[0].lineno + 1) if body else 0
            assert length <= MAX_FUNCTION_LINES, f"{module}.{node.name}: {length} lines"


def test_no_private_name_is_imported_from_another_module():
    offenders = []
    for module, (_, tree) in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gradcheck"):
                offenders += [f"{module}: {node.module}.{a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    assert not offenders, offenders


def _library_names(tree: ast.Module) -> set[str]:
    """Names bound to TensorFlow/Keras objects by the module's imports (anywhere in it)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names
                      if a.name.split(".")[0] in PATCHED_PACKAGES}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PATCHED_PACKAGES:
            names |= {a.asname or a.name for a in node.names}
    return names


def _root(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def test_tensorflow_and_keras_are_patched_only_in_hooks():
    offenders = []
    for module, (_, tree) in MODULES.items():
        if module.startswith("gradcheck.hooks"):
            continue
        library = _library_names(tree)
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, (ast.Assign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                targets = [t for t in targets if isinstance(t, ast.Attribute)]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr":
                targets = node.args[:1]
            offenders += [f"{module}:{node.lineno}" for t in targets if _root(t) in library]
    assert not offenders, f"patches outside gradcheck/hooks: {offenders}"


def test_the_checks_see_what_they_look_for():
    """The rules above would catch a cycle, a long function and a patch (no silent pass)."""
    tree = ast.parse("import keras\ndef f():\n    keras.layers.Layer.__call__ = None\n")
    library = _library_names(tree)
    assign = next(n for n in ast.walk(tree) if isinstance(n, ast.Assign))
    assert _root(assign.targets[0]) in library
    assert _imported("gradcheck.api", ast.parse("from gradcheck.plans import choice").body[0]) == [
        "gradcheck.plans.choice"]
    assert len(MODULES) > 40 and "gradcheck.plans.base" in MODULES
    guarded = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import gradcheck.api\n")
    assert not any(_imported("x", node) for node in _runtime_nodes(guarded))
