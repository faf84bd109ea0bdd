"""The real size of an HDF5 file's attributes, read from the object headers without reading them.

A variable-length string attribute (what h5py writes for a ``str``: Keras' ``model_config``)
stores only a 16-byte reference to HDF5's global heap, and that is what HDF5 reports as its
storage size; reading it allocates whatever length the heap object declares.  Its real length
is the first field of the reference, in the attribute message of the object header, so this
module parses the object headers (format versions 1 and 2, with continuation blocks, per the
HDF5 File Format Specification) to find each variable-length attribute's message and sums the
lengths it declares, and reads the declared size of each global heap collection they point into
(HDF5 reads a collection whole).  Only metadata is read, a few hundred bytes per object.

An attribute kept in dense storage (a fractal heap, which h5py never writes for a handful of
attributes) is not parsed: its length is unknown, which the caller treats as too large unless
the file itself is small enough.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ATTRIBUTE, CONTINUATION = 0x000C, 0x0010
#: Most object header chunks followed per object (a crafted file may chain them in a loop).
MAX_CHUNKS = 64
#: Largest object header chunk read (h5py's are a few hundred bytes; the format allows 4 GiB).
MAX_CHUNK = 1 << 20


@dataclass
class Attributes:
    """What the variable-length attributes of one object declare."""

    lengths: dict[str, int] = field(default_factory=dict)  #: elements each attribute declares
    collections: dict[str, set[int]] = field(default_factory=dict)  #: heap collections it uses


class Layout:
    """Offsets and lengths of one HDF5 file, read through a binary file handle."""

    def __init__(self, handle, *, base: int, offset_size: int, length_size: int):
        self.handle, self.base = handle, base
        self.offset_size, self.length_size = offset_size, length_size

    def read(self, address: int, size: int) -> bytes:
        self.handle.seek(self.base + address)
        return self.handle.read(size)

    def number(self, data: bytes, at: int, size: int) -> int:
        if at + size > len(data):
            raise ValueError("an HDF5 structure ends early")
        return int.from_bytes(data[at:at + size], "little")

    def collection_size(self, address: int) -> int:
        """The declared size of the global heap collection at ``address`` ("GCOL")."""
        head = self.read(address, 8 + self.length_size)
        if head[:4] != b"GCOL":
            raise ValueError("a variable-length value points outside any global heap")
        return self.number(head, 8, self.length_size)


def variable_attributes(layout: Layout, header: int, wanted: dict[str, int]) -> Attributes:
    """The lengths of the attributes named in ``wanted`` (name -> element count) in the object
    header at ``header``, each a variable-length string or sequence of bytes."""
    found = Attributes()
    for message in _messages(layout, header):
        name, data = _attribute_data(message)
        if name in wanted and name not in found.lengths:
            record = 4 + layout.offset_size + 4  # length, heap collection address, object index
            total, collections = 0, set()
            for index in range(wanted[name]):
                at = index * record
                length = layout.number(data, at, 4)
                total += length
                if length:
                    collections.add(layout.number(data, at + 4, layout.offset_size))
            found.lengths[name], found.collections[name] = total, collections
    return found


def _messages(layout: Layout, header: int):
    """The (type, data) of every message of an object header, continuation blocks included."""
    first = layout.read(header, 16)
    if first[:4] == b"OHDR":
        yield from _messages_v2(layout, header)
        return
    if not first or first[0] != 1:
        raise ValueError(f"unknown object header version at {header}")
    chunks = [(header + 16, layout.number(first, 8, 4))]
    seen = 0
    while chunks and seen < MAX_CHUNKS:
        address, size = chunks.pop(0)
        seen += 1
        data = layout.read(address, min(size, MAX_CHUNK))
        at = 0
        while at + 8 <= len(data):
            kind, length = layout.number(data, at, 2), layout.number(data, at + 2, 2)
            body = data[at + 8:at + 8 + length]
            if kind == CONTINUATION:
                chunks.append(_continuation(layout, body))
            yield kind, body
            at += 8 + length


def _messages_v2(layout: Layout, header: int):
    head = layout.read(header, 6 + 16 + 4 + 8)
    flags, at = head[5], 6
    at += 16 if flags & 0x20 else 0  # access, modification, change and birth times
    at += 4 if flags & 0x10 else 0  # attribute storage phase change values
    width = 1 << (flags & 0x03)
    chunks = [(header + at + width, layout.number(head, at, width), 0)]
    seen = 0
    while chunks and seen < MAX_CHUNKS:
        address, size, skip = chunks.pop(0)
        seen += 1
        data = layout.read(address, min(size, MAX_CHUNK))
        at, prefix = skip, 6 if flags & 0x04 else 4  # creation order tracked: 2 more bytes
        while at + prefix <= len(data) - (4 if skip else 0):
            kind, length = data[at], layout.number(data, at + 1, 2)
            body = data[at + prefix:at + prefix + length]
            if kind == CONTINUATION:
                address_, length_ = _continuation(layout, body)
                chunks.append((address_, length_, 4))  # "OCHK", then messages, then a checksum
            yield kind, body
            at += prefix + length


def _continuation(layout: Layout, body: bytes) -> tuple[int, int]:
    return (layout.number(body, 0, layout.offset_size),
            layout.number(body, layout.offset_size, layout.length_size))


def _attribute_data(message: tuple[int, bytes]) -> tuple[str | None, bytes]:
    """The name and raw data of an attribute message, or (None, b"") for another message."""
    kind, body = message
    if kind != ATTRIBUTE or len(body) < 8:
        return None, b""
    version = body[0]
    name_size, type_size, space_size = (int.from_bytes(body[i:i + 2], "little") for i in (2, 4, 6))
    if version == 1:
        pad = lambda n: (n + 7) // 8 * 8  # noqa: E731  (version 1 pads each field to 8 bytes)
        at = 8
        name = body[at:at + name_size]
        at += pad(name_size) + pad(type_size) + pad(space_size)
    elif version in (2, 3):
        at = 8 if version == 2 else 9  # version 3 adds the name's character set
        name = body[at:at + name_size]
        at += name_size + type_size + space_size
    else:
        return None, b""
    return name.rstrip(b"\0").decode("utf-8", "replace"), body[at:]


#: Most bytes all attributes of a legacy .h5 may hold together (each: ``archive.CONFIG_LIMIT``).
ATTRIBUTES_LIMIT = 128 * 2**20
#: Largest global heap collection a variable-length attribute may point into: HDF5 reads a
#: collection whole, and one holds a config of ``CONFIG_LIMIT`` with a little to spare.
COLLECTION_SLACK = 2**20


def check_attributes(handle, path, source: str, limit: int) -> None:
    """Every attribute of an open ``h5py.File`` costs at most ``limit`` bytes to read, all of
    them at most ``ATTRIBUTES_LIMIT``, measured by their real length before any is read."""
    import h5py

    from gradcheck.budget import human
    from gradcheck.problems import ErrorKind, SourceProblem

    objects = [handle]
    handle.visititems(lambda _, item: objects.append(item))
    small_file = path.stat().st_size <= limit  # a small file bounds what it holds
    total = 0
    with open(path, "rb") as raw:
        plist = handle.id.get_create_plist()
        offset_size, length_size = plist.get_sizes()
        layout = Layout(raw, base=plist.get_userblock(), offset_size=offset_size,
                        length_size=length_size)
        for item in objects:
            where = "" if item.name == "/" else f" of {item.name}"
            for name, size in _attribute_costs(item, layout, h5py, source).items():
                if size is None and small_file:
                    continue
                if size is None:
                    raise SourceProblem(ErrorKind.TOO_LARGE, f"{source}: its attribute {name!r}{where} "
                                        "is kept where its length cannot be checked without "
                                        "reading it (HDF5 dense attribute storage, which Keras "
                                        "never writes); re-save the model.")
                total += size
                if size > limit or total > ATTRIBUTES_LIMIT:
                    raise SourceProblem(ErrorKind.TOO_LARGE, f"{source}: its {name} attribute{where} "
                                        f"takes {human(size)} to read, more than the "
                                        f"{human(limit)} a model description needs; refused "
                                        "without reading it.")


def _attribute_costs(item, layout: Layout, h5py, source: str) -> dict[str, int | None]:
    """Bytes reading each attribute of one object costs (None: cannot be told)."""
    from gradcheck.problems import ErrorKind, SourceProblem

    costs: dict[str, int | None] = {}
    variable: dict[str, tuple[int, int]] = {}  # name -> (elements, bytes per unit of length)
    for name in item.attrs:
        attribute = item.attrs.get_id(name)
        kind = attribute.get_type()
        count = 1
        for dim in attribute.shape or ():
            count *= dim
        if kind.get_class() == h5py.h5t.STRING and kind.is_variable_str():
            variable[name] = (count, 1)
        elif kind.get_class() == h5py.h5t.VLEN:
            variable[name] = (count, max(1, kind.get_super().get_size()))
        else:
            try:
                costs[name] = attribute.get_storage_size()
            except RuntimeError:  # h5py raises for an empty attribute (HDF5 returns 0)
                costs[name] = 0
    if not variable:
        return costs
    try:
        found = variable_attributes(layout, h5py.h5o.get_info(item.id).addr,
                                    {name: count for name, (count, _) in variable.items()})
        for name, (_, width) in variable.items():
            if name not in found.lengths:
                costs[name] = None
                continue
            heaps = [layout.collection_size(address) for address in found.collections[name]]
            # HDF5 reads each collection whole; one holding only this value is a little larger
            costs[name] = max(found.lengths[name] * width, max(heaps, default=0) - COLLECTION_SLACK)
    except (ValueError, OSError) as exc:
        raise SourceProblem(ErrorKind.CORRUPT, f"{source}: the HDF5 object header of {item.name} "
                            f"cannot be parsed ({exc}); the file is damaged or crafted, re-save "
                            "the model.") from exc
    return costs
