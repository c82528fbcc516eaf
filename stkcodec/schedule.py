"""Fixed decoding schedules: which tokens of a tile a group prior predicts together.

A schedule named `bayer8:b1,b2,...` ranks each cell (r, c) of a tile by the 8×8 ordered-dither
(Bayer) matrix, `rank = BAYER8[r % 8][c % 8]` (0..63), and puts it in group
`g = number of boundaries b <= rank`. Ranks spread each group evenly over the tile, and every
later group sits between cells already known, so early groups are a coarse sketch and later
ones fill in detail (as M2T's fixed schedules do). Groups with no cell in a small tile are
skipped. The tokens of one group are predicted together from every token of earlier groups.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

RASTER = "raster"
MAX_GROUPS = 16


def _bayer(size: int) -> np.ndarray:
    matrix = np.zeros((1, 1), dtype=np.int64)
    while matrix.shape[0] < size:
        matrix = np.block([[4 * matrix, 4 * matrix + 2], [4 * matrix + 3, 4 * matrix + 1]])
    return matrix


BAYER8 = _bayer(8)


def parse_boundaries(schedule: str) -> tuple[int, ...]:
    """'bayer8:1,2,4' -> (1, 2, 4); raises ValueError for anything else."""
    kind, _, spec = schedule.partition(":")
    if kind != "bayer8":
        raise ValueError(f"unknown schedule {schedule!r} (expected 'raster' or 'bayer8:b1,b2,...')")
    try:
        boundaries = tuple(int(part) for part in spec.split(",")) if spec else ()
    except ValueError:
        raise ValueError(f"schedule {schedule!r}: boundaries must be integers") from None
    if list(boundaries) != sorted(set(boundaries)) or any(not 0 < b < 64 for b in boundaries):
        raise ValueError(f"schedule {schedule!r}: boundaries must rise strictly inside 1..63")
    if len(boundaries) + 1 > MAX_GROUPS:
        raise ValueError(f"schedule {schedule!r}: {len(boundaries) + 1} groups, at most {MAX_GROUPS}")
    return boundaries


@dataclass(frozen=True)
class Plan:
    """A schedule applied to one tile of rows×cols tokens (T = rows*cols).

    order: (T,) raster indices sorted by (group, raster index): the order of symbols and of the
    prior's entries. groups: (T,) the group of each entry of `order`, renumbered 0..G-1 over the
    non-empty groups. starts: (G+1,) where each group begins in `order`.
    """

    order: np.ndarray
    groups: np.ndarray
    starts: np.ndarray

    @property
    def count(self) -> int:
        return len(self.starts) - 1

    def visibility(self) -> np.ndarray:
        """(1 + 2T, 1 + T) bool, what each entry of a group prior's teacher-forced pass sees: the
        entries are the start, the contexts in `order`, then the queries in `order`; the keys the
        start and the contexts. A context of group a sees the start and contexts of groups <= a, a
        query of group b the start and contexts of groups < b."""
        key_group = np.concatenate([[-1], self.groups])
        row_limit = np.concatenate([[-1], self.groups, self.groups - 1])
        return key_group[None, :] <= row_limit[:, None]

    def members(self, group: int) -> np.ndarray:
        """Raster indices of `group`'s cells."""
        return self.order[self.starts[group] : self.starts[group + 1]]


@functools.cache
def plan(schedule: str, rows: int, cols: int) -> Plan:
    boundaries = np.array(parse_boundaries(schedule), dtype=np.int64)
    r, c = np.divmod(np.arange(rows * cols), cols)
    group_of = np.searchsorted(boundaries, BAYER8[r % 8, c % 8], side="right")  # (T,)
    order = np.lexsort((np.arange(rows * cols), group_of))
    _, groups = np.unique(group_of[order], return_inverse=True)  # renumber the non-empty groups 0..G-1
    starts = np.searchsorted(groups, np.arange(groups.max() + 2))
    for array in (order, groups, starts):
        array.setflags(write=False)
    return Plan(order=order, groups=groups, starts=starts)
