"""The `.stkc` container: a little-endian header (20 bytes for a 150x100 frame in version 4,
whose sizes are variable-length integers; 25 bytes in versions 2 and 3, 23 in version 1), the
base layer's range-coded payload, and from version 3 an optional enhancement segment (6 bytes
and its payload in version 4, 12 in version 3) that raises the quality level. Cutting a file
after its base payload leaves a valid file of level 1.

See formats/stkc.md for the byte table. Parsing validates every field before anything is
allocated from it, so a hostile header can cost nothing but its own bytes.
"""

from __future__ import annotations

import dataclasses
import math
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import BadInputError, Option

if TYPE_CHECKING:  # numpy is imported where tokens are checked: `stkc info` reads headers without it
    import numpy as np

MAGIC = b"STK"
VERSION = 4  # what an encoder writes; a decoder reads every version in VERSIONS
HEADERS = {  # the fixed layouts
    # magic, version, model id, width, height, patch, tile rows, tile cols, payload bytes, crc32
    1: struct.Struct("<3sB4sHHBBBII"),
    # ... tile cols, colour, level, payload bytes, crc32 (of the header's first 21 bytes and the tokens)
    2: struct.Struct("<3sB4sHHBBBBBII"),
    3: struct.Struct("<3sB4sHHBBBBBII"),  # the same fields; an enhancement segment may follow the payload
}
VERSIONS = (1, 2, 3, 4)  # 4: magic, version, model id, then uvarint width and height, patch, tile rows
# and cols, colour (uint8 each), uvarint payload words, crc32 (see formats/stkc.md)
V4_FIXED = struct.Struct("<3sB4s")
V4_BYTES = struct.Struct("<BBBB")  # patch, tile rows, tile cols, colour
ENHANCEMENT_MAGIC = b"STE"
# version 3: magic, quality level (2 or more), payload bytes, crc32 (of its first 8 bytes, the
# base's crc32 and the decoded enhancement symbols: see enhance_codec.py); version 4: level, uvarint
# payload words, crc32 (of its bytes before it, after the base's crc32 and the symbols)
ENHANCEMENT = struct.Struct("<3sBII")
MAX_WORDS = 2**30  # a payload's words (4 GiB): a uvarint of at most 5 bytes
MAX_SIDE = 65535
DEFAULT_MAX_PIXELS = 64 * 2**20
TOKENS_PER_WORD = 64  # a payload has at least one 32-bit word per 64 tokens (see min_payload_bytes)
RGB, GRAY = 0, 1  # colour modes (version 2): what the decoder hands back
COLOURS = {RGB: "RGB", GRAY: "L"}


def uvarint(value: int) -> bytes:
    """A non-negative integer as LEB128: 7 bits a byte, low first, the high bit set on every byte
    but the last."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def read_uvarint(data: bytes, at: int, limit: int, name: str, what: str) -> tuple[int, int]:
    """The LEB128 integer at `data[at:]` and where it ends. Refuses one cut short, longer than
    `limit` needs, not in its shortest form (a last byte of zero), or above `limit`."""
    value, shift, most = 0, 0, len(uvarint(limit))
    for k in range(most):
        if at + k >= len(data):
            raise BadInputError(f"{name}: truncated .stkc header (in its {what})")
        byte = data[at + k]
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if k and not byte:
                raise BadInputError(f"{name}: {what} not in its shortest form (file damaged?)")
            if value > limit:
                raise BadInputError(f"{name}: {what} {value} exceeds {limit} (file damaged?)")
            return value, at + k + 1
    raise BadInputError(f"{name}: {what} longer than {most} bytes (file damaged?)")


@dataclass(frozen=True)
class Enhancement:
    """A version-3 or 4 file's enhancement segment: what lifts the base layer to `level`."""

    level: int  # the quality level it gives, 2 or more
    payload_bytes: int
    crc32: int
    payload: bytes = dataclasses.field(repr=False, default=b"")
    version: int = VERSION  # the file's

    def head(self) -> bytes:
        """The segment's bytes before its payload."""
        if self.version >= 4:
            return bytes([self.level]) + uvarint(self.payload_bytes // 4) + struct.pack("<I", self.crc32)
        return ENHANCEMENT.pack(ENHANCEMENT_MAGIC, self.level, self.payload_bytes, self.crc32)

    @property
    def size(self) -> int:
        """The segment's bytes, payload included."""
        return len(self.head()) + self.payload_bytes

    def pack(self) -> bytes:
        return self.head() + self.payload

    def sealed(self, symbols_crc32: int) -> "Enhancement":
        """This segment with its checksum: the CRC-32 of its symbols (`symbols_crc_start`, then
        the symbols) continued over the segment's bytes before the checksum."""
        return dataclasses.replace(self, crc32=zlib.crc32(self.head()[:-4], symbols_crc32))


def symbols_crc_start(base_crc32: int) -> int:
    """Where an enhancement's symbol checksum starts: the CRC-32 of the base's crc32 (uint32 LE),
    so a segment never passes after another file's base."""
    return zlib.crc32(struct.pack("<I", base_crc32))


@dataclass(frozen=True)
class Header:
    model_id: bytes  # first 4 bytes of the codec model's sha256
    width: int
    height: int
    patch_size: int
    tile_rows: int
    tile_cols: int
    payload_bytes: int
    token_crc32: int
    version: int = VERSION
    colour: int = RGB  # version 2; version 1 files are RGB
    level: int = 0  # version 2 and 3: 0 (the base layer; the level is in the enhancement); not in version 4
    enhancement: Enhancement | None = None  # version 3: the segment after the base payload, if any

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the token grid."""
        return math.ceil(self.height / self.patch_size), math.ceil(self.width / self.patch_size)

    @property
    def size(self) -> int:
        """The header's bytes."""
        return len(self.pack()) if self.version >= 4 else HEADERS[self.version].size

    @property
    def quality(self) -> int:
        """The quality level the file decodes at: 1 for the base alone."""
        return self.enhancement.level if self.enhancement is not None else 1

    @property
    def base_bytes(self) -> int:
        """Where a file may be cut to keep its base layer alone (a valid level-1 file)."""
        return self.size + self.payload_bytes

    @property
    def mode(self) -> str:
        """The PIL mode a decoder returns."""
        return COLOURS[self.colour]

    def pack(self) -> bytes:
        if self.version >= 4:
            return (V4_FIXED.pack(MAGIC, self.version, self.model_id) + uvarint(self.width) + uvarint(self.height)
                    + V4_BYTES.pack(self.patch_size, self.tile_rows, self.tile_cols, self.colour)
                    + uvarint(self.payload_bytes // 4) + struct.pack("<I", self.token_crc32))
        fields = (MAGIC, self.version, self.model_id, self.width, self.height, self.patch_size, self.tile_rows,
                  self.tile_cols)
        if self.version >= 2:
            fields += (self.colour, self.level)
        return HEADERS[self.version].pack(*fields, self.payload_bytes, self.token_crc32)

    def pack_file(self, payload: bytes) -> bytes:
        """The whole file: this header, the base payload, the enhancement segment if any."""
        return self.pack() + payload + (self.enhancement.pack() if self.enhancement is not None else b"")

    def checksum(self, tokens: np.ndarray) -> int:
        """What `token_crc32` must be for these tokens: version 1 covers the tokens; version 2
        the header's bytes before the checksum as well, so a damaged field never decodes."""
        import numpy as np

        covered = self.pack()[:-4] if self.version >= 2 else b""
        return zlib.crc32(np.ascontiguousarray(tokens, dtype="<u2").tobytes(), zlib.crc32(covered))

    def sealed(self, tokens: np.ndarray) -> "Header":
        """This header with the checksum of `tokens` filled in."""
        return dataclasses.replace(self, token_crc32=self.checksum(tokens))

    def describe(self) -> dict:
        rows, cols = self.grid
        return {
            "format_version": self.version,
            "model_id": self.model_id.hex(),
            "width": self.width,
            "height": self.height,
            "colour": self.mode,
            "level": self.quality,
            "patch_size": self.patch_size,
            "token_grid": [rows, cols],
            "tile": [self.tile_rows, self.tile_cols],
            "tiles": math.ceil(rows / self.tile_rows) * math.ceil(cols / self.tile_cols),
            "header_bytes": self.size,
            "payload_bytes": self.payload_bytes,
            "base_bytes": self.base_bytes,
            "enhancement_bytes": self.enhancement.size if self.enhancement else 0,
            "file_bytes": self.base_bytes + (self.enhancement.size if self.enhancement else 0),
            "checksum": f"{self.token_crc32:08x}",
        }


def min_payload_bytes(rows: int, cols: int) -> int:
    """The smallest payload a grid may have: one 32-bit word per TOKENS_PER_WORD tokens.

    Real frames cost several bits per token, far above this; an encoder pads a payload that
    falls short (a flat synthetic image) with zero words, which a decoder never reads. The
    bound caps a decoder's work per byte of input, so a header that claims a huge image
    with a short payload is refused before any decoding.
    """
    return 4 * -(-rows * cols // TOKENS_PER_WORD)


def looks_like_stkc(prefix: bytes) -> bool:
    return prefix[:3] == MAGIC


def parse(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "input") -> tuple[Header, bytes]:
    """Split a `.stkc` file into its validated header and its payload."""
    if len(data) < 4 or not looks_like_stkc(data):
        raise BadInputError(f"{name}: not a .stkc file")
    version = data[3]
    if version not in VERSIONS:
        raise BadInputError(f"{name}: .stkc format version {version}, this stkc reads versions "
                            f"{', '.join(map(str, VERSIONS))}")
    if version >= 4:
        fields, size = _fields_v4(data, name)
    else:
        layout = HEADERS[version]
        if len(data) < layout.size:
            raise BadInputError(f"{name}: truncated .stkc header ({len(data)} of {layout.size} bytes)")
        fields, size = layout.unpack_from(data), layout.size
        fields = fields[2:8] + (fields[8:10] if version >= 2 else (RGB, 0)) + fields[-2:]
    model_id, width, height, patch, tile_rows, tile_cols, colour, level, payload_bytes, crc = fields
    if width == 0 or height == 0:
        raise BadInputError(f"{name}: image size {width}x{height} is empty")
    if width * height > max_pixels:
        raise BadInputError(f"{name}: image of {width}x{height} pixels exceeds the limit of {max_pixels} "
                            "(raise it with ", Option("max_pixels"), ")")
    if patch == 0 or tile_rows == 0 or tile_cols == 0:
        raise BadInputError(f"{name}: invalid token grid (patch {patch}, tile {tile_rows}x{tile_cols})")
    if colour not in COLOURS:
        raise BadInputError(f"{name}: unknown colour mode {colour} (file damaged?)")
    actual = len(data) - size
    _check_words(name, "payload", payload_bytes, actual)
    enhancement = None
    if actual > payload_bytes and version >= 3:
        enhancement = _parse_enhancement(data[size + payload_bytes :], name, version)
    elif actual > payload_bytes:
        raise BadInputError(f"{name}: {actual - payload_bytes} unexpected bytes after the payload")
    if version == 3 and level != 0:
        raise BadInputError(f"{name}: base layer of level {level}, expected 0 (file damaged?)")
    header = Header(model_id, width, height, patch, tile_rows, tile_cols, payload_bytes, crc, version, colour, level,
                    enhancement)
    if payload_bytes < min_payload_bytes(*header.grid):
        raise BadInputError(f"{name}: payload of {payload_bytes} bytes is too short for {width}x{height} pixels")
    return header, bytes(data[size : size + payload_bytes])


def _fields_v4(data: bytes, name: str) -> tuple[tuple, int]:
    """A version-4 header's fields (as `parse` lists them) and its length."""
    if len(data) < V4_FIXED.size:
        raise BadInputError(f"{name}: truncated .stkc header ({len(data)} bytes)")
    _, _, model_id = V4_FIXED.unpack_from(data)
    width, at = read_uvarint(data, V4_FIXED.size, MAX_SIDE, name, "width")
    height, at = read_uvarint(data, at, MAX_SIDE, name, "height")
    if len(data) < at + V4_BYTES.size:
        raise BadInputError(f"{name}: truncated .stkc header ({len(data)} bytes)")
    patch, tile_rows, tile_cols, colour = V4_BYTES.unpack_from(data, at)
    words, at = read_uvarint(data, at + V4_BYTES.size, MAX_WORDS, name, "payload length")
    if len(data) < at + 4:
        raise BadInputError(f"{name}: truncated .stkc header ({len(data)} of {at + 4} bytes)")
    (crc,) = struct.unpack_from("<I", data, at)
    return (model_id, width, height, patch, tile_rows, tile_cols, colour, 0, 4 * words, crc), at + 4


def _check_words(name: str, what: str, declared: int, actual: int) -> None:
    """A payload's declared length: whole 32-bit words, all of them present."""
    if declared % 4:
        raise BadInputError(f"{name}: {what} of {declared} bytes is not whole 32-bit words")
    if actual < declared:
        raise BadInputError(f"{name}: truncated ({actual} of {declared} {what} bytes)")


def _parse_enhancement(data: bytes, name: str, version: int) -> Enhancement:
    """The bytes after a version-3 or 4 base payload: one enhancement segment, whole."""
    if version >= 4:
        level, at = data[0], 1
        words, at = read_uvarint(data, at, MAX_WORDS, name, "enhancement length")
        if len(data) < at + 4:
            raise BadInputError(f"{name}: truncated enhancement header ({len(data)} of {at + 4} bytes)")
        (crc,), payload_bytes, at = struct.unpack_from("<I", data, at), 4 * words, at + 4
    else:
        if len(data) < ENHANCEMENT.size:
            raise BadInputError(f"{name}: truncated enhancement header ({len(data)} of {ENHANCEMENT.size} bytes)")
        magic, level, payload_bytes, crc = ENHANCEMENT.unpack_from(data)
        if magic != ENHANCEMENT_MAGIC:
            raise BadInputError(f"{name}: {len(data)} unexpected bytes after the payload")
        at = ENHANCEMENT.size
    if level < 2:
        raise BadInputError(f"{name}: enhancement of level {level}, expected 2 or more (file damaged?)")
    actual = len(data) - at
    _check_words(name, "enhancement", payload_bytes, actual)
    if actual > payload_bytes:
        raise BadInputError(f"{name}: {actual - payload_bytes} unexpected bytes after the enhancement")
    return Enhancement(level, payload_bytes, crc, bytes(data[at:]), version)
