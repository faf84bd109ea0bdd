"""What a training-step function's code reaches: its models, modules, variables and optimizers.

A step is judged on every trainable variable its code can reach — not on the whole module's
namespace, which may hold models the step never touches.  The walk starts at the function and
follows what Python would follow when it runs: the globals its code loads (and the attributes it
reads off a user module), its closure cells and default arguments, the functions it calls when
they are user code (``tf.function``s included), bound methods' objects, containers, and the
attributes of objects whose classes are user code.  Keras layers (Keras 3 or ``tf_keras``),
``tf.Module``s, variables and optimizers end the walk at that object: their own variables are
judged, plus any ``tf.Variable`` or ``tf.Module`` a layer holds that Keras does not track.

Nothing is called or imported here: objects are only looked at.
"""

from __future__ import annotations

import dis
import inspect
import types
from dataclasses import dataclass, field
from typing import Any

from gradcheck.locations import is_user_file

#: Objects looked at, at most: a step's code reaches a handful; a walk that goes on is lost.
MAX_OBJECTS = 20_000


@dataclass
class Reached:
    """Everything a step's code reaches, in the order found; ``names`` says where each was."""

    layers: list = field(default_factory=list)  #: Keras 3 / ``tf_keras`` layers and models
    modules: list = field(default_factory=list)  #: ``tf.Module``s that are not Keras layers
    variables: list = field(default_factory=list)  #: variables held directly (globals, lists)
    optimizers: list = field(default_factory=list)  #: every optimizer (state to keep, names)
    metrics: list = field(default_factory=list)  #: Keras 3 metrics (state to keep)
    names: dict[int, str] = field(default_factory=dict)  #: ``id(object)`` -> where it was found


def reach(*roots: tuple[Any, str]) -> Reached:
    """Walk from each (object, name) root; see the module docstring."""
    walker = _Walker()
    for value, name in roots:
        walker.visit(value, name)
    walker.run()
    return walker.found


class _Walker:
    def __init__(self):
        self.found = Reached()
        self._seen: set[int] = set()
        self._queue: list[tuple[Any, str]] = []
        self._kinds = _Kinds()

    def visit(self, value, name: str) -> None:
        if id(value) in self._seen or len(self._seen) >= MAX_OBJECTS or _is_scalar(value):
            return
        self._seen.add(id(value))
        self._queue.append((value, name))

    def run(self) -> None:
        while self._queue:
            value, name = self._queue.pop(0)
            self._take(value, name)

    def _take(self, value, name: str) -> None:
        kind = self._kinds.of(value)
        if kind is not None:
            getattr(self.found, kind).append(value)
            self.found.names.setdefault(id(value), name)
            if kind == "layers":
                self._untracked(value, name)
            return
        if isinstance(value, (list, tuple, set, frozenset)) or _is_list_wrapper(value):
            for index, item in enumerate(value):
                self.visit(item, f"{name}/{index}")
        elif isinstance(value, dict) or _is_dict_wrapper(value):
            for key, item in list(value.items()):
                self.visit(item, f"{name}/{key}")
        elif hasattr(value, "python_function") and callable(value):  # a tf.function
            self.visit(value.python_function, name)
        elif isinstance(value, types.MethodType):
            self.visit(value.__self__, name.rsplit(".", 1)[0] if "." in name else name)
            self.visit(value.__func__, name)
        elif isinstance(value, types.FunctionType):
            self._function(value)
        elif hasattr(value, "func") and hasattr(value, "keywords"):  # functools.partial
            self.visit(value.func, name)
            for index, item in enumerate(value.args):
                self.visit(item, f"{name}/{index}")
            for key, item in value.keywords.items():
                self.visit(item, key)
        elif isinstance(value, type):
            if _is_user_object(value):
                for attr, item in vars(value).items():
                    self.visit(getattr(item, "__func__", item), f"{name}.{attr}")
        elif _is_user_object(type(value)) and hasattr(value, "__dict__"):
            for attr, item in vars(value).items():
                self.visit(item, f"{name}.{attr}" if name else attr)
            self.visit(type(value), name)

    def _function(self, function: types.FunctionType) -> None:
        """The globals, closure and defaults of a user function (library code is not walked)."""
        code = function.__code__
        if not is_user_file(code.co_filename):
            return
        for cell_name, cell in zip(code.co_freevars, function.__closure__ or ()):
            try:
                self.visit(cell.cell_contents, cell_name)
            except ValueError:  # an empty cell: a name assigned later in the enclosing function
                continue
        for index, default in enumerate(function.__defaults__ or ()):
            self.visit(default, f"{function.__name__}.default{index}")
        for key, default in (function.__kwdefaults__ or {}).items():
            self.visit(default, key)
        namespace = function.__globals__
        for chain in _global_chains(code):
            if chain[0] not in namespace:
                continue  # a builtin
            value, label = namespace[chain[0]], chain[0]
            for attr in chain[1:]:  # attributes read off a user module: models.encoder
                if not (inspect.ismodule(value) and is_user_file(getattr(value, "__file__", ""))):
                    break
                if not hasattr(value, attr):
                    break
                value, label = getattr(value, attr), attr
            if not inspect.ismodule(value):
                self.visit(value, label)

    def _untracked(self, layer, name: str) -> None:
        """``tf.Variable``s and ``tf.Module``s a layer holds that Keras does not track."""
        from gradcheck.layers import layers_of

        tracked = {id(v) for v in getattr(layer, "variables", ())}
        tracked |= {id(getattr(v, "value", v)) for v in getattr(layer, "variables", ())}
        for inner in layers_of(layer, include_self=True):
            for attr, item in list(vars(inner).items()):
                if attr.startswith("_") and attr not in ("_trainable_weights",):
                    continue
                kind = self._kinds.of(item)
                if kind in ("variables", "modules") and id(item) not in tracked:
                    self.visit(item, f"{getattr(inner, 'name', name)}/{attr}")


class _Kinds:
    """Which of ``Reached``'s lists an object belongs to (None: look inside it)."""

    def __init__(self):
        import sys

        import keras
        import tensorflow as tf

        from gradcheck.hooks.interception import optimizer_classes

        self._tf, self._keras = tf, keras
        self._optimizers = tuple(optimizer_classes())
        legacy = sys.modules.get("tf_keras")
        self._legacy_layer = getattr(getattr(legacy, "layers", None), "Layer", None)
        self._legacy_metric = getattr(getattr(legacy, "metrics", None), "Metric", None)

    def of(self, value) -> str | None:
        tf, keras = self._tf, self._keras
        if isinstance(value, self._optimizers):
            return "optimizers"
        if isinstance(value, keras.metrics.Metric) or (
                self._legacy_metric is not None and isinstance(value, self._legacy_metric)):
            return "metrics"
        if isinstance(value, keras.layers.Layer) or (
                self._legacy_layer is not None and isinstance(value, self._legacy_layer)):
            return "layers"
        if isinstance(value, (tf.Variable, keras.Variable)):
            return "variables"
        if isinstance(value, tf.Module):
            return "modules"
        return None


def _global_chains(code: types.CodeType) -> list[tuple[str, ...]]:
    """Each global name the code (and the code nested in it) loads, with the attribute names read
    straight off it (``models.encoder.layers`` -> ``("models", "encoder", "layers")``)."""
    chains, stack = [], [code]
    while stack:
        current = stack.pop()
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
        chain: list[str] | None = None
        for instruction in dis.get_instructions(current):
            if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
                if chain:
                    chains.append(tuple(chain))
                chain = [instruction.argval]
            elif instruction.opname in ("LOAD_ATTR", "LOAD_METHOD") and chain:
                chain.append(instruction.argval)
            else:
                if chain:
                    chains.append(tuple(chain))
                chain = None
        if chain:
            chains.append(tuple(chain))
    return chains


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, complex, str, bytes,
                                                types.ModuleType, types.BuiltinFunctionType))


def _is_user_object(cls) -> bool:
    """A class defined in the user's own files (not a library's, not a builtin)."""
    module = inspect.getmodule(cls)
    return is_user_file(getattr(module, "__file__", "") or "")


def _is_list_wrapper(value) -> bool:
    """TensorFlow's and Keras' tracked lists (``ListWrapper``, Keras' ``TrackedList``)."""
    return type(value).__name__ in ("ListWrapper", "TrackedList", "_ListWrapper")


def _is_dict_wrapper(value) -> bool:
    return type(value).__name__ in ("_DictWrapper", "TrackedDict")


def container_paths(module) -> dict[int, str]:
    """``id(variable)`` -> its attribute path inside a ``tf.Module`` (``layers/0/w``)."""
    return {id(variable): path for path, variable in tracked_variables(module)}


def tracked_variables(obj) -> list[tuple[str, object]]:
    """(path, variable) for every ``tf.Variable`` a ``tf.Module`` holds, or a restored SavedModel
    object tracks (``w1``, ``layers/0/w``), first path first."""
    import tensorflow as tf

    flatten = getattr(obj, "_flatten", None)
    if flatten is not None:
        try:
            found = flatten(predicate=lambda v: isinstance(v, tf.Variable), with_path=True)
            return [("/".join(str(part) for part in path), v) for path, v in found]
        except Exception:  # a module whose attributes cannot be walked: its checkpoint view
            pass
    view = tf.train.TrackableView(obj)
    found, seen, queue = [], {id(obj)}, [(obj, "")]
    while queue:
        current, prefix = queue.pop(0)
        try:
            children = view.children(current)
        except Exception:
            continue
        for name, child in children.items():
            if id(child) in seen:
                continue
            seen.add(id(child))
            if isinstance(child, tf.Variable):
                found.append((f"{prefix}{name}", child))
            else:
                queue.append((child, f"{prefix}{name}/"))
    return found


def reached_variables(found: Reached) -> tuple[list, dict[int, str], set[int]]:
    """Every trainable variable of what was reached (layers, then modules, then loose ones),
    where each was found (for the report's paths), and the variables that must be named so
    (a ``tf_keras`` layer's: by the layers that hold them, as Keras 3 paths are)."""
    from gradcheck.plans.legacy import is_tf_keras, variable_paths
    from gradcheck.plans.variables import trainable_of, underlying, variable_name

    variables, hints, forced = [], {}, set()
    for layer in found.layers:
        owner = found.names.get(id(layer), "")
        paths = variable_paths(layer) if is_tf_keras(layer) else {}
        for variable in trainable_of(layer):
            variables.append(variable)
            if id(variable) in paths:
                forced.add(id(variable))
                hints.setdefault(id(variable), f"{layer.name}/{paths[id(variable)]}")
            hints.setdefault(id(variable), f"{owner}/{variable_name(variable)}")
    for module in found.modules:
        owner = found.names.get(id(module), getattr(module, "name", "module"))
        paths = container_paths(module)
        for variable in trainable_of(module):
            inner = paths.get(id(underlying(variable)))
            hints.setdefault(id(variable), f"{owner}/{inner}" if inner else owner)
            variables.append(variable)
    for variable in found.variables:
        if getattr(variable, "trainable", False):
            variables.append(variable)
            hints.setdefault(id(variable), found.names.get(id(variable), ""))
    return variables, hints, forced
