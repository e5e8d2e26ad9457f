"""A pre-check of HDF5 global heaps, the structure libhdf5 loops forever on when it is damaged.

Variable-length strings (every text attribute Keras writes: model_config, weight_names, ...)
live in global heap collections ("GCOL"). libhdf5 1.14 walks a collection's objects by their
declared sizes; an object of size 0 stops the walk from advancing (an endless loop), and one
that runs past the collection makes it read out of bounds. Fuzzing the fixtures found both.
This walks every collection the same way first and refuses the file if any is inconsistent.
It is a guard against one known failure, not a validation of the whole HDF5 format.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from lstm_embed.frontends.keras.errors import Problem

SIGNATURE = b"GCOL"
HEADER = 16  # "GCOL", version 1, 3 reserved bytes, 8-byte collection size
OBJECT_HEADER = 16  # index (2), reference count (2), reserved (4), 8-byte size
MIN_COLLECTION = 4096  # libhdf5 never writes a smaller collection
CHUNK = 2**20


def check_global_heaps(stream: BinaryIO, size: int) -> None:
    """Raise Problem if a global heap collection in the file would derail libhdf5."""
    if _length_size(stream) != 8:
        return  # not the layout h5py writes (and this check knows): leave it to libhdf5
    for offset in _candidates(stream, size):
        stream.seek(offset)
        header = stream.read(HEADER)
        if len(header) < HEADER or header[4] != 1 or header[5:8] != b"\0\0\0":
            continue  # not a collection header: "GCOL" bytes inside other data
        length = struct.unpack_from("<Q", header, 8)[0]
        if length < MIN_COLLECTION or offset + length > size:
            raise Problem(f"a global heap at byte {offset} of the HDF5 data is damaged (size)")
        stream.seek(offset)
        _walk(stream.read(length), offset)


def _length_size(stream: BinaryIO) -> int | None:
    """The superblock's "size of lengths" (8 in every file h5py writes)."""
    stream.seek(0)
    head = stream.read(16)
    if len(head) < 16 or head[:8] != b"\x89HDF\r\n\x1a\n":
        return None
    return head[14] if head[8] in (0, 1) else head[10] if head[8] in (2, 3) else None


def _candidates(stream: BinaryIO, size: int) -> list[int]:
    """Offsets of every "GCOL" in the data, read a chunk at a time."""
    found, pos, tail = [], 0, b""
    stream.seek(0)
    while pos < size:
        chunk = stream.read(min(CHUNK, size - pos))
        if not chunk:
            break
        data = tail + chunk
        start = data.find(SIGNATURE)
        while start >= 0:
            found.append(pos - len(tail) + start)
            start = data.find(SIGNATURE, start + 1)
        tail = data[-(len(SIGNATURE) - 1) :]
        pos += len(chunk)
    return found


def _walk(collection: bytes, offset: int) -> None:
    """Step through the objects as libhdf5 does; every step must advance and stay inside."""
    p, end = HEADER, len(collection)
    while p < end:
        if p + OBJECT_HEADER > end:
            return  # too little left for an object: libhdf5 counts it as free space
        index, _refs, _reserved, length = struct.unpack_from("<HHIQ", collection, p)
        # the free-space object (index 0) counts its header in its size; others' data is
        # padded to 8 bytes
        step = length if index == 0 else OBJECT_HEADER + ((length + 7) & ~7)
        if step < OBJECT_HEADER or p + step > end:
            raise Problem(f"a global heap at byte {offset} of the HDF5 data is damaged (objects)")
        p += step
