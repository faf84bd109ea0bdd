"""Every file of a ``.keras`` model besides config.json, checked before anything opens it.

A directory-form model (``model.save(path, zipped=False)``) is a folder that Keras reads file
by file: ``model.weights.h5`` with h5py, each layer's ``assets/`` files with a plain ``open()``
and ``read()``.  A symlink there to ``/dev/zero`` is read until memory runs out, a named pipe
blocks forever, and a symlink to ``~/.ssh/id_rsa`` reads a file that is not the model's.  So
every entry must be a directory or a regular file, a symlink only to a regular file inside the
model's own folder, and the files Keras reads whole (the assets) are bounded in total.

A zip archive's ``assets/`` members are extracted before a layer can read them, so their
declared total is bounded the same way, and each is copied with a cap (a zip's directory can
lie).  Nothing here imports Keras; nothing is opened but the archive itself.
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path, PurePosixPath

from gradcheck.budget import human
from gradcheck.problems import ErrorKind, SourceProblem

#: Most bytes of assets a model may have: vocabularies and tokenizer files take a few MiB
#: (BERT's vocabulary 0.2 MiB, a SentencePiece model a few MiB).  Layers read them whole.
ASSETS_LIMIT = 256 * 2**20

#: Entries a directory-form model may have (the zip archive's limit, ``archive.MAX_MEMBERS``).
MAX_ENTRIES = 10_000

ASSETS = "assets"


def check_model_directory(path: Path, source: str) -> None:
    """Every entry below ``path`` is a directory or a regular file (a symlink only to a regular
    file inside ``path``), there are at most ``MAX_ENTRIES``, and the assets fit ``ASSETS_LIMIT``."""
    root = Path(os.path.realpath(path))
    assets, count, stack = 0, 0, [path]
    while stack:
        folder = stack.pop()
        for entry in _entries(folder, path, source):
            count += 1
            if count > MAX_ENTRIES:
                raise SourceProblem(ErrorKind.TOO_LARGE, f"{source} holds more than {MAX_ENTRIES} "
                                    "files; a Keras model folder holds a handful (config, weights, "
                                    "assets), so it is refused before they are read.")
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
                continue
            size = _member_size(Path(entry.path), path, root, source)
            if _inside(Path(entry.path), path).startswith(f"{ASSETS}/"):
                assets += size
    check_assets_total(assets, source)


def _entries(folder: Path, path: Path, source: str):
    """The entries of one folder, read one at a time (a crafted folder may hold millions)."""
    try:
        with os.scandir(folder) as entries:
            yield from entries
    except OSError as exc:
        raise SourceProblem(ErrorKind.UNREADABLE, f"{source}: {_inside(folder, path)} cannot be "
                            f"read ({exc.strerror or exc}); check its permissions.") from exc


def _member_size(member: Path, path: Path, root: Path, source: str) -> int:
    """The size of a file of the model, refusing anything but a regular file of the model."""
    name = _inside(member, path)
    info = member.lstat()
    if stat.S_ISLNK(info.st_mode):
        target = Path(os.path.realpath(member))
        if target != root and root not in target.parents:
            raise SourceProblem(ErrorKind.UNSAFE_CONTENT, f"{source}: its {name} is a symlink to "
                                f"{target}, outside the model's folder, so loading it would read a "
                                "file that is not part of the model; refused without following it. "
                                "Copy the file into the folder.")
        try:
            info = target.stat()
        except OSError as exc:
            raise SourceProblem(ErrorKind.CORRUPT, f"{source}: its {name} is a broken symlink "
                                f"({exc.strerror or exc}); re-save the model.") from exc
    if not stat.S_ISREG(info.st_mode):
        raise SourceProblem(ErrorKind.NOT_A_FILE, f"{source}: its {name} is a {file_kind(info.st_mode)}, "
                            "not a regular file, so reading it could block or never end; refused "
                            "without opening it. Re-save the model.")
    return info.st_size


def check_assets_total(size: int, source: str, *, packed: str = "") -> None:
    """Refuse assets (``size`` bytes, as declared) that no model needs, before extracting or
    reading them."""
    if size > ASSETS_LIMIT:
        raise SourceProblem(ErrorKind.TOO_LARGE, f"{source}: its assets/ files declare {human(size)}"
                            f"{packed}, more than the {human(ASSETS_LIMIT)} a model's vocabularies "
                            "and tokenizer files take; refused before extracting or reading them.")


def archive_assets(archive: zipfile.ZipFile, source: str) -> list[zipfile.ZipInfo]:
    """The ``assets/`` members of an archive, their names safe to extract and their declared
    total within ``ASSETS_LIMIT``."""
    members = [info for info in archive.infolist() if info.filename.startswith(f"{ASSETS}/")]
    for info in members:
        name = info.filename
        parts = PurePosixPath(name).parts
        if "\\" in name or "\0" in name or ".." in parts or name.startswith("/"):
            raise SourceProblem(ErrorKind.CORRUPT, f"{source}: its member {name!r} names a path outside "
                                "the archive's assets/ folder, which Keras never writes; refused "
                                "before extracting anything.")
    packed = sum(info.compress_size for info in members)
    check_assets_total(sum(info.file_size for info in members), source,
                       packed=f" ({human(packed)} packed)")
    return members


def extract_assets(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], into: Path) -> None:
    """Copy each member under ``into``, never more than it declared (a lying directory ends
    the copy as a damaged archive)."""
    for info in members:
        target = into / info.filename
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        left = info.file_size
        with archive.open(info) as member, target.open("xb") as out:
            while chunk := member.read(min(left + 1, 2**20)):
                left -= len(chunk)
                if left < 0:
                    raise zipfile.BadZipFile(f"{info.filename} is longer than its declared size")
                out.write(chunk)


def file_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "named pipe"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "directory"))
    return next((name for test, name in kinds if test(mode)), "special file")


def _inside(member: Path, path: Path) -> str:
    relative = os.path.relpath(member, path)
    return "the model's folder" if relative == "." else relative.replace(os.sep, "/")
