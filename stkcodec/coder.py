"""Range coding of token grids with the exact prior (constriction's queue coder).

A grid is cut into tiles of tile_rows×tile_cols tokens (raster order of tiles); each tile is
coded with a fresh context, so tiles cost a little at their borders but any image size works
with the prior's fixed position tables and bounded memory. Tiles of one shape are coded
together in chunks of CHUNK_TILES; inside a chunk the symbols go position-major (token 0 of
every tile, then token 1 of every tile...) so a decoder can run the chunk's tiles as one
batch. A group prior's symbols go in its schedule's order instead of raster order (group 0's
cells of every tile, then group 1's...), and a decoder takes one group of the chunk per step,
each stream's symbols in one call. Every probability comes from the prior's exact twin
(`ExactPrior` or `ExactGroupPrior`, each owning its decoding of a chunk), so encoder and
decoder agree to the bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import constriction
import numpy as np
import torch

from .errors import BadInputError
from .exact import FAMILY, ExactTokenPrior
from .memory import release_free_memory

CHUNK_TILES = 16  # part of the format: it fixes the order of the symbols
MAX_BATCH_TILES = 64  # tiles per batched KV-cache decoding step (speed only)
# tiles per encoder pass, or one chunk's if more (speed and memory only: the same bytes); 16
# frames of a batch in one pass code about 10% faster than in passes of 8
ENCODE_BATCH_TILES = 16
ENCODE_POSITIONS = 150  # positions per range-coder call when encoding (memory only: the same bytes)

Tile = tuple[int, int, int, int]  # row0, row1, col0, col1 on the token grid


def tile_layout(rows: int, cols: int, tile_rows: int, tile_cols: int) -> list[Tile]:
    return [(r, min(r + tile_rows, rows), c, min(c + tile_cols, cols))
            for r in range(0, rows, tile_rows) for c in range(0, cols, tile_cols)]


def coding_chunks(rows: int, cols: int, tile_rows: int, tile_cols: int) -> list[list[Tile]]:
    """Tiles grouped by shape (in order of first appearance), cut into chunks of CHUNK_TILES."""
    groups: dict[tuple[int, int], list[Tile]] = {}
    for tile in tile_layout(rows, cols, tile_rows, tile_cols):
        groups.setdefault((tile[1] - tile[0], tile[3] - tile[2]), []).append(tile)
    return [tiles[i : i + CHUNK_TILES] for tiles in groups.values() for i in range(0, len(tiles), CHUNK_TILES)]


def _cut(grid: torch.Tensor, chunk: list[Tile]) -> torch.Tensor:
    return torch.stack([grid[r0:r1, c0:c1] for r0, r1, c0, c1 in chunk])  # (n, th, tw)


def _group_by_shape(shapes: list[tuple[int, int]]) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = {}
    for index, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(index)
    return groups


def _member_batches(members: list[int], chunk: list[Tile], limit: int = MAX_BATCH_TILES) -> Iterator[list[int]]:
    per_batch = max(1, limit // len(chunk))
    for start in range(0, len(members), per_batch):
        yield members[start : start + per_batch]


def encode_grids(prior: ExactTokenPrior, grids: list[torch.Tensor], tile: tuple[int, int], *,
                 margins: list[torch.Tensor] | None = None, choose=None,
                 on_tiles: Callable[[int], None] | None = None) -> list[bytes]:
    """Token grids (rows, cols) -> one payload (bytes, whole 32-bit words) per grid.

    Grids of one shape share batched teacher-forced passes; the integers, hence the bytes,
    are the same as coding each grid alone. `on_tiles(n)` hears of every n tiles coded.
    With `choose` (rdo.chooser) and each grid's `margins` (rows, cols, bits), a group prior
    may code other tokens than the grids hold: the grids are updated in place to what was coded.
    """
    encoders = [constriction.stream.queue.RangeEncoder() for _ in grids]
    for shape, members in _group_by_shape([tuple(g.shape) for g in grids]).items():
        for chunk in coding_chunks(*shape, *tile):
            rows, cols = chunk[0][1] - chunk[0][0], chunk[0][3] - chunk[0][2]
            for batch in _member_batches(members, chunk, ENCODE_BATCH_TILES):  # whole chunks
                tiles = torch.cat([_cut(grids[i], chunk) for i in batch]).numpy()  # (len(batch)*n, rows, cols)
                cut_margins = torch.cat([_cut(margins[i], chunk) for i in batch]).numpy() if choose is not None else None
                coded = np.empty((len(tiles), rows * cols), dtype=np.int64)
                # each group's symbols go out as soon as they are known, in the decoder's order:
                # cell by cell (the group's, in coding order), each cell in every tile of the chunk
                for cells, chosen, weights in prior.coding_groups(tiles, cut_margins, choose):
                    coded[:, cells] = chosen
                    for slot, index in enumerate(batch):
                        own = slice(slot * len(chunk), (slot + 1) * len(chunk))
                        symbols = chosen[own].T.astype(np.int32)  # (m, n), cell-major
                        probabilities = weights[own].transpose(1, 0, 2)  # (m, n, V)
                        for first in range(0, len(cells), ENCODE_POSITIONS):
                            part = slice(first, first + ENCODE_POSITIONS)
                            encoders[index].encode(symbols[part].reshape(-1), FAMILY,
                                                   probabilities[part].reshape(-1, weights.shape[-1]))
                if choose is not None:
                    _place([grids[i] for i in batch], chunk, coded)
                if len(chunk) > 1:  # a large image: its chunks' arrays would otherwise pile up
                    release_free_memory()
                if on_tiles is not None:
                    on_tiles(len(tiles))
    return [encoder.get_compressed().astype("<u4").tobytes() for encoder in encoders]


def decode_grids(prior: ExactTokenPrior, payloads: list[bytes], shapes: list[tuple[int, int]],
                 tile: tuple[int, int], *, names: list[str] | None = None,
                 on_tiles: Callable[[int], None] | None = None) -> list[torch.Tensor]:
    """Payloads -> token grids of the given (rows, cols) shapes; `on_tiles(n)` hears of every
    n tiles decoded.

    Grids of the same shape are decoded together: their chunks have the same shapes in the
    same order, so chunk k of every such grid runs as one batch through the KV cache.
    """
    names = names or [f"input {i}" for i in range(len(payloads))]
    decoders = [constriction.stream.queue.RangeDecoder(np.frombuffer(p, dtype="<u4").astype(np.uint32)) for p in payloads]
    grids = [torch.empty(shape, dtype=torch.int64) for shape in shapes]
    for shape, members in _group_by_shape(shapes).items():
        for chunk in coding_chunks(*shape, *tile):
            for batch in _member_batches(members, chunk):
                try:
                    rows, cols = chunk[0][1] - chunk[0][0], chunk[0][3] - chunk[0][2]
                    symbols = prior.decode_chunk([decoders[i] for i in batch], len(chunk), rows, cols)
                    _place([grids[i] for i in batch], chunk, symbols)
                except (ValueError, RuntimeError, AssertionError, OverflowError) as error:
                    culprit = names[batch[0]] if len(batch) == 1 else "one of " + ", ".join(names[i] for i in batch)
                    raise BadInputError(f"{culprit}: corrupt payload ({error})") from None
                if len(chunk) > 1:
                    release_free_memory()
                if on_tiles is not None:
                    on_tiles(len(batch) * len(chunk))
    return grids


def _place(grids: list[torch.Tensor], chunk: list[Tile], symbols: np.ndarray) -> None:
    """Decoded symbols (streams*tiles, T), raster order per tile, into each stream's grid."""
    for slot, row in enumerate(symbols):
        r0, r1, c0, c1 = chunk[slot % len(chunk)]
        grids[slot // len(chunk)][r0:r1, c0:c1] = torch.from_numpy(row.reshape(r1 - r0, c1 - c0))
