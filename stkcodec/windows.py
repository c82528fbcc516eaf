"""Pixels <-> token grids: the tokenizer's passes over windows of an image.

The tokenizer runs on windows of WINDOW×WINDOW grid cells plus a halo of its receptive
radius, so memory is bounded for any image size and every cell sees the same neighbours it
would see in a whole-image pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from .coder import tile_layout
from .memory import release_free_memory
from .patches import pad_to_patches
from .tokenizer import Tokenizer

WINDOW = 32  # grid cells per side of a tokenizer window (halo excluded)
IMAGES_PER_BATCH = 32


def _windows(rows: int, cols: int) -> list[tuple[int, int, int, int]]:
    return tile_layout(rows, cols, WINDOW, WINDOW)


def _padded_array(image: Image.Image, patch: int) -> np.ndarray:
    """(H', W', 3) uint8 pixels, padded to whole patches as the tokenizer pads (patches.py)."""
    pixels = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)[None]  # (1, 3, H, W)
    return pad_to_patches(pixels, patch)[0].permute(1, 2, 0).numpy()


def window_count(rows: int, cols: int) -> int:
    """How many windows a grid of this shape is cut into (for progress)."""
    return len(_windows(rows, cols))


def image_tokens(tokenizer: Tokenizer, images: Sequence[Image.Image],
                 on_window: Callable[[int], None] | None = None) -> list[torch.Tensor]:
    """RGB images of one size -> their token grids (rows, cols), window by window
    (`on_window(n)`: n more image-windows done)."""
    p, halo = tokenizer.config.patch_size, tokenizer.grid_radius
    rows, cols = tokenizer.grid_shape(images[0].height, images[0].width)
    grids = torch.empty(len(images), rows, cols, dtype=torch.int64)
    for start in range(0, len(images), IMAGES_PER_BATCH):
        arrays = np.stack([_padded_array(image, p) for image in images[start : start + IMAGES_PER_BATCH]])
        windows = _windows(rows, cols)
        for r0, r1, c0, c1 in windows:
            h0, h1, w0, w1 = max(0, r0 - halo), min(rows, r1 + halo), max(0, c0 - halo), min(cols, c1 + halo)
            pixels = torch.from_numpy(arrays[:, h0 * p : h1 * p, w0 * p : w1 * p]).permute(0, 3, 1, 2).float() / 255
            tokens = tokenizer.encode_index(pixels)
            grids[start : start + len(arrays), r0:r1, c0:c1] = tokens[:, r0 - h0 : r1 - h0, c0 - w0 : c1 - w0]
            if len(windows) > 1:
                release_free_memory()
            if on_window is not None:
                on_window(len(arrays))
    return list(grids)


def token_images(tokenizer: Tokenizer, grids: Sequence[torch.Tensor], size: tuple[int, int],
                 on_window: Callable[[int], None] | None = None) -> list[Image.Image]:
    """Token grids of one shape -> RGB images of `size` (width, height), window by window
    (`on_window(n)`: n more image-windows done)."""
    p, halo = tokenizer.config.patch_size, tokenizer.grid_radius
    rows, cols = grids[0].shape
    width, height = size
    images = []
    for start in range(0, len(grids), IMAGES_PER_BATCH):
        batch = torch.stack(list(grids[start : start + IMAGES_PER_BATCH]))
        canvas = np.empty((len(batch), rows * p, cols * p, 3), dtype=np.uint8)
        windows = _windows(rows, cols)
        for r0, r1, c0, c1 in windows:
            h0, h1, w0, w1 = max(0, r0 - halo), min(rows, r1 + halo), max(0, c0 - halo), min(cols, c1 + halo)
            pixels = tokenizer.decode_index(batch[:, h0:h1, w0:w1])  # (B, 3, (h1-h0)p, (w1-w0)p)
            core = pixels[:, :, (r0 - h0) * p : (r1 - h0) * p, (c0 - w0) * p : (c1 - w0) * p]
            canvas[:, r0 * p : r1 * p, c0 * p : c1 * p] = (core * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            if len(windows) > 1:
                release_free_memory()
            if on_window is not None:
                on_window(len(batch))
        images.extend(Image.fromarray(np.ascontiguousarray(a[:height, :width]), "RGB") for a in canvas)
    return images
