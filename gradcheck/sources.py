"""Turn a SOURCE string into a Keras model: ``.keras``, ``.h5``, ``file.py:fn`` or ``pkg.mod:fn``.

Input files are only ever opened for reading.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import inspect
import io
import json
import math
import os
import re
import stat
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradcheck.budget import check_stored
from gradcheck.problems import ErrorKind, SourceProblem, describe_exception, is_out_of_memory, printable

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_WEIGHTS_ENTRIES = ("model.weights.h5", "model.weights.npz")  #: what Keras 3 reads weights from


@dataclass(frozen=True)
class FactorySpec:
    """A ``target:function`` source: ``target`` is a ``.py`` path or a dotted module name."""

    target: str
    function: str
    is_file: bool


def parse_factory(source: str) -> FactorySpec | None:
    """Return the factory spec if ``source`` looks like ``file.py:fn`` or ``pkg.mod:fn``."""
    if ":" not in source or source.lower().endswith(MODEL_SUFFIXES):
        return None
    target, _, function = source.rpartition(":")
    if not target or not function.isidentifier():
        return None
    is_file = target.endswith(".py") or "/" in target or "\\" in target
    if not is_file and not all(part.isidentifier() for part in target.split(".")):
        return None
    return FactorySpec(target, function, is_file)


def import_custom_objects(specs: list[str]) -> dict[str, Any]:
    """Import each ``.py`` file or module so its registered Keras classes become known.

    Also returns the Keras classes and functions the modules define, by name, so that classes
    the author forgot to register still deserialize.
    """
    import keras

    found: dict[str, Any] = {}
    for spec in specs:
        module = import_target(spec, is_file=spec.endswith(".py") or "/" in spec,
                               what="--custom-objects")
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, (keras.layers.Layer, keras.losses.Loss,
                                                             keras.initializers.Initializer,
                                                             keras.regularizers.Regularizer,
                                                             keras.constraints.Constraint)):
                found[name] = value
    return found


def load_source(source: str, *, custom_objects: dict[str, Any], safe_mode: bool,
                weights: bool = True):
    """Load one source into a Keras model (or layer); raise ``SourceProblem`` on any user error.

    Each source starts from a fresh Keras session, so auto-generated names (``dense_1`` …) do not
    depend on what was loaded before: the same source gives the same variable paths whether it
    comes first in a run or last.  (The caller seeds the RNG; clearing the session keeps it.)
    """
    import keras

    keras.backend.clear_session(free_memory=False)
    if source.startswith("-"):
        raise SourceProblem(ErrorKind.OPTION_LIKE, f"{printable(source)} looks like an option, not a "
                            "model; a file name that starts with '-' is refused so that a list "
                            "of changed files cannot set options. Rename it, or pass it as "
                            f"./{printable(source)}.")
    factory = parse_factory(source)
    if factory is not None:
        return _call_factory(source, factory)
    path = Path(source)
    suffix = path.suffix.lower()
    if path.is_dir() and os.path.lexists(path / "config.json"):  # saved with zipped=False
        return _load_keras(path, source, custom_objects, safe_mode, weights)
    _check_readable_file(path, source)
    if suffix == ".keras":
        return _load_keras(path, source, custom_objects, safe_mode, weights)
    if suffix in (".h5", ".hdf5"):
        return _load_h5(path, source, custom_objects, safe_mode)
    if suffix == ".py":
        raise SourceProblem(ErrorKind.UNSUPPORTED, f"{source} is a Python file; name the function that "
                            f"returns the model, as {source}:function.")
    raise SourceProblem(ErrorKind.UNSUPPORTED, f"{source}: unsupported file type '{path.suffix}'; "
                        "gradcheck reads .keras and .h5 model files and factories written as "
                        "file.py:function.")


def _check_readable_file(path: Path, source: str) -> None:
    """The path is a non-empty regular file this process may read."""
    if not path.exists():
        raise SourceProblem(ErrorKind.MISSING, f"{source}: no such file or directory; check the path.")
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            raise SourceProblem(ErrorKind.NOT_A_FILE, f"{source} is a TensorFlow SavedModel directory, "
                                "which Keras 3 cannot load as a model; give a .keras or .h5 file, "
                                "or a factory path/to/file.py:function that builds the model.")
        raise SourceProblem(ErrorKind.NOT_A_FILE, f"{source} is a directory; give a .keras or .h5 file, "
                            "or a factory as path/to/file.py:function.")
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise SourceProblem(ErrorKind.NOT_A_FILE, f"{source} is not a regular file (it is a "
                            f"{_file_kind(info.st_mode)}); give a .keras or .h5 model file.")
    if info.st_size == 0:
        raise SourceProblem(ErrorKind.EMPTY, f"{source} is an empty file (0 bytes), probably an "
                            "interrupted save or copy; re-save the model.")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise SourceProblem(ErrorKind.UNREADABLE, f"{source} cannot be read ({exc.strerror or exc}); "
                            "check its permissions.") from exc


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "named pipe"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))
    return next((name for test, name in kinds if test(mode)), "special file")


def _load_keras(path: Path, source: str, custom_objects, safe_mode: bool, weights: bool):
    """Load a ``.keras`` archive (or the directory ``save(zipped=False)`` writes).

    Without ``weights`` the model is rebuilt from config.json alone, but a truncated or
    incomplete archive is still refused: Keras itself would refuse it, and a gate must not pass a
    file that cannot be loaded.  Checksums are verified when the weights are read (a bit flip
    inside the weights does not change which variables learn, and checking it costs a full read).
    """
    import keras

    if path.is_dir():
        config = _parse_config(_read_config_file(path / "config.json", source), source)
    else:
        config = _read_keras_archive(path, source, verify_checksums=weights)
    _check_model_config(source, config)
    if safe_mode:
        _check_no_lambda_bytecode(source, config)
    _check_classes_known(source, config, custom_objects)
    try:
        with keras.saving.custom_object_scope(custom_objects), sequential_built_once():
            if weights:
                return keras.saving.load_model(path, custom_objects=custom_objects,
                                               compile=True, safe_mode=safe_mode)
            model = _model_from_config(config, custom_objects, safe_mode)
    except SourceProblem:
        raise
    except (Exception, MemoryError, RecursionError) as exc:  # Keras raises many types here
        raise _translate_load_error(source, exc) from exc
    if not path.is_dir():
        check_stored_shapes(model, path, source)
    return model


def _read_keras_archive(path: Path, source: str, *, verify_checksums: bool) -> Any:
    """Check the archive is whole (and its checksums, if asked) and return its config.json."""
    if not zipfile.is_zipfile(path):
        raise _not_a_zip(path, source)
    entries = _declared_zip_entries(path)
    if entries is not None and entries > MAX_MEMBERS:
        raise SourceProblem(ErrorKind.TOO_LARGE, f"{source} declares {entries} members; a Keras archive "
                            f"holds a handful (config, weights, assets), so this is refused before "
                            "its directory is read.")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "config.json" not in names:
                raise SourceProblem(ErrorKind.CORRUPT, f"{source} is a zip archive without config.json, "
                                    "so it is not a Keras model; save the model with "
                                    "model.save('model.keras').")
            _check_members(archive, source)
            config = _parse_config(_read_member(archive, "config.json", CONFIG_LIMIT, source),
                                   source)
            bad = archive.testzip() if verify_checksums else None
            if bad is not None:
                raise SourceProblem(ErrorKind.CORRUPT, f"{source} is a damaged .keras archive: {bad} "
                                    "inside it fails its checksum (a bad copy or a partial "
                                    "overwrite?); re-save or re-download the model.")
            _check_weights_entry(archive, names, source)
            if verify_checksums:  # the weights will be read: their declared size must fit
                _check_declared_weights(archive, source)
    except SourceProblem:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
            RuntimeError, NotImplementedError) as exc:  # RuntimeError: encrypted; NotImpl.: method
        raise SourceProblem(ErrorKind.CORRUPT, f"{source} is a damaged .keras archive "
                            f"({describe_exception(exc)}); re-save the model.") from exc
    return config


#: Largest config.json read: keras-hub's largest configs are a few hundred KB.
CONFIG_LIMIT = 32 * 2**20
#: A member inflating more than this many times its stored size, and past BOMB_FLOOR, is a
#: decompression bomb: weights are floats, which barely compress.
BOMB_RATIO = 100
BOMB_FLOOR = 64 * 2**20


#: Members a .keras archive may have: config, metadata, weights and a layer's asset files.
MAX_MEMBERS = 10_000


def _declared_zip_entries(path: Path) -> int | None:
    """The member count in the zip's end-of-central-directory record (0xFFFF: zip64, many)."""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - (22 + 65535)))
        tail = handle.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 12 > len(tail):
        return None
    count = int.from_bytes(tail[at + 10:at + 12], "little")
    return MAX_MEMBERS + 1 if count == 0xFFFF else count


def _check_members(archive: zipfile.ZipFile, source: str) -> None:
    """Refuse encrypted members and decompression bombs from the zip directory, before reading."""
    from gradcheck.budget import human

    for info in archive.infolist():
        if info.flag_bits & 0x1:
            raise SourceProblem(ErrorKind.CORRUPT, f"{source} is an encrypted zip archive ({info.filename} "
                                "needs a password), which Keras never writes; re-save the model.")
        expands = info.file_size > BOMB_RATIO * max(info.compress_size, 1)
        if info.file_size > BOMB_FLOOR and expands:
            raise SourceProblem(ErrorKind.ZIP_BOMB, f"{source} is a decompression bomb: its member "
                                f"{info.filename} declares {human(info.file_size)} packed into "
                                f"{human(info.compress_size)}; refused without reading it.")


def _read_member(archive: zipfile.ZipFile, name: str, limit: int, source: str) -> bytes:
    """A member's bytes, refused when it declares (or turns out) larger than ``limit``."""
    info = archive.getinfo(name)
    if info.file_size > limit:
        raise _too_large_config(source, name, info.file_size, limit)
    with archive.open(info) as member:
        raw = member.read(limit + 1)
    if len(raw) > limit:  # the directory lied about the size
        raise _too_large_config(source, name, len(raw), limit)
    return raw


def _read_config_file(path: Path, source: str) -> bytes:
    """config.json of a directory-form model: a regular file of bounded size, read with a cap."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise SourceProblem(ErrorKind.CORRUPT, f"{source}: config.json is not a regular file (a "
                                f"{_file_kind(info.st_mode)}); re-save the model.")
        if info.st_size > CONFIG_LIMIT:
            raise _too_large_config(source, "config.json", info.st_size, CONFIG_LIMIT)
        with path.open("rb") as handle:
            raw = handle.read(CONFIG_LIMIT + 1)
    except OSError as exc:
        raise SourceProblem(ErrorKind.UNREADABLE, f"{source}: config.json cannot be read "
                            f"({exc.strerror or exc}).") from exc
    if len(raw) > CONFIG_LIMIT:
        raise _too_large_config(source, "config.json", len(raw), CONFIG_LIMIT)
    return raw


def _too_large_config(source: str, name: str, size: int, limit: int) -> SourceProblem:
    from gradcheck.budget import human

    return SourceProblem(ErrorKind.TOO_LARGE, f"{source}: its {name} is {human(size)}, more than the "
                         f"{human(limit)} a model description needs; refused without reading it.")


def _parse_config(raw: bytes, source: str) -> Any:
    try:
        return json.loads(raw)
    except RecursionError as exc:
        raise SourceProblem(ErrorKind.CORRUPT, f"{source} has a config.json nested too deeply to be a "
                            "model description; the file is corrupt or crafted.") from exc
    except ValueError as exc:  # includes bytes that are not UTF-8
        raise SourceProblem(ErrorKind.CORRUPT, f"{source} has an invalid config.json "
                            f"({describe_exception(exc)}); the archive was edited or damaged, "
                            "re-save the model.") from exc


def _not_a_zip(path: Path, source: str) -> SourceProblem:
    with path.open("rb") as handle:
        head = handle.read(8)
    if head.startswith(b"PK\x03\x04"):
        return SourceProblem(ErrorKind.TRUNCATED, f"{source} is truncated: the .keras archive ends before "
                             "its table of contents (an interrupted download or save?); "
                             "re-download or re-save the model.")
    if head.startswith(_HDF5_SIGNATURE):
        return SourceProblem(ErrorKind.CORRUPT, f"{source} is an HDF5 file, not a .keras archive; rename "
                             "it to .h5 if it is a legacy model file.")
    return SourceProblem(ErrorKind.CORRUPT, f"{source} is not a Keras model file (a .keras file is a zip "
                         "archive, this is not); the file is corrupt or was saved in another "
                         "format.")


def _check_declared_weights(archive: zipfile.ZipFile, source: str) -> None:
    """The datasets of model.weights.h5, as declared (HDF5 metadata), fit the memory budget.

    A chunked dataset with no data written takes a few bytes on disk and any size in memory
    once read."""
    import h5py

    if "model.weights.h5" not in archive.namelist():
        return
    with open_weights_member(Path(archive.filename), archive) as member:
        if member is None:  # a large deflated member: Keras itself refuses bomb ratios
            return
        with h5py.File(member, "r") as weights:
            check_stored(declared_dataset_bytes(weights), f"{source}: its model.weights.h5")


@contextlib.contextmanager
def open_weights_member(path: Path, archive: zipfile.ZipFile, name: str = "model.weights.h5"):
    """The member as a seekable file for h5py, or None when reading its metadata costs too much.

    A stored member (Keras writes them so) is a contiguous slice of the archive, read in place:
    ``zipfile``'s own member file re-reads from the start on every backward seek, which made
    reading BERT-base's HDF5 metadata take 20 s.  A small deflated member is inflated into
    memory; a large one is not read at all.
    """
    import io

    info = archive.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:
        if info.file_size > BOMB_FLOOR:
            yield None
            return
        yield io.BytesIO(archive.read(info))
        return
    with path.open("rb") as handle:
        handle.seek(info.header_offset)
        header = handle.read(30)
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"no local header for {name}")
        start = (info.header_offset + 30 + int.from_bytes(header[26:28], "little")
                 + int.from_bytes(header[28:30], "little"))
        yield _Slice(handle, start, info.file_size)


class _Slice(io.BytesIO):
    """A read-only window ``[start, start + size)`` of an open binary file.

    A ``BytesIO`` only by type (Keras' ``H5IOStore`` accepts nothing else); every method h5py
    uses reads the file in place, so nothing of the member is held in memory.
    """

    def __init__(self, handle, start: int, size: int):
        super().__init__()
        self._handle, self._start, self._size, self._at = handle, start, size, 0

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = self._size - self._at
        buffer = bytearray(max(0, min(size, self._size - self._at)))
        return bytes(buffer[:self.readinto(buffer)])

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: self._size}[whence]
        self._at = max(0, base + offset)
        return self._at

    def tell(self) -> int:
        return self._at

    def readinto(self, buffer) -> int:
        count = max(0, min(len(buffer), self._size - self._at))
        if count == 0:
            return 0
        self._handle.seek(self._start + self._at)
        data = self._handle.read(count)
        buffer[:len(data)] = data
        self._at += len(data)
        return len(data)


def declared_dataset_bytes(group) -> int:
    """The bytes every dataset below an h5py group would take in memory, from metadata only."""
    import h5py

    total = 0

    def add(_, item):
        nonlocal total
        if isinstance(item, h5py.Dataset):
            total += int(item.size) * item.dtype.itemsize

    group.visititems(add)
    return total


def _check_weights_entry(archive: zipfile.ZipFile, names: set[str], source: str) -> None:
    """The archive holds a weights file, and an HDF5 one opens (truncation shows here)."""
    if not names.intersection(_WEIGHTS_ENTRIES):
        raise SourceProblem(ErrorKind.CORRUPT, f"{source} has a config.json but no model.weights.h5 "
                            "inside; the archive is incomplete, re-save the model.")
    if "model.weights.h5" not in names:
        return
    info = archive.getinfo("model.weights.h5")
    with archive.open(info) as member:
        head = member.read(64)
    declared = _hdf5_declared_size(head)
    if declared is not None:  # the superblock says how long the file is: no need to read it all
        if declared > info.file_size:
            raise SourceProblem(ErrorKind.CORRUPT, f"{source} is damaged: the model.weights.h5 inside it "
                                "is truncated; re-save the model.")
        return
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > BOMB_FLOOR:
        raise SourceProblem(ErrorKind.CORRUPT, f"{source}: the model.weights.h5 inside it has no HDF5 "
                            "superblock where Keras writes one; re-save the model.")
    import h5py

    try:  # an unusual superblock: let HDF5 itself look (bounded: stored, or small)
        with open_weights_member(Path(archive.filename), archive) as member, \
                h5py.File(member, "r"):
            pass
    except (OSError, ValueError) as exc:
        what = "is truncated" if "truncated" in str(exc) else "is not a valid HDF5 file"
        raise SourceProblem(ErrorKind.CORRUPT, f"{source} is damaged: the model.weights.h5 inside it "
                            f"{what}; re-save the model.") from exc


def _hdf5_declared_size(head: bytes) -> int | None:
    """Base + end-of-file address from an HDF5 superblock at offset 0, or None if unparsable.

    A truncated HDF5 file is shorter than its superblock declares; comparing the two finds it
    without reading the file (a zip member can only be read from its start).
    """
    if not head.startswith(_HDF5_SIGNATURE) or len(head) < 16:
        return None
    version = head[8]
    if version in (0, 1):
        size_of_offsets, start = head[13], 24 if version == 0 else 28
    elif version in (2, 3):
        size_of_offsets, start = head[9], 12
    else:
        return None
    if size_of_offsets not in (2, 4, 8) or len(head) < start + 3 * size_of_offsets:
        return None

    def address(index: int) -> int:
        at = start + index * size_of_offsets
        return int.from_bytes(head[at:at + size_of_offsets], "little")

    return address(0) + address(2)  # base address + end-of-file address


def _check_model_config(source: str, config: Any) -> None:
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise SourceProblem(ErrorKind.CORRUPT, f"{source} has a config.json that does not describe a "
                            "Keras model (no class_name at its top level); re-save the model.")


def _check_no_lambda_bytecode(source: str, config: Any) -> None:
    """Refuse, by layer name, a Lambda holding Python bytecode (safe mode; Keras does too)."""
    for node in _walk(config):
        if node.get("class_name") != "Lambda" or not isinstance(node.get("config"), dict):
            continue
        layer = node["config"]
        function = layer.get("function")
        bytecode = (isinstance(function, dict) and function.get("class_name") == "__lambda__"
                    or layer.get("function_type") == "lambda")
        if bytecode:
            raise SourceProblem(ErrorKind.UNSAFE_LAMBDA, f"{source} contains the Lambda layer "
                                f"'{layer.get('name', '?')}', whose Python bytecode safe mode "
                                "refuses to load because it could run arbitrary code; if you trust "
                                "the file, pass --unsafe.")


def _model_from_config(config: dict, custom_objects, safe_mode: bool):
    """Build the architecture (and compile it for its loss) without reading the stored weights."""
    import keras

    with _cheap_fresh_weights():
        model = keras.saving.deserialize_keras_object(config, custom_objects=custom_objects,
                                                      safe_mode=safe_mode)
    compile_config = config.get("compile_config")
    if compile_config and hasattr(model, "compile_from_config"):
        _compile_for_loss(model, compile_config)
    return model


@contextlib.contextmanager
def sequential_built_once():
    """Build each deserialized ``Sequential`` once, after all its layers are added.

    ``Sequential.from_config`` calls ``add`` per layer, and each ``add`` rebuilds the whole
    stack symbolically: n layers cost n² layer calls (a 400-layer model took 40 s to load, a
    1000-layer one minutes).  Adding without rebuilding and building once at the end gives the
    same model, with the same layers built in the same order.
    """
    from keras.src.models.sequential import Sequential

    original_add = Sequential.add
    original_from_config = Sequential.__dict__["from_config"]

    def add(self, layer, rebuild=True):
        return original_add(self, layer, rebuild=False)

    def from_config(cls, config, custom_objects=None):
        model = original_from_config.__func__(cls, config, custom_objects=custom_objects)
        if model._functional is None and model._layers:
            model._maybe_rebuild()
        return model

    Sequential.add = add
    Sequential.from_config = classmethod(from_config)
    try:
        yield
    finally:
        Sequential.add = original_add
        Sequential.from_config = original_from_config


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
        with zipfile.ZipFile(path) as archive:
            if "model.weights.h5" not in archive.namelist():
                return
            with open_weights_member(path, archive) as member:
                if member is None:  # seeking in a large deflated member re-inflates it
                    return
                store = saving_lib.H5IOStore(member, mode="r")
                try:
                    with _shapes_compared_not_assigned(), warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # optimizer-slot notices
                        saving_lib._load_state(model, weights_store=store, assets_store=None,
                                               inner_path="", visited_saveables=set())
                finally:
                    store.close()
    except _ShapeMismatch as mismatch:
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


class _ShapeMismatch(Exception):
    """A variable met a stored dataset of another shape."""


@contextlib.contextmanager
def _shapes_compared_not_assigned():
    """``Variable.assign(dataset)`` compares shapes instead of reading the dataset."""
    import h5py
    from keras.src.backend import Variable
    from keras.src.saving import saving_lib

    original = Variable.assign
    original_item = saving_lib.H5IOStore.__getitem__

    def dataset(self, key):  # the dataset itself, not np.array(dataset): metadata only
        return saving_lib.safe_get_h5_dataset(self._h5_entry_group, key)

    def assign(self, value):
        if not isinstance(value, h5py.Dataset):
            return original(self, value)
        if tuple(value.shape) != tuple(self.shape):
            raise _ShapeMismatch(f"variable '{self.path}': rebuilt {tuple(self.shape)}, stored "
                                 f"{tuple(value.shape)}")
        return self

    Variable.assign = assign
    saving_lib.H5IOStore.__getitem__ = dataset
    try:
        yield
    finally:
        Variable.assign = original
        saving_lib.H5IOStore.__getitem__ = original_item


#: The standard deviation of a normal truncated at ±2σ, as a fraction of σ.
_TRUNCATED_NORMAL_STD = 0.8796256610342398


@contextlib.contextmanager
def _cheap_fresh_weights():
    """Draw fresh truncated-normal weights as a uniform of the same mean and variance.

    Only for weights that replace the stored ones: the verdicts need random weights of the
    right scale, not Keras' exact draw, and TensorFlow's truncated normal is the bulk of
    rebuilding a large model (about half of BERT-base's 3.8 s; a uniform takes a fraction).
    """
    from keras.src.backend.tensorflow import random as backend_random

    original = backend_random.truncated_normal

    def uniform_like_truncated_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
        half_width = math.sqrt(3.0) * _TRUNCATED_NORMAL_STD * stddev
        return backend_random.uniform(shape, minval=mean - half_width, maxval=mean + half_width,
                                      dtype=dtype, seed=seed)

    backend_random.truncated_normal = uniform_like_truncated_normal
    try:
        yield
    finally:
        backend_random.truncated_normal = original


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


def _load_h5(path: Path, source: str, custom_objects, safe_mode: bool):
    import h5py
    import keras

    try:
        with h5py.File(path, "r") as handle:
            if "model_config" in handle.attrs:
                size = handle.attrs.get_id("model_config").get_storage_size()
                if size > CONFIG_LIMIT:
                    raise _too_large_config(source, "model_config attribute", size, CONFIG_LIMIT)
            raw_config = handle.attrs.get("model_config")
            check_stored(declared_dataset_bytes(handle), source)  # legacy files are read whole
            has_weights = ("model_weights" in handle or "layer_names" in handle.attrs
                           or "vars" in handle or "layers" in handle)  # Keras 2 / Keras 3 layouts
    except OSError as exc:
        if "truncated" in str(exc):
            raise SourceProblem(ErrorKind.TRUNCATED, f"{source} is truncated (an interrupted download or "
                                "save?); re-download or re-save the model.") from exc
        raise SourceProblem(ErrorKind.CORRUPT, f"{source} is not a valid HDF5 file; the file is corrupt "
                            "or was saved in another format.") from exc
    if raw_config is None:
        what = "weights but no model architecture" if has_weights else "no Keras model"
        raise SourceProblem(ErrorKind.WEIGHTS_ONLY, f"{source} holds {what} (saved with save_weights?); "
                            "save the whole model with model.save(), or give a factory file.py:fn "
                            "that builds it.")
    if safe_mode:
        try:
            config = json.loads(raw_config)
        except (ValueError, TypeError):
            config = None  # Keras will say what is wrong with it
        _check_no_lambda_bytecode(source, config)
    try:
        with keras.saving.custom_object_scope(custom_objects), sequential_built_once():
            return keras.saving.load_model(path, custom_objects=custom_objects, compile=True,
                                           safe_mode=safe_mode)
    except SourceProblem:
        raise
    except Exception as exc:
        raise _translate_load_error(source, exc) from exc


def _check_classes_known(source: str, config: Any, custom_objects) -> None:
    """Refuse early, by name, a class nobody can provide (Keras' own message is a wall)."""
    import keras

    for node in _walk(config):
        class_name = node.get("class_name")
        if not isinstance(class_name, str) or "config" not in node or class_name.startswith("__"):
            continue
        registered = node.get("registered_name") or class_name
        if registered in custom_objects or class_name in custom_objects:
            continue
        if keras.saving.get_registered_object(registered) is not None:
            continue
        module = node.get("module") or ""
        if not isinstance(module, str):
            module = ""
        if module and _keras_module_has(module, class_name):
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
_KERAS_PACKAGES = ("keras_hub", "keras_nlp", "keras_cv", "tf_keras")


def _keras_has(class_name: str) -> bool:
    """Is ``class_name`` a public Keras class (what Keras falls back to for legacy configs)?"""
    import keras

    if class_name in ("Functional", "Sequential", "Model"):
        return True
    namespaces = (keras.layers, keras.losses, keras.metrics, keras.optimizers,
                  keras.optimizers.schedules, keras.initializers, keras.regularizers,
                  keras.constraints, keras.dtype_policies)
    return any(inspect.isclass(getattr(space, class_name, None)) for space in namespaces)


def _keras_module_has(module: str, name: str) -> bool:
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


def _translate_load_error(source: str, exc: BaseException) -> SourceProblem:
    text = str(exc)
    if is_out_of_memory(exc):
        return SourceProblem(ErrorKind.OUT_OF_MEMORY, f"{source}: building the model ran out of memory "
                             f"({describe_exception(exc)}); lower --max-memory so gradcheck "
                             "refuses such a model up front, or run it on a larger machine.")
    refused = re.search(r"Requested the (?:deserialization|loading) of (.*?)\.(?:\s|$)", text)
    if refused and "lambda" not in refused.group(1).lower():
        return SourceProblem(ErrorKind.UNSAFE_CONTENT, f"{source}: Keras safe mode refused to load it: "
                             f"requested the {refused.group(0)[len('Requested the '):].rstrip('.')}"
                             ", which could run code or read files outside the model; if you "
                             "trust the file, pass --unsafe.")
    if "safe_mode" in text or "lambda" in text.lower() and "unsafe" in text.lower():
        return SourceProblem(ErrorKind.UNSAFE_LAMBDA, f"{source} contains a Lambda layer with Python "
                             "bytecode, which Keras safe mode refuses to load because it can run "
                             "arbitrary code; if you trust the file, pass --unsafe.")
    match = (re.search(r"Could not locate (?:class|function) '([^']+)'", text)
             or re.search(r"Unknown (?:layer|object|class|loss|metric)[a-z ]*: '([^']+)'", text))
    if match:
        return SourceProblem(ErrorKind.CUSTOM_OBJECT, f"{source} uses the class '{match.group(1)}', which "
                             "is not registered; pass the file or module that defines it with "
                             "--custom-objects PATH_OR_MODULE.")
    match = re.search(r"Could not deserialize class '([^']+)' because its parent module (\S+) "
                      "cannot be imported", text)
    if match:
        return SourceProblem(ErrorKind.KERAS_VERSION, f"{source} uses the class '{match.group(1)}' from "
                             f"the module {match.group(2)}, which does not exist here; the model "
                             "was probably saved with another Keras version, so load it with that "
                             "version or re-save it with this one.")
    if "truncated file" in text:
        return SourceProblem(ErrorKind.TRUNCATED, f"{source} is truncated (an interrupted download or "
                             "save?); re-download or re-save the model.")
    return SourceProblem(ErrorKind.LOAD_FAILED, f"{source} could not be loaded by Keras "
                         f"({describe_exception(exc)}); check that it was saved by a compatible "
                         "Keras version, or give a factory file.py:fn that builds the model.")


def import_function(spec: str, *, what: str, kind: str):
    """The function an option such as ``--loss`` or ``--data`` names as ``module:fn`` or
    ``file.py:fn``; a ``SourceProblem`` of ``kind`` when it is not one or does not exist."""
    factory = parse_factory(spec)
    if factory is None:
        raise SourceProblem(kind, f"{what} {spec} is not module:function or file.py:function.")
    module = import_target(factory.target, is_file=factory.is_file, what=what)
    fn = getattr(module, factory.function, None)
    if not callable(fn):
        raise SourceProblem(kind, f"{what} {spec}: {factory.target} defines no function "
                            f"'{factory.function}'.")
    return fn


def import_target(target: str, *, is_file: bool, what: str):
    """Import a ``.py`` file or a module for ``what`` (``factory``, ``--loss`` …), or say why not.

    Whatever the user's code prints goes to stderr, so that it cannot corrupt a JSON report, and
    no bytecode cache is written next to the user's files.
    """
    written = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # no __pycache__ next to the user's files
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return _import_file(target, what) if is_file else _import_module(target, what)
    finally:
        sys.dont_write_bytecode = written


def _import_file(target: str, what: str):
    path = Path(target)
    if not path.is_file():
        raise SourceProblem(ErrorKind.MISSING, f"the {what} file {target} does not exist; check the path.")
    name = "gradcheck_user_" + re.sub(r"\W", "_", str(path.resolve()))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.resolve().parent))
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        del sys.modules[name]
        raise SourceProblem(ErrorKind.IMPORT_FAILED, f"the {what} file {target} failed to import "
                            f"({describe_exception(exc)}); fix the error, or run python {target} "
                            "to see it in full.") from exc
    finally:
        sys.path.remove(str(path.resolve().parent))
    return module


def _import_module(target: str, what: str):
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and (target == exc.name or target.startswith(exc.name + ".")):
            raise SourceProblem(ErrorKind.MISSING, f"the {what} module {target} cannot be found (no module "
                                f"named '{exc.name}'); is it installed, or on PYTHONPATH?") from exc
        raise SourceProblem(ErrorKind.IMPORT_FAILED, f"the {what} module {target} failed to import: it "
                            f"needs the module '{exc.name}', which is not installed.") from exc
    except (Exception, SystemExit) as exc:
        raise SourceProblem(ErrorKind.IMPORT_FAILED, f"the {what} module {target} failed to import "
                            f"({describe_exception(exc)}).") from exc


def _call_factory(source: str, spec: FactorySpec):
    import keras

    module = import_target(spec.target, is_file=spec.is_file, what="factory")
    factory = getattr(module, spec.function, None)
    if factory is None:
        raise SourceProblem(ErrorKind.MISSING, f"{source}: {spec.target} defines no function "
                            f"'{spec.function}'{_did_you_mean(module, spec.function)}.")
    if not callable(factory):
        raise SourceProblem(ErrorKind.NOT_CALLABLE, f"{source}: '{spec.function}' is a "
                            f"{type(factory).__name__}, not a function returning a model.")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            model = factory()
    except (Exception, SystemExit) as exc:
        raise SourceProblem(ErrorKind.FACTORY_FAILED, f"{source}: the factory raised "
                            f"{describe_exception(exc)}") from exc
    if not isinstance(model, keras.layers.Layer):
        hint = " (a missing return statement?)" if model is None else ""
        raise SourceProblem(ErrorKind.NOT_A_MODEL, f"{source}: the factory returned "
                            f"{'None' if model is None else 'a ' + type(model).__name__}{hint}, "
                            "not a keras.Model or keras.Layer; make it return the model.")
    return model


def _did_you_mean(module, name: str) -> str:
    candidates = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""

