"""The `.stkc` container: a little-endian header (25 bytes; 23 in version 1), the base layer's
range-coded payload, and from version 3 an optional enhancement segment (a 12-byte header and
its payload) that raises the quality level. Cutting a file after its base payload leaves a
valid file of level 1.

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
VERSION = 3  # what an encoder writes; a decoder reads every version in HEADERS
HEADERS = {
    # magic, version, model id, width, height, patch, tile rows, tile cols, payload bytes, crc32
    1: struct.Struct("<3sB4sHHBBBII"),
    # ... tile cols, colour, level, payload bytes, crc32 (of the header's first 21 bytes and the tokens)
    2: struct.Struct("<3sB4sHHBBBBBII"),
    3: struct.Struct("<3sB4sHHBBBBBII"),  # the same fields; an enhancement segment may follow the payload
}
ENHANCEMENT_MAGIC = b"STE"
# magic, quality level (2 or more), payload bytes, crc32 (of its first 8 bytes, the base's crc32
# and the decoded enhancement symbols: see enhance_codec.py)
ENHANCEMENT = struct.Struct("<3sBII")
HEADER_SIZE = HEADERS[VERSION].size
DEFAULT_MAX_PIXELS = 64 * 2**20
TOKENS_PER_WORD = 64  # a payload has at least one 32-bit word per 64 tokens (see min_payload_bytes)
RGB, GRAY = 0, 1  # colour modes (version 2): what the decoder hands back
COLOURS = {RGB: "RGB", GRAY: "L"}


@dataclass(frozen=True)
class Enhancement:
    """A version-3 file's enhancement segment: what lifts the base layer to `level`."""

    level: int  # the quality level it gives, 2 or more
    payload_bytes: int
    crc32: int
    payload: bytes = dataclasses.field(repr=False, default=b"")

    def pack(self) -> bytes:
        return ENHANCEMENT.pack(ENHANCEMENT_MAGIC, self.level, self.payload_bytes, self.crc32) + self.payload

    def sealed(self, symbols_crc32: int) -> "Enhancement":
        """This segment with its checksum: the CRC-32 of its symbols (`symbols_crc_start`, then
        the symbols) continued over the segment's first 8 bytes."""
        return dataclasses.replace(self, crc32=zlib.crc32(self.pack()[:8], symbols_crc32))


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
    level: int = 0  # version 2 and 3: 0 (the base layer; a version-3 file's level is in its enhancement)
    enhancement: Enhancement | None = None  # version 3: the segment after the base payload, if any

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the token grid."""
        return math.ceil(self.height / self.patch_size), math.ceil(self.width / self.patch_size)

    @property
    def size(self) -> int:
        return HEADERS[self.version].size

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
            "enhancement_bytes": ENHANCEMENT.size + self.enhancement.payload_bytes if self.enhancement else 0,
            "file_bytes": self.base_bytes + (ENHANCEMENT.size + self.enhancement.payload_bytes
                                             if self.enhancement else 0),
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
    if version not in HEADERS:
        raise BadInputError(f"{name}: .stkc format version {version}, this stkc reads versions "
                            f"{', '.join(map(str, HEADERS))}")
    layout = HEADERS[version]
    if len(data) < layout.size:
        raise BadInputError(f"{name}: truncated .stkc header ({len(data)} of {layout.size} bytes)")
    fields = layout.unpack_from(data)
    _, _, model_id, width, height, patch, tile_rows, tile_cols = fields[:8]
    colour, level = fields[8:10] if version >= 2 else (RGB, 0)
    payload_bytes, crc = fields[-2:]
    if width == 0 or height == 0:
        raise BadInputError(f"{name}: image size {width}x{height} is empty")
    if width * height > max_pixels:
        raise BadInputError(f"{name}: image of {width}x{height} pixels exceeds the limit of {max_pixels} "
                            "(raise it with ", Option("max_pixels"), ")")
    if patch == 0 or tile_rows == 0 or tile_cols == 0:
        raise BadInputError(f"{name}: invalid token grid (patch {patch}, tile {tile_rows}x{tile_cols})")
    if colour not in COLOURS:
        raise BadInputError(f"{name}: unknown colour mode {colour} (file damaged?)")
    actual = len(data) - layout.size
    _check_words(name, "payload", payload_bytes, actual)
    enhancement = None
    if actual > payload_bytes and version >= 3:
        enhancement = _parse_enhancement(data[layout.size + payload_bytes :], name)
    elif actual > payload_bytes:
        raise BadInputError(f"{name}: {actual - payload_bytes} unexpected bytes after the payload")
    if version >= 3 and level != 0:
        raise BadInputError(f"{name}: base layer of level {level}, expected 0 (file damaged?)")
    header = Header(model_id, width, height, patch, tile_rows, tile_cols, payload_bytes, crc, version, colour, level,
                    enhancement)
    if payload_bytes < min_payload_bytes(*header.grid):
        raise BadInputError(f"{name}: payload of {payload_bytes} bytes is too short for {width}x{height} pixels")
    return header, bytes(data[layout.size : layout.size + payload_bytes])


def _check_words(name: str, what: str, declared: int, actual: int) -> None:
    """A payload's declared length: whole 32-bit words, all of them present."""
    if declared % 4:
        raise BadInputError(f"{name}: {what} of {declared} bytes is not whole 32-bit words")
    if actual < declared:
        raise BadInputError(f"{name}: truncated ({actual} of {declared} {what} bytes)")


def _parse_enhancement(data: bytes, name: str) -> Enhancement:
    """The bytes after a version-3 base payload: one enhancement segment, whole."""
    if len(data) < ENHANCEMENT.size:
        raise BadInputError(f"{name}: truncated enhancement header ({len(data)} of {ENHANCEMENT.size} bytes)")
    magic, level, payload_bytes, crc = ENHANCEMENT.unpack_from(data)
    if magic != ENHANCEMENT_MAGIC:
        raise BadInputError(f"{name}: {len(data)} unexpected bytes after the payload")
    if level < 2:
        raise BadInputError(f"{name}: enhancement of level {level}, expected 2 or more (file damaged?)")
    actual = len(data) - ENHANCEMENT.size
    _check_words(name, "enhancement", payload_bytes, actual)
    if actual > payload_bytes:
        raise BadInputError(f"{name}: {actual - payload_bytes} unexpected bytes after the enhancement")
    return Enhancement(level, payload_bytes, crc, bytes(data[ENHANCEMENT.size :]))
