"""The metadata at the head of a GGUF file, read without touching its tensors.

Registering a GGUF base model needs three facts (architecture, context length, chat template).
``gguf.GGUFReader`` builds a NumPy view per array element of the whole file and takes about six
seconds on the bundled 100 MB model, mostly on its 49k-entry vocabulary; this reader walks the
key-value section with ``struct`` and skips arrays by their length, in milliseconds.

Format (little-endian, version 2 and 3): ``b"GGUF"``, u32 version, u64 tensor count, u64 pair
count, then each pair as a string key, a u32 value type and the value. Strings are a u64 byte
length and UTF-8 bytes; arrays are a u32 element type, a u64 count and the elements.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

MAGIC = b"GGUF"

_SCALARS: dict[int, str] = {
    0: "<B",  # uint8
    1: "<b",  # int8
    2: "<H",  # uint16
    3: "<h",  # int16
    4: "<I",  # uint32
    5: "<i",  # int32
    6: "<f",  # float32
    7: "<?",  # bool
    10: "<Q",  # uint64
    11: "<q",  # int64
    12: "<d",  # float64
}
_STRING = 8
_ARRAY = 9

Scalar = int | float | bool | str


class NotGguf(ValueError):
    """The file is not a GGUF file this reader understands; the message says why."""


def read_metadata(path: Path) -> dict[str, Scalar]:
    """Every scalar and string value of the file's metadata; arrays are left out."""
    with path.open("rb") as handle:
        if handle.read(4) != MAGIC:
            raise NotGguf(f"{path.name} does not start with the GGUF magic bytes")
        (version,) = _unpack(handle, "<I")
        if version not in (2, 3):
            raise NotGguf(f"{path.name} is GGUF version {version}; versions 2 and 3 are read")
        _tensor_count, pair_count = _unpack(handle, "<QQ")
        metadata: dict[str, Scalar] = {}
        for _ in range(pair_count):
            key = _string(handle)
            (kind,) = _unpack(handle, "<I")
            if kind == _ARRAY:
                _skip_array(handle)
            else:
                metadata[key] = _value(handle, kind)
        return metadata


def _unpack(handle: BinaryIO, fmt: str) -> tuple[int, ...]:
    size = struct.calcsize(fmt)
    data = handle.read(size)
    if len(data) != size:
        raise NotGguf("the GGUF metadata ends early: the file is truncated")
    return struct.unpack(fmt, data)


def _string(handle: BinaryIO) -> str:
    (length,) = _unpack(handle, "<Q")
    data = handle.read(length)
    if len(data) != length:
        raise NotGguf("the GGUF metadata ends early: the file is truncated")
    return data.decode("utf-8", errors="replace")


def _value(handle: BinaryIO, kind: int) -> Scalar:
    if kind == _STRING:
        return _string(handle)
    fmt = _SCALARS.get(kind)
    if fmt is None:
        raise NotGguf(f"unknown GGUF value type {kind}")
    (value,) = struct.unpack(fmt, handle.read(struct.calcsize(fmt)))
    return value  # type: ignore[no-any-return]


def _skip_array(handle: BinaryIO) -> None:
    kind, count = _unpack(handle, "<IQ")
    if kind == _STRING:
        for _ in range(count):
            (length,) = _unpack(handle, "<Q")
            handle.seek(length, 1)
    elif kind == _ARRAY:
        for _ in range(count):
            _skip_array(handle)
    elif kind in _SCALARS:
        handle.seek(struct.calcsize(_SCALARS[kind]) * count, 1)
    else:
        raise NotGguf(f"unknown GGUF value type {kind}")
