"""Training straight from compressed frames: a PyTorch `Dataset` over a folder of `.stkc` files.

    from torch.utils.data import DataLoader
    from stkcodec.dataset import StkcFrames

    loader = DataLoader(StkcFrames("frames/"), batch_size=64, shuffle=True)
    for frames in loader:  # (64, 3, H, W) uint8
        ...

A `DataLoader` hands the dataset a whole batch of indices at once (`__getitems__`), and the
dataset decodes them together: the prior runs over all of them in one batch, which is most of
the speed of `stkc decompress` on many files. Files of different sizes need a `collate_fn` of
your own (or `batch_size=1`), as with any image folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .codec import Codec


class StkcFrames(Dataset):
    """Every `.stkc` file under `folder` (recursive, sorted by path), decoded to a uint8 tensor
    (channels, height, width): 3 channels, or 1 for a gray original. `transform` (optional) is
    applied to each tensor."""

    def __init__(self, folder: str | Path, *, codec: Codec | None = None, transform=None) -> None:
        self.paths = sorted(path for path in Path(folder).rglob("*.stkc") if path.is_file())
        if not self.paths:
            raise FileNotFoundError(f"{folder}: no .stkc files")
        self.codec = codec
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def _codec(self) -> Codec:
        if self.codec is None:  # loaded lazily: each DataLoader worker loads its own
            from .codec import default_codec

            self.codec = default_codec()
        return self.codec

    def __getitems__(self, indices: Sequence[int]) -> list[torch.Tensor]:
        paths = [self.paths[i] for i in indices]
        images = self._codec().decompress_many([path.read_bytes() for path in paths], [str(p) for p in paths])
        frames = []
        for image in images:
            array = np.array(image)  # a writable copy, which torch.from_numpy wants
            tensor = torch.from_numpy(array[:, :, None] if array.ndim == 2 else array).permute(2, 0, 1).contiguous()
            frames.append(self.transform(tensor) if self.transform is not None else tensor)
        return frames

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.__getitems__([index])[0]
