"""The `.stkc` container: a little-endian header (25 bytes; 23 in version 1), then the range coder's payload.

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

from .errors import BadInputError

if TYPE_CHECKING:  # numpy is imported where tokens are checked: `stkc info` reads headers without it
    import numpy as np

MAGIC = b"STK"
VERSION = 2  # what an encoder writes; a decoder reads every version in HEADERS
HEADERS = {
    # magic, version, model id, width, height, patch, tile rows, tile cols, payload bytes, crc32
    1: struct.Struct("<3sB4sHHBBBII"),
    # ... tile cols, colour, level, payload bytes, crc32 (of the header's first 21 bytes and the tokens)
    2: struct.Struct("<3sB4sHHBBBBBII"),
}
HEADER_SIZE = HEADERS[VERSION].size
DEFAULT_MAX_PIXELS = 64 * 2**20
TOKENS_PER_WORD = 64  # a payload has at least one 32-bit word per 64 tokens (see min_payload_bytes)
RGB, GRAY = 0, 1  # colour modes (version 2): what the decoder hands back
COLOURS = {RGB: "RGB", GRAY: "L"}


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
    level: int = 0  # version 2: the quality level, 0 for a model with a single rate

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the token grid."""
        return math.ceil(self.height / self.patch_size), math.ceil(self.width / self.patch_size)

    @property
    def size(self) -> int:
        return HEADERS[self.version].size

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
            "level": self.level,
            "patch_size": self.patch_size,
            "token_grid": [rows, cols],
            "tile": [self.tile_rows, self.tile_cols],
            "tiles": math.ceil(rows / self.tile_rows) * math.ceil(cols / self.tile_cols),
            "header_bytes": self.size,
            "payload_bytes": self.payload_bytes,
            "file_bytes": self.size + self.payload_bytes,
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
                            "(raise it with --max-pixels)")
    if patch == 0 or tile_rows == 0 or tile_cols == 0:
        raise BadInputError(f"{name}: invalid token grid (patch {patch}, tile {tile_rows}x{tile_cols})")
    if colour not in COLOURS:
        raise BadInputError(f"{name}: unknown colour mode {colour} (file damaged?)")
    if payload_bytes % 4:
        raise BadInputError(f"{name}: payload of {payload_bytes} bytes is not whole 32-bit words")
    actual = len(data) - layout.size
    if actual < payload_bytes:
        raise BadInputError(f"{name}: truncated ({actual} of {payload_bytes} payload bytes)")
    if actual > payload_bytes:
        raise BadInputError(f"{name}: {actual - payload_bytes} unexpected bytes after the payload")
    header = Header(model_id, width, height, patch, tile_rows, tile_cols, payload_bytes, crc, version, colour, level)
    if payload_bytes < min_payload_bytes(*header.grid):
        raise BadInputError(f"{name}: payload of {payload_bytes} bytes is too short for {width}x{height} pixels")
    return header, bytes(data[layout.size :])
