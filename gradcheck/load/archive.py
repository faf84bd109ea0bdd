"""Refuse a model file before Keras reads it: the path, the zip archive and the HDF5 metadata.

No Keras here (h5py only): every check reads declared sizes and headers, never the weights, and
refuses before anything large is read or allocated.  Input files are only opened for reading.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

from gradcheck.budget import check_stored, human
from gradcheck.load.members import file_kind
from gradcheck.problems import ErrorKind, SourceProblem, describe_exception

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


WEIGHTS_ENTRIES = ("model.weights.h5", "model.weights.npz")  #: what Keras 3 reads weights from


#: Largest config.json read: keras-hub's largest configs are a few hundred KB.
CONFIG_LIMIT = 32 * 2**20


#: A member inflating more than this many times its stored size, and past BOMB_FLOOR, is a
#: decompression bomb: weights are floats, which barely compress.
BOMB_RATIO = 100


BOMB_FLOOR = 64 * 2**20


#: Members a .keras archive may have: config, metadata, weights and a layer's asset files.
MAX_MEMBERS = 10_000


def check_readable_file(path: Path, source: str) -> None:
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
                            f"{file_kind(info.st_mode)}); give a .keras or .h5 model file.")
    if info.st_size == 0:
        raise SourceProblem(ErrorKind.EMPTY, f"{source} is an empty file (0 bytes), probably an "
                            "interrupted save or copy; re-save the model.")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise SourceProblem(ErrorKind.UNREADABLE, f"{source} cannot be read ({exc.strerror or exc}); "
                            "check its permissions.") from exc


def read_keras_archive(path: Path, source: str, *, verify_checksums: bool) -> Any:
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
            config = parse_config(_read_member(archive, "config.json", CONFIG_LIMIT, source),
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
        raise too_large_config(source, name, info.file_size, limit)
    with archive.open(info) as member:
        raw = member.read(limit + 1)
    if len(raw) > limit:  # the directory lied about the size
        raise too_large_config(source, name, len(raw), limit)
    return raw


def read_config_file(path: Path, source: str) -> bytes:
    """config.json of a directory-form model: a regular file of bounded size, read with a cap."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise SourceProblem(ErrorKind.CORRUPT, f"{source}: config.json is not a regular file (a "
                                f"{file_kind(info.st_mode)}); re-save the model.")
        if info.st_size > CONFIG_LIMIT:
            raise too_large_config(source, "config.json", info.st_size, CONFIG_LIMIT)
        with path.open("rb") as handle:
            raw = handle.read(CONFIG_LIMIT + 1)
    except OSError as exc:
        raise SourceProblem(ErrorKind.UNREADABLE, f"{source}: config.json cannot be read "
                            f"({exc.strerror or exc}).") from exc
    if len(raw) > CONFIG_LIMIT:
        raise too_large_config(source, "config.json", len(raw), CONFIG_LIMIT)
    return raw


def too_large_config(source: str, name: str, size: int, limit: int) -> SourceProblem:

    return SourceProblem(ErrorKind.TOO_LARGE, f"{source}: its {name} is {human(size)}, more than the "
                         f"{human(limit)} a model description needs; refused without reading it.")


def parse_config(raw: bytes, source: str) -> Any:
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
    if head.startswith(HDF5_SIGNATURE):
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
            check_stored(declared_dataset_bytes(weights, source),
                         f"{source}: its model.weights.h5")


def check_declared_weights_file(path: Path, source: str) -> None:
    """The datasets of a directory model's model.weights.h5, as declared, fit the budget."""
    import h5py

    if not path.is_file():
        return  # npz, or none: Keras says so
    try:
        with h5py.File(path, "r") as weights:
            check_stored(declared_dataset_bytes(weights, source),
                         f"{source}: its model.weights.h5")
    except OSError as exc:
        raise SourceProblem(ErrorKind.CORRUPT, f"{source}: its model.weights.h5 is not a valid HDF5 "
                            f"file ({describe_exception(exc)}); re-save the model.") from exc


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


def declared_dataset_bytes(group, source: str) -> int:
    """The bytes every dataset below an h5py group would take in memory, from metadata only.

    A dataset of variable-length values (strings, sequences) is refused: a weights file holds
    numbers, and such a dataset's size is not in its metadata — a million references to one heap
    object compress to nothing on disk and expand a million times when read."""
    import h5py

    total = 0

    def add(name, item):
        nonlocal total
        if isinstance(item, h5py.Dataset):
            dtype = item.dtype
            if h5py.check_vlen_dtype(dtype) is not None or dtype.kind == "O" or (
                    h5py.check_string_dtype(dtype) is not None
                    and h5py.check_string_dtype(dtype).length is None):
                raise SourceProblem(ErrorKind.CORRUPT, f"{source}: its weights dataset {name!r} "
                                    "holds variable-length values, which Keras never writes and "
                                    "which can expand without bound when read; refused without "
                                    "reading it.")
            total += int(item.size) * dtype.itemsize

    group.visititems(add)
    return total


def _check_weights_entry(archive: zipfile.ZipFile, names: set[str], source: str) -> None:
    """The archive holds a weights file, and an HDF5 one opens (truncation shows here)."""
    if not names.intersection(WEIGHTS_ENTRIES):
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
    if not head.startswith(HDF5_SIGNATURE) or len(head) < 16:
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


def check_model_config(source: str, config: Any) -> None:
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise SourceProblem(ErrorKind.CORRUPT, f"{source} has a config.json that does not describe a "
                            "Keras model (no class_name at its top level); re-save the model.")


def read_h5_configs(path: Path, source: str) -> tuple[Any, Any]:
    """The ``model_config`` and ``training_config`` of a legacy ``.h5`` model (parsed, or None
    if absent or not JSON), after checking every attribute by its real length
    (``h5meta.check_attributes``) and the declared size of every dataset (legacy files are read
    whole)."""
    import h5py

    from gradcheck.load.h5meta import check_attributes

    try:
        with h5py.File(path, "r") as handle:
            check_attributes(handle, path, source, CONFIG_LIMIT)
            raw_config = handle.attrs.get("model_config")
            raw_training = handle.attrs.get("training_config")
            check_stored(declared_dataset_bytes(handle, source), source)
            has_weights = ("model_weights" in handle or "layer_names" in handle.attrs
                           or "vars" in handle or "layers" in handle)  # Keras 2 / Keras 3 layouts
    except OSError as exc:
        if "truncated" in str(exc):
            raise SourceProblem(ErrorKind.TRUNCATED, f"{source} is truncated (an interrupted "
                                "download or save?); re-download or re-save the model.") from exc
        raise SourceProblem(ErrorKind.CORRUPT, f"{source} is not a valid HDF5 file; the file is "
                            "corrupt or was saved in another format.") from exc
    if raw_config is None:
        what = "weights but no model architecture" if has_weights else "no Keras model"
        raise SourceProblem(ErrorKind.WEIGHTS_ONLY, f"{source} holds {what} (saved with "
                            "save_weights?); save the whole model with model.save(), or give a "
                            "factory file.py:fn that builds it.")
    return _json_or_none(raw_config), _json_or_none(raw_training)


def _json_or_none(raw: Any) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, TypeError, RecursionError):
        return None  # Keras will say what is wrong with it
