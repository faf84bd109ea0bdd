"""A ``.keras`` model with its stored weights and assets, loaded without Keras' temporary copies.

Keras' own loader (``saving_lib._load_model_from_fileobj``) reads ``model.weights.h5`` whole into
memory, or, when it guesses that memory is short, extracts it into a temporary directory *next
to the input file*; and an archive with assets is extracted whole (weights included) into the
system's temporary directory, however large.  A directory-form model whose folder is named
``*.keras`` is opened as a zip and fails.

Here the same steps run on stores of our own: the weights are read in place (a stored member is
a slice of the archive, a directory's file is opened where it is; a small deflated member is
inflated in memory, within the budget), and only the ``assets/`` members are extracted, after
``members.archive_assets`` bounded them, into a fresh directory under ``tempfile.gettempdir()``
that is removed when loading ends.  In a worker that is the run's scratch directory, which the
parent removes even when the worker is killed (``runner``).  Nothing is written anywhere else.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import zipfile
from pathlib import Path

from gradcheck.budget import check_stored
from gradcheck.load.archive import BOMB_FLOOR, open_weights_member
from gradcheck.load.members import archive_assets, extract_assets
from gradcheck.problems import ErrorKind, SourceProblem

WEIGHTS_H5, WEIGHTS_NPZ = "model.weights.h5", "model.weights.npz"


def load_with_weights(path: Path, config: dict, custom_objects, safe_mode: bool, source: str):
    """Build the model from its (checked) config, compiled, and load its weights and assets."""
    from keras.src.saving import saving_lib
    from keras.src.saving.serialization_lib import ObjectSharingScope, deserialize_keras_object

    if not path.is_dir():
        with zipfile.ZipFile(path) as archive:
            archive_assets(archive, source)  # refused before anything is built
    with ObjectSharingScope():
        model = deserialize_keras_object(config, custom_objects, safe_mode=safe_mode)
    failed, errors = set(), {}
    with weights_store(path, source, inflate=True) as weights, assets_store(path, source) as assets:
        saving_lib._load_state(model, weights_store=weights, assets_store=assets, inner_path="",
                               visited_saveables=set(), failed_saveables=failed,
                               error_msgs=errors)
    if failed:
        saving_lib._raise_loading_failure(errors)
    return model


@contextlib.contextmanager
def weights_store(path: Path, source: str, *, inflate: bool):
    """Keras' store over the model's weights, read in place; None when there are none, or when
    they are deflated, large and ``inflate`` is off (seeking would re-inflate them)."""
    from keras.src.saving import saving_lib

    if path.is_dir():
        if (path / WEIGHTS_H5).is_file():
            store = saving_lib.H5IOStore(path / WEIGHTS_H5, mode="r")
        elif (path / WEIGHTS_NPZ).is_file():
            store = saving_lib.NpzIOStore(path / WEIGHTS_NPZ, mode="r")
        else:
            raise _no_weights(source)
        with contextlib.closing(store):
            yield store
        return
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        if WEIGHTS_H5 not in names:
            if WEIGHTS_NPZ not in names:
                raise _no_weights(source)
            with contextlib.closing(saving_lib.NpzIOStore(WEIGHTS_NPZ, archive, mode="r")) as store:
                yield store
            return
        with _member_file(path, archive, source, inflate) as member:
            if member is None:
                yield None
                return
            with contextlib.closing(saving_lib.H5IOStore(member, mode="r")) as store:
                yield store


def _no_weights(source: str) -> SourceProblem:
    return SourceProblem(ErrorKind.CORRUPT, f"{source} has a config.json but no {WEIGHTS_H5}; the "
                         "model is incomplete, re-save it.")


@contextlib.contextmanager
def _member_file(path: Path, archive: zipfile.ZipFile, source: str, inflate: bool):
    """model.weights.h5 as a file object for h5py: in place if stored, else inflated."""
    info = archive.getinfo(WEIGHTS_H5)
    if info.compress_type == zipfile.ZIP_STORED or info.file_size <= BOMB_FLOOR:
        with open_weights_member(path, archive) as member:
            yield member
        return
    if not inflate:
        yield None
        return
    check_stored(info.file_size, f"{source}: its deflated model.weights.h5")
    with archive.open(info) as member:
        data = member.read(info.file_size + 1)
    if len(data) > info.file_size:
        raise zipfile.BadZipFile("model.weights.h5 is longer than its declared size")
    yield io.BytesIO(data)


@contextlib.contextmanager
def assets_store(path: Path, source: str):
    """Keras' asset store: a directory model's own assets/ folder (checked by
    ``members.check_model_directory``), or an archive's assets extracted into a temporary
    directory of ours; None when the model has no assets."""
    from keras.src.saving import saving_lib

    if path.is_dir():
        folder = path / "assets"
        yield saving_lib.DiskIOStore(str(folder), mode="r") if folder.is_dir() else None
        return
    with zipfile.ZipFile(path) as archive:
        members = archive_assets(archive, source)
        if not members:
            yield None
            return
        scratch = Path(tempfile.mkdtemp(prefix="gradcheck-assets-"))
        try:
            extract_assets(archive, members, scratch)
            yield saving_lib.DiskIOStore(str(scratch / "assets"), mode="r")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
