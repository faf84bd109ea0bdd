"""The architecture of a ``.keras`` file with fresh weights, checked against the stored ones.

Without ``--real-weights`` the model is rebuilt from config.json alone and compiled for its
loss only; ``check_stored_shapes`` then proves that the rebuild is the saved model by walking the
stored HDF5 as Keras' own loader does, comparing shapes instead of assigning values.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from gradcheck.hooks.loading import ShapeMismatch, cheap_fresh_weights, shapes_compared_not_assigned
from gradcheck.load.stored import weights_store
from gradcheck.problems import ErrorKind, SourceProblem, describe_exception


def model_from_config(config: dict, custom_objects, safe_mode: bool):
    """Build the architecture (and compile it for its loss) without reading the stored weights."""
    import keras

    with cheap_fresh_weights():
        model = keras.saving.deserialize_keras_object(config, custom_objects=custom_objects,
                                                      safe_mode=safe_mode)
    compile_config = config.get("compile_config")
    if compile_config and hasattr(model, "compile_from_config"):
        _compile_for_loss(model, compile_config)
    return model


def _compile_for_loss(model, compile_config: dict) -> None:
    """Compile with the saved loss and loss weights, skipping the optimizer and metrics.

    Neither changes a gradient, and ``compile_from_config`` would build every optimizer slot.
    A model with its own ``compile`` goes through Keras' path unchanged.
    """
    import keras

    if type(model).compile is not keras.Model.compile:
        model.compile_from_config(compile_config)
        return
    kept = {key: value for key, value in compile_config.items()
            if key not in ("optimizer", "metrics", "weighted_metrics")}
    model.compile(**keras.saving.deserialize_keras_object(kept))


def check_stored_shapes(model, path: Path, source: str) -> None:
    """Refuse a rebuilt model whose variables do not have the stored weights' shapes.

    A class whose ``get_config`` drops an argument rebuilds into another architecture; Keras'
    ``load_model`` refuses it when it assigns the weights, and the fresh-weights rebuild must
    too, or gradcheck would analyze a model that is not the file.  Keras' own loading walk runs
    over the stored HDF5 with every assignment replaced by a shape comparison, so the same
    variables meet the same datasets as in ``load_model`` and no weight data is read.
    """
    import warnings

    from keras.src.saving import saving_lib

    try:
        with weights_store(path, source, inflate=False) as store:
            if not isinstance(store, saving_lib.H5IOStore):  # none, or deflated and large
                return
            with shapes_compared_not_assigned(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optimizer-slot notices
                saving_lib._load_state(model, weights_store=store, assets_store=None,
                                       inner_path="", visited_saveables=set())
    except ShapeMismatch as mismatch:
        raise SourceProblem(ErrorKind.ARCHITECTURE_MISMATCH, f"{source}: the model rebuilt from its "
                            f"config.json does not match its stored weights ({mismatch}), so "
                            "the config does not describe the saved model (a get_config() that "
                            "drops an argument?); Keras' load_model refuses it too. Fix "
                            "get_config() and re-save, or analyze a factory file.py:fn.") from None
    except ValueError as exc:  # Keras' own count check: "expected N variables, received M"
        raise SourceProblem(ErrorKind.ARCHITECTURE_MISMATCH, f"{source}: the model rebuilt from its "
                            "config.json does not match its stored weights "
                            f"({describe_exception(exc)}); Keras' load_model refuses it too. "
                            "Fix get_config() and re-save, or analyze a factory "
                            "file.py:fn.") from exc
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise SourceProblem(ErrorKind.CORRUPT, f"{source}: its model.weights.h5 cannot be read "
                            f"({describe_exception(exc)}); re-save the model.") from exc

