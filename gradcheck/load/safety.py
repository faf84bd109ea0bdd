"""Safe mode on a model's config, before Keras deserializes it: no bytecode, no unknown class,
no module imported that the user did not name.

A model file is untrusted: a Lambda's bytecode runs code, and importing a module a config names
runs that module.  These checks read the JSON only.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from typing import Any

from gradcheck.load.places import walk_places
from gradcheck.locations import LIBRARY_PACKAGES
from gradcheck.problems import ErrorKind, SourceProblem


def check_no_lambda_bytecode(source: str, config: Any) -> None:
    """Refuse Python bytecode anywhere in a config (safe mode; Keras does too), saying where.

    A Lambda layer's function is the usual place, but Keras deserializes a ``__lambda__``
    wherever one appears: an activation, a loss, a metric, a Lambda's ``output_shape``.
    """
    for place in walk_places(config):
        node = place.node
        if node.get("class_name") == "Lambda" and isinstance(node.get("config"), dict):
            layer = node["config"]
            function = layer.get("function")
            if (isinstance(function, dict) and function.get("class_name") == "__lambda__"
                    or isinstance(function, list)  # Keras 2: [code, defaults, closure]
                    or "lambda" in (layer.get("function_type"), layer.get("output_shape_type"))):
                raise SourceProblem(ErrorKind.UNSAFE_LAMBDA, f"{source} contains the Lambda layer "
                                    f"'{layer.get('name', '?')}', whose Python bytecode safe mode "
                                    "refuses to load because it could run arbitrary code; if you "
                                    "trust the file, pass --unsafe.")
        if node.get("class_name") == "__lambda__":
            raise SourceProblem(ErrorKind.UNSAFE_LAMBDA, f"{source} holds Python bytecode as the "
                                f"{place.describe()}, which safe mode refuses to load because it "
                                "could run arbitrary code; a model file needs none there. If you "
                                "trust the file, pass --unsafe.")


def unprovided_classes(config: Any, custom_objects, registry):
    """(node, class name, registered name) of every class a config names that neither
    ``custom_objects`` nor ``registry`` (a Keras ``get_registered_object``) provides."""
    for node in _walk(config):
        class_name = node.get("class_name")
        if not isinstance(class_name, str) or "config" not in node or class_name.startswith("__"):
            continue
        registered = node.get("registered_name") or class_name
        if registered in custom_objects or class_name in custom_objects:
            continue
        if registry(registered) is None:
            yield node, class_name, registered


def check_classes_known(source: str, config: Any, custom_objects) -> None:
    """Refuse early, by name, a class nobody can provide (Keras' own message is a wall)."""
    import keras

    for node, class_name, registered in unprovided_classes(config, custom_objects,
                                                           keras.saving.get_registered_object):
        module = node.get("module") or ""
        if not isinstance(module, str):
            module = ""
        if module and keras_module_has(module, class_name):
            continue
        if module in ("builtins", "") and class_name in ("function", "__lambda__", "__tensor__",
                                                         "__numpy__", "__bytes__", "__typespec__",
                                                         "__ellipsis__", "__slice__"):
            continue
        package = module.split(".")[0]
        if package in ("keras", "tensorflow", "") and _keras_has(class_name):
            continue  # a built-in class under an older module path, or with no module at all
        if package in _KERAS_PACKAGES and importlib.util.find_spec(package) is None:
            raise SourceProblem(ErrorKind.MISSING_PACKAGE, f"{source} uses the class '{class_name}' from "
                                f"the package {package}, which is not installed; install it "
                                f"(pip install {package.replace('_', '-')}).")
        if package in _KERAS_PACKAGES or package in ("keras", "tensorflow"):
            raise SourceProblem(ErrorKind.KERAS_VERSION, f"{source} uses the class '{class_name}' from "
                                f"{module}, which the installed {package} does not have; it was "
                                "probably saved with another version, so install that version or "
                                "re-save the model with this one.")
        raise SourceProblem(ErrorKind.CUSTOM_OBJECT, f"{source} uses the class '{registered}', which is "
                            "not registered; pass the file or module that defines it with "
                            "--custom-objects PATH_OR_MODULE.")


#: Packages whose classes Keras models use without any --custom-objects.
_KERAS_PACKAGES = tuple(p for p in LIBRARY_PACKAGES if p not in ("tensorflow", "keras"))


def _keras_has(class_name: str) -> bool:
    """Is ``class_name`` a public Keras class (what Keras falls back to for legacy configs)?"""
    import keras

    if class_name in ("Functional", "Sequential", "Model"):
        return True
    namespaces = (keras.layers, keras.losses, keras.metrics, keras.optimizers,
                  keras.optimizers.schedules, keras.initializers, keras.regularizers,
                  keras.constraints, keras.dtype_policies)
    return any(inspect.isclass(getattr(space, class_name, None)) for space in namespaces)


def keras_module_has(module: str, name: str) -> bool:
    """Does a Keras package's ``module`` define ``name``?  Never imports any other package.

    A model file is untrusted: importing a module it names runs that module's code (an
    ``__main__`` can end the run, write files or print into the report).  Like Keras' own safe
    mode, only the Keras packages are imported; anything else must be registered or come from
    ``--custom-objects``, which the user named.
    """
    package = module.split(".")[0]
    if package not in ("keras", *_KERAS_PACKAGES) or importlib.util.find_spec(package) is None:
        return False
    if any(not part.isidentifier() or part == "__main__" for part in module.split(".")):
        return False
    try:
        return hasattr(importlib.import_module(module), name)
    except Exception:
        return False


def walk_config(node: Any):
    """Every dict in a JSON tree, depth first."""
    return _walk(node)


def _walk(node: Any):
    """Every dict in a JSON tree, depth first (iterative: a crafted file may nest deeply)."""
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend(reversed(node))
