"""Pixels <-> token grids: the tokenizer's passes over windows of an image.

The tokenizer runs on windows of WINDOW×WINDOW grid cells plus a halo of its receptive
radius, so memory is bounded for any image size and every cell sees the same neighbours it
would see in a whole-image pass.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from .coder import tile_layout
from .memory import release_free_memory
from .tokenizer import Tokenizer

WINDOW = 32  # grid cells per side of a tokenizer window (halo excluded)
IMAGES_PER_BATCH = 32


def _windows(rows: int, cols: int) -> list[tuple[int, int, int, int]]:
    return tile_layout(rows, cols, WINDOW, WINDOW)


def crop_padded(image: Image.Image, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """Pixels [top:bottom, left:right] (H, W, 3) uint8 of an RGB image padded past its right and
    bottom edges as the tokenizer pads (patches.py: the last row and column repeated), cut
    without a copy of the whole image (memory stays bounded for any image size)."""
    box = (left, top, min(right, image.width), min(bottom, image.height))
    whole = box == (0, 0, image.width, image.height) and isinstance(image, Image.Image)
    pixels = np.asarray(image if whole else image.crop(box))
    short = (bottom - top - pixels.shape[0], right - left - pixels.shape[1])
    return np.pad(pixels, ((0, short[0]), (0, short[1]), (0, 0)), mode="edge") if any(short) else pixels


def paste_within(canvas: Image.Image, pixels: np.ndarray, top: int, left: int) -> None:
    """Pixels (h, w, 3) uint8 into an RGB canvas at (top, left), the part past its edges dropped."""
    height, width = min(len(pixels), canvas.height - top), min(pixels.shape[1], canvas.width - left)
    canvas.paste(Image.fromarray(np.ascontiguousarray(pixels[:height, :width]), "RGB"), (left, top))


def window_count(rows: int, cols: int) -> int:
    """How many windows a grid of this shape is cut into (for progress)."""
    return len(_windows(rows, cols))


def image_tokens(tokenizer: Tokenizer, images: Sequence[Image.Image],
                 on_window: Callable[[int], None] | None = None) -> list[torch.Tensor]:
    """RGB images of one size -> their token grids (rows, cols), window by window
    (`on_window(n)`: n more image-windows done)."""
    return _encode_windows(tokenizer, images, on_window, margins=False)[0]


def image_tokens_and_margins(tokenizer: Tokenizer, images: Sequence[Image.Image],
                             on_window: Callable[[int], None] | None = None
                             ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """As `image_tokens`, with each grid's margins (rows, cols, bits) float16: how far each
    bit's latent lies from the other sign (Tokenizer.encode_margins; what rdo.py weighs)."""
    return _encode_windows(tokenizer, images, on_window, margins=True)


def _encode_windows(tokenizer: Tokenizer, images: Sequence[Image.Image], on_window, *, margins: bool):
    p, halo = tokenizer.config.patch_size, tokenizer.grid_radius
    rows, cols = tokenizer.grid_shape(images[0].height, images[0].width)
    grids = torch.empty(len(images), rows, cols, dtype=torch.int64)
    # float16: 2 bytes a bit of a cell (51 MB at 64 Mpx); a margin steers the encoder's choice only
    kept = torch.empty(len(images), rows, cols, tokenizer.config.bits, dtype=torch.float16) if margins else None
    for start in range(0, len(images), IMAGES_PER_BATCH):
        batch = [image if image.mode == "RGB" else image.convert("RGB") for image in images[start : start + IMAGES_PER_BATCH]]
        windows = _windows(rows, cols)
        for r0, r1, c0, c1 in windows:
            h0, h1, w0, w1 = max(0, r0 - halo), min(rows, r1 + halo), max(0, c0 - halo), min(cols, c1 + halo)
            crops = np.stack([crop_padded(image, h0 * p, h1 * p, w0 * p, w1 * p) for image in batch])
            pixels = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
            core = np.s_[:, r0 - h0 : r1 - h0, c0 - w0 : c1 - w0]
            into = np.s_[start : start + len(batch), r0:r1, c0:c1]
            if margins:
                tokens, margin = tokenizer.encode_margins(pixels)
                kept[into] = margin[core].to(torch.float16)
            else:
                tokens = tokenizer.encode_index(pixels)
            grids[into] = tokens[core]
            if len(windows) > 1:
                release_free_memory()
            if on_window is not None:
                on_window(len(batch))
    return list(grids), (list(kept) if margins else None)


def token_images(tokenizer: Tokenizer, grids: Sequence[torch.Tensor], size: tuple[int, int],
                 on_window: Callable[[int], None] | None = None) -> list[Image.Image]:
    """Token grids of one shape -> RGB images of `size` (width, height), window by window, each
    window pasted into its image (`on_window(n)`: n more image-windows done)."""
    p, halo = tokenizer.config.patch_size, tokenizer.grid_radius
    rows, cols = grids[0].shape
    images = []
    for start in range(0, len(grids), IMAGES_PER_BATCH):
        batch = torch.stack(list(grids[start : start + IMAGES_PER_BATCH]))
        canvases = [Image.new("RGB", size) for _ in batch]
        windows = _windows(rows, cols)
        for r0, r1, c0, c1 in windows:
            h0, h1, w0, w1 = max(0, r0 - halo), min(rows, r1 + halo), max(0, c0 - halo), min(cols, c1 + halo)
            pixels = tokenizer.decode_index(batch[:, h0:h1, w0:w1])  # (B, 3, (h1-h0)p, (w1-w0)p)
            core = pixels[:, :, (r0 - h0) * p : (r1 - h0) * p, (c0 - w0) * p : (c1 - w0) * p]
            values = (core * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            for canvas, window in zip(canvases, values):
                paste_within(canvas, window, r0 * p, c0 * p)
            if len(windows) > 1:
                release_free_memory()
            if on_window is not None:
                on_window(len(batch))
        images.extend(canvases)
    return images


BAND_ROWS = 3 * WINDOW  # grid rows of a band of `BasePicture` (a band's halo rows cost (2 * radius) / 96 more work)


class BasePicture:
    """The base picture of one token grid, computed band by band as it is read: what
    `token_images` gives, for an encoder that reads it a tile at a time, without holding the
    whole picture (a 64-megapixel image's would be 256 MB in Pillow). Offers what `crop_padded`
    reads of a Pillow image: `width`, `height` and `crop(box)`. The two bands read last are kept;
    tiles are read in raster order, so each band is computed about once (edge tiles, coded after
    the others, recompute theirs)."""

    def __init__(self, tokenizer: Tokenizer, grid: torch.Tensor, size: tuple[int, int],
                 on_window: Callable[[int], None] | None = None) -> None:
        self.tokenizer, self.grid, self.on_window = tokenizer, grid, on_window
        self.width, self.height = size
        self.counted: set[int] = set()  # bands whose windows progress has heard of (once each)
        self.bands: OrderedDict[int, np.ndarray] = OrderedDict()  # band index -> pixels (rows, width, 3) uint8

    def _band(self, index: int) -> np.ndarray:
        if index in self.bands:
            self.bands.move_to_end(index)
            return self.bands[index]
        p, halo = self.tokenizer.config.patch_size, self.tokenizer.grid_radius
        rows = self.grid.shape[0]
        r0, r1 = index * BAND_ROWS, min(rows, (index + 1) * BAND_ROWS)
        h0, h1 = max(0, r0 - halo), min(rows, r1 + halo)
        picture = token_images(self.tokenizer, [self.grid[h0:h1]], (self.width, (h1 - h0) * p))[0]
        top = (r0 - h0) * p
        self.bands[index] = np.asarray(picture)[top : top + min((r1 - r0) * p, self.height - r0 * p)].copy()
        if len(self.bands) > 2:
            self.bands.popitem(last=False)
        if self.on_window is not None and index not in self.counted:  # BAND_ROWS is a multiple of WINDOW:
            self.counted.add(index)  # the bands' windows add up to the whole picture's
            self.on_window(window_count(r1 - r0, self.grid.shape[1]))
        return self.bands[index]

    def crop(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """Pixels (h, w, 3) uint8 of box (left, top, right, bottom), within the picture: what
        `np.asarray` makes of a Pillow image's crop (no round trip through Pillow)."""
        left, top, right, bottom = box
        band_px = BAND_ROWS * self.tokenizer.config.patch_size
        parts = []
        for index in range(top // band_px, (bottom - 1) // band_px + 1):
            start = index * band_px
            parts.append(self._band(index)[max(top, start) - start : min(bottom, start + band_px) - start, left:right])
        return np.concatenate(parts) if len(parts) > 1 else parts[0]


def base_pictures(tokenizer: Tokenizer, grids: Sequence[torch.Tensor], size: tuple[int, int],
                  on_window: Callable[[int], None] | None = None) -> list:
    """What `token_images` gives, for reading by `crop_padded`: whole pictures for grids of at
    most BAND_ROWS rows (the same pixels as ever), `BasePicture`s computed band by band for taller
    ones (their pixels may differ from a whole pass's in the last float bits: what an encoder reads)."""
    if grids[0].shape[0] <= BAND_ROWS:
        return token_images(tokenizer, grids, size, on_window)
    return [BasePicture(tokenizer, grid, size, on_window) for grid in grids]
