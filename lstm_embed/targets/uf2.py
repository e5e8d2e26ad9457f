"""UF2 files (Microsoft's USB flashing format, github.com/microsoft/uf2) from an ELF.

A UF2 file is a sequence of 512-byte blocks, each carrying up to 476 payload bytes (256 here,
the flash page size boot loaders such as the RP2040's expect) for one target address. The ELF's
loadable segments (PT_LOAD with file bytes, at their load addresses) are cut into 256-byte
pages; a page that a segment fills only in part is padded with zeros.
"""

from __future__ import annotations

import struct

MAGIC_START0 = 0x0A324655  # "UF2\n"
MAGIC_START1 = 0x9E5D5157
MAGIC_END = 0x0AB16F30
FLAG_FAMILY_ID_PRESENT = 0x00002000
BLOCK_BYTES = 512
PAYLOAD_BYTES = 256
DATA_AREA_BYTES = 476
RP2040_FAMILY_ID = 0xE48BFF56

_HEADER = struct.Struct("<8I")  # magic0, magic1, flags, address, size, block no, count, family

PT_LOAD = 1


def load_segments(elf: bytes) -> list[tuple[int, bytes]]:
    """(physical address, bytes) of each PT_LOAD segment with file contents, of a 32-bit
    little-endian ELF; the bytes are what a loader writes (file size, not memory size)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 1 or elf[5] != 1:
        raise ValueError("not a 32-bit little-endian ELF file")
    (phoff,) = struct.unpack_from("<I", elf, 28)
    phentsize, phnum = struct.unpack_from("<HH", elf, 42)
    segments = []
    for k in range(phnum):
        p_type, offset, _vaddr, paddr, filesz, _memsz, _flags, _align = struct.unpack_from(
            "<8I", elf, phoff + k * phentsize
        )
        if p_type == PT_LOAD and filesz > 0:
            segments.append((paddr, elf[offset : offset + filesz]))
    return sorted(segments)


def pages(segments: list[tuple[int, bytes]]) -> dict[int, bytearray]:
    """The 256-byte-aligned pages the segments touch, zero-filled where no segment writes."""
    out: dict[int, bytearray] = {}
    for address, data in segments:
        for k, byte in enumerate(data):
            page = (address + k) & ~(PAYLOAD_BYTES - 1)
            out.setdefault(page, bytearray(PAYLOAD_BYTES))[(address + k) - page] = byte
    return dict(sorted(out.items()))


def blocks(image: dict[int, bytearray], family_id: int) -> bytes:
    """One UF2 block per page, numbered 0..n-1, each naming the total n and the family."""
    count = len(image)
    out = bytearray()
    for number, (address, payload) in enumerate(image.items()):
        header = _HEADER.pack(
            MAGIC_START0,
            MAGIC_START1,
            FLAG_FAMILY_ID_PRESENT,
            address,
            PAYLOAD_BYTES,
            number,
            count,
            family_id,
        )
        data = bytes(payload).ljust(DATA_AREA_BYTES, b"\0")
        out += header + data + struct.pack("<I", MAGIC_END)
    assert len(out) == BLOCK_BYTES * count
    return bytes(out)


def elf_to_uf2(elf: bytes, family_id: int) -> bytes:
    """The UF2 file that writes elf's loadable image."""
    segments = load_segments(elf)
    if not segments:
        raise ValueError("the ELF file has no loadable contents")
    return blocks(pages(segments), family_id)
