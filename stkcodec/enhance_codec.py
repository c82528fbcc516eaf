"""Coding the enhancement layer of images: tiles of the base's layout, chunk by chunk.

An image is padded to whole patches (patches.py), cut into the base's tiles, and the tiles of
one shape go in chunks of `coder.CHUNK_TILES`, in `coder.coding_chunks`'s order; inside a chunk
the symbols go pass by pass (enhance_exact.py). E, the context network and D see one tile at a
time, as in training, where a tile is a whole frame: memory stays bounded for any image size.

A stream's checksum is a CRC-32 chained over its chunks' symbols, each chunk's as int16
little-endian in (tile, channel, row, column) order, started from the base layer's checksum.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import constriction
import numpy as np
import torch
from PIL import Image

from .coder import coding_chunks
from .enhance_exact import ONE, ChunkCoder, ExactEnhancerEntropy, chunk_base, select_base
from .enhancer import Enhancer
from .errors import BadInputError
from .memory import release_free_memory
from .windows import crop_padded, paste_within

MAX_BATCH_TILES = 32  # tiles per entropy-model pass (speed and memory only: the same bytes)
NETWORK_TILES = 8  # tiles per pass of E or D, whose full-resolution activations dominate memory


@dataclass
class Coded:
    """One image's enhancement at one level: its payload, its checksum, the decoded pixels."""

    payload: bytes
    crc32: int
    pixels: np.ndarray | None  # (H, W, 3) uint8, what a decoder shows (when asked for)


def _tiles(images: Sequence[Image.Image], chunk, patch: int) -> torch.Tensor:
    """Pixel tiles of `chunk` from each RGB image, padded to whole patches as the tokenizer pads
    -> (len*n, 3, th*p, tw*p) float."""
    cut = [crop_padded(image, r0 * patch, r1 * patch, c0 * patch, c1 * patch) for image in images
           for r0, r1, c0, c1 in chunk]
    return torch.from_numpy(np.stack(cut)).permute(0, 3, 1, 2).float() / 255


def _encode_parts(model: Enhancer, x: torch.Tensor, x0: torch.Tensor) -> np.ndarray:
    """E's latents (n, C, th, tw) of pixel tiles x and their base x0, NETWORK_TILES at a time."""
    return np.concatenate([model.encode(x[k : k + NETWORK_TILES], x0[k : k + NETWORK_TILES]).numpy()
                           for k in range(0, len(x), NETWORK_TILES)])


def _decode_into(model: Enhancer, latents: np.ndarray, x0: torch.Tensor, canvases: Sequence[Image.Image],
                 chunk, patch: int) -> None:
    """D's pixels for latents (len(canvases)*len(chunk), C, th, tw) over their base tiles x0,
    NETWORK_TILES at a time, each tile pasted into its canvas (tile k: canvases[k // len(chunk)],
    at chunk[k % len(chunk)])."""
    for start in range(0, len(latents), NETWORK_TILES):
        part = slice(start, start + NETWORK_TILES)
        pixels = model.decode(torch.from_numpy(latents[part]).float(), x0[part])
        values = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for slot, tile in enumerate(values, start):
            r0, r1, c0, c1 = chunk[slot % len(chunk)]
            paste_within(canvases[slot // len(chunk)], tile, r0 * patch, c0 * patch)


def _chunk_tokens(grids: Sequence[np.ndarray] | None, members: list[int], chunk) -> np.ndarray | None:
    """The base tokens of `chunk`'s tiles in the (rows, cols) grids of `members` -> (len, n, th, tw),
    or None without grids (`chunk_base` refuses that for a model that reads them)."""
    if grids is None:
        return None
    return np.stack([np.stack([np.asarray(grids[i])[r0:r1, c0:c1] for r0, r1, c0, c1 in chunk]) for i in members])


def _batches(count: int, chunk_tiles: int) -> list[slice]:
    per_batch = max(1, MAX_BATCH_TILES // chunk_tiles)
    return [slice(start, min(count, start + per_batch)) for start in range(0, count, per_batch)]


def _chain(crc: int, symbols: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(symbols, dtype="<i2").tobytes(), crc)


class EnhancementCoder:
    """An `Enhancer` and its exact entropy twin, coding images of one size at a time."""

    def __init__(self, model: Enhancer, tile: tuple[int, int]) -> None:
        self.model = model
        self.entropy = ExactEnhancerEntropy(model)
        self.tile = tile
        self.patch = model.config.patch_size

    @property
    def levels(self) -> int:
        return self.model.config.levels

    def _base(self, tokens, members: list[int], chunk, shape) -> tuple[np.ndarray, np.ndarray] | None:
        """The base network's output for the members' tiles of `chunk` (None for a model that ignores tokens)."""
        if not self.entropy.reads_tokens:
            return None
        return chunk_base(self.entropy, _chunk_tokens(tokens, members, chunk), shape)

    def _latents(self, symbols: np.ndarray, means: np.ndarray, level: int) -> np.ndarray:
        """Symbols and integer means (n, C, h, w) at a 0-based level -> what D reads: ŷ / g."""
        return (symbols + means / ONE) * self.entropy.inv_gain[level][None, :, None, None]

    def encode(self, images: Sequence[Image.Image], bases: Sequence[Image.Image], levels: Sequence[int], *,
               base_crcs: Sequence[int], tokens: Sequence[np.ndarray] | None = None, reconstruct: bool = False,
               on_tiles: Callable[[int], None] | None = None) -> list[list[Coded]]:
        """RGB images and their base reconstructions (PIL, one size) and token grids (rows, cols)
        -> per image, its enhancement at each 0-based level in `levels` (with the decoded pixels
        if `reconstruct`). Tiles are cut from the images as they are coded: no whole-image copies."""
        width, height = images[0].size
        rows, cols = -(-height // self.patch), -(-width // self.patch)
        encoders = [[constriction.stream.queue.RangeEncoder() for _ in levels] for _ in images]
        crcs = [[base_crcs[i]] * len(levels) for i in range(len(images))]
        canvases = [[base.copy() for _ in levels] if reconstruct else [] for base in bases]
        for chunk in coding_chunks(rows, cols, *self.tile):
            for batch in _batches(len(images), len(chunk)):
                x = _tiles(images[batch], chunk, self.patch)
                x0 = _tiles(bases[batch], chunk, self.patch)
                latents = _encode_parts(self.model, x, x0)  # (b*n, C, th, tw), unscaled
                shape = (len(chunk), *latents.shape[1:])
                members = list(range(len(images))[batch])
                base = self._base(tokens, members, chunk, shape)
                for slot, level in enumerate(levels):
                    gain = self.entropy.gain[level][None, :, None, None]
                    own = [latents[k * len(chunk) : (k + 1) * len(chunk)] * gain for k in range(len(members))]
                    coded = ChunkCoder(self.entropy, level, shape, base).encode([encoders[i][slot] for i in members], own)
                    for index, (symbols, _) in zip(members, coded):
                        crcs[index][slot] = _chain(crcs[index][slot], symbols)
                    if not reconstruct:
                        continue
                    latents_hat = self._latents(np.concatenate([s for s, _ in coded]),
                                                np.concatenate([m for _, m in coded]), level)
                    _decode_into(self.model, latents_hat, x0, [canvases[i][slot] for i in members], chunk, self.patch)
                if len(chunk) > 1:
                    release_free_memory()
                if on_tiles is not None:
                    on_tiles(len(chunk) * (batch.stop - batch.start))
        return [[Coded(encoders[i][slot].get_compressed().astype("<u4").tobytes(), crcs[i][slot],
                       np.asarray(canvases[i][slot]) if reconstruct else None) for slot in range(len(levels))]
                for i in range(len(images))]

    def decode(self, payloads: Sequence[bytes], bases: Sequence[Image.Image], levels: Sequence[int], *,
               base_crcs: Sequence[int], names: Sequence[str], tokens: Sequence[np.ndarray] | None = None,
               on_tiles: Callable[[int], None] | None = None) -> list[int]:
        """Enhancement payloads of images of one size, their base reconstructions (RGB PIL images,
        enhanced in place: each tile is read before it is replaced, and no tile reads another),
        0-based levels and token grids (rows, cols) -> the checksum of each one's decoded symbols."""
        width, height = bases[0].size
        rows, cols = -(-height // self.patch), -(-width // self.patch)
        decoders = [constriction.stream.queue.RangeDecoder(np.frombuffer(p, dtype="<u4").astype(np.uint32))
                    for p in payloads]
        crcs = list(base_crcs)
        for chunk in coding_chunks(rows, cols, *self.tile):
            for batch in _batches(len(payloads), len(chunk)):
                members = list(range(len(payloads))[batch])
                x0 = _tiles(bases[batch], chunk, self.patch)
                shape = (len(chunk), self.model.config.latent_channels, chunk[0][1] - chunk[0][0],
                         chunk[0][3] - chunk[0][2])
                latents: dict[int, np.ndarray] = {}
                base = self._base(tokens, members, chunk, shape)
                for level in sorted({levels[i] for i in members}):  # one context pass per level
                    same = [i for i in members if levels[i] == level]
                    own_base = select_base(base, [members.index(i) for i in same], len(chunk))
                    try:
                        decoded = ChunkCoder(self.entropy, level, shape, own_base).decode([decoders[i] for i in same])
                    except (ValueError, RuntimeError, AssertionError, OverflowError) as error:
                        culprit = names[same[0]] if len(same) == 1 else "one of " + ", ".join(names[i] for i in same)
                        raise BadInputError(f"{culprit}: corrupt enhancement payload ({error})") from None
                    for index, (symbols, means) in zip(same, decoded):
                        crcs[index] = _chain(crcs[index], symbols)
                        latents[index] = self._latents(symbols, means, level)
                _decode_into(self.model, np.concatenate([latents[i] for i in members]), x0,
                             [bases[i] for i in members], chunk, self.patch)
                if len(chunk) > 1:
                    release_free_memory()
                if on_tiles is not None:
                    on_tiles(len(chunk) * len(members))
        return crcs
