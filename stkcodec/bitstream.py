"""The `.stkc` container: a 23-byte little-endian header, then the range coder's payload.

See formats/stkc.md for the byte table. Parsing validates every field before anything is
allocated from it, so a hostile header can cost nothing but its 23 bytes.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .errors import BadInputError

MAGIC = b"STK"
VERSION = 1
HEADER = struct.Struct("<3sB4sHHBBBII")  # magic, version, model id, width, height, patch, tile rows, tile cols, payload bytes, crc32
HEADER_SIZE = HEADER.size
DEFAULT_MAX_PIXELS = 64 * 2**20
TOKENS_PER_WORD = 64  # a payload has at least one 32-bit word per 64 tokens (see min_payload_bytes)


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

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the token grid."""
        return math.ceil(self.height / self.patch_size), math.ceil(self.width / self.patch_size)

    def pack(self) -> bytes:
        return HEADER.pack(MAGIC, self.version, self.model_id, self.width, self.height, self.patch_size,
                           self.tile_rows, self.tile_cols, self.payload_bytes, self.token_crc32)

    def describe(self) -> dict:
        rows, cols = self.grid
        return {
            "format_version": self.version,
            "model_id": self.model_id.hex(),
            "width": self.width,
            "height": self.height,
            "patch_size": self.patch_size,
            "token_grid": [rows, cols],
            "tile": [self.tile_rows, self.tile_cols],
            "tiles": math.ceil(rows / self.tile_rows) * math.ceil(cols / self.tile_cols),
            "header_bytes": HEADER_SIZE,
            "payload_bytes": self.payload_bytes,
            "file_bytes": HEADER_SIZE + self.payload_bytes,
            "token_crc32": f"{self.token_crc32:08x}",
        }


def min_payload_bytes(rows: int, cols: int) -> int:
    """The smallest payload a grid may have: one 32-bit word per TOKENS_PER_WORD tokens.

    Real frames cost several bits per token, far above this; an encoder pads a payload that
    falls short (a flat synthetic image) with zero words, which a decoder never reads. The
    bound caps a decoder's work per byte of input, so a header that claims a huge image
    with a short payload is refused before any decoding.
    """
    return 4 * -(-rows * cols // TOKENS_PER_WORD)


def token_checksum(tokens: np.ndarray) -> int:
    """CRC-32 of the token grid as little-endian uint16 in raster order."""
    return zlib.crc32(np.ascontiguousarray(tokens, dtype="<u2").tobytes())


def looks_like_stkc(prefix: bytes) -> bool:
    return prefix[:3] == MAGIC


def parse(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "input") -> tuple[Header, bytes]:
    """Split a `.stkc` file into its validated header and its payload."""
    if len(data) < HEADER_SIZE:
        if not looks_like_stkc(data):
            raise BadInputError(f"{name}: not a .stkc file")
        raise BadInputError(f"{name}: truncated .stkc header ({len(data)} of {HEADER_SIZE} bytes)")
    magic, version, model_id, width, height, patch, tile_rows, tile_cols, payload_bytes, crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise BadInputError(f"{name}: not a .stkc file")
    if version != VERSION:
        raise BadInputError(f"{name}: .stkc format version {version}, this stkc reads version {VERSION}")
    if width == 0 or height == 0:
        raise BadInputError(f"{name}: image size {width}x{height} is empty")
    if width * height > max_pixels:
        raise BadInputError(f"{name}: image of {width}x{height} pixels exceeds the limit of {max_pixels} "
                            "(raise it with --max-pixels)")
    if patch == 0 or tile_rows == 0 or tile_cols == 0:
        raise BadInputError(f"{name}: invalid token grid (patch {patch}, tile {tile_rows}x{tile_cols})")
    if payload_bytes % 4:
        raise BadInputError(f"{name}: payload of {payload_bytes} bytes is not whole 32-bit words")
    actual = len(data) - HEADER_SIZE
    if actual < payload_bytes:
        raise BadInputError(f"{name}: truncated ({actual} of {payload_bytes} payload bytes)")
    if actual > payload_bytes:
        raise BadInputError(f"{name}: {actual - payload_bytes} unexpected bytes after the payload")
    header = Header(model_id, width, height, patch, tile_rows, tile_cols, payload_bytes, crc, version)
    if payload_bytes < min_payload_bytes(*header.grid):
        raise BadInputError(f"{name}: payload of {payload_bytes} bytes is too short for {width}x{height} pixels")
    return header, bytes(data[HEADER_SIZE:])
