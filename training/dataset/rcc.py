"""Read Qt binary resource files (.rcc) without Qt: list entries and extract their bytes.

Format (Qt's rcc, versions 1-3): a "qres" header with offsets of the tree, data
and names sections. Tree entries are 14 bytes (v1) or 22 bytes (v2+, with a
modification time): name offset, flags, then for a directory the child count and
first child index, for a file the locale and the data offset. File data is a
4-byte big-endian size then the bytes; flag 1 means zlib (with a 4-byte
uncompressed-size prefix), flag 4 zstd (not supported here, reported).
"""

import struct
import zlib
from pathlib import Path

from rendernet.errors import RendernetError

COMPRESSED_ZLIB, DIRECTORY, COMPRESSED_ZSTD = 1, 2, 4


class RccError(RendernetError, ValueError):
    """The file is not a readable Qt resource file."""


def read_rcc(path) -> dict:
    """Return {resource path: bytes} for every file entry of a .rcc file."""
    blob = Path(path).read_bytes()
    if blob[:4] != b"qres" or len(blob) < 20:
        raise RccError(f"{path}: not a Qt resource file (no 'qres' header)")
    version, tree_offset, data_offset, names_offset = struct.unpack(">IIII", blob[4:20])
    if version not in (1, 2, 3):
        raise RccError(f"{path}: unsupported rcc format version {version}")
    entry_size = 14 if version == 1 else 22

    def name_at(offset: int) -> str:
        start = names_offset + offset
        (length,) = struct.unpack(">H", blob[start : start + 2])
        return blob[start + 6 : start + 6 + 2 * length].decode("utf-16-be")

    def entry(index: int):
        start = tree_offset + index * entry_size
        name_offset, flags = struct.unpack(">IH", blob[start : start + 6])
        return name_offset, flags, blob[start + 6 : start + 14]

    files = {}

    def walk(index: int, prefix: str) -> None:
        name_offset, flags, rest = entry(index)
        name = name_at(name_offset) if index else ""
        path_here = f"{prefix}/{name}" if name else prefix
        if flags & DIRECTORY:
            count, first = struct.unpack(">II", rest)
            for child in range(first, first + count):
                walk(child, path_here)
            return
        (offset,) = struct.unpack(">I", rest[4:8])
        start = data_offset + offset
        (size,) = struct.unpack(">I", blob[start : start + 4])
        payload = blob[start + 4 : start + 4 + size]
        if flags & COMPRESSED_ZSTD:
            raise RccError(f"{path}: {path_here} is zstd-compressed, which this reader does not support")
        if flags & COMPRESSED_ZLIB:
            try:
                payload = zlib.decompress(payload[4:])
            except zlib.error as error:
                raise RccError(f"{path}: {path_here}: corrupt zlib data ({error})") from None
        files[path_here] = payload

    try:
        walk(0, "")
    except struct.error as error:
        raise RccError(f"{path}: truncated or corrupt resource tree ({error})") from None
    return files
