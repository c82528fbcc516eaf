"""Sampling new images: the prior draws token grids, the tokenizer turns them into pixels."""

from __future__ import annotations

import math

import torch
from PIL import Image

from .windows import token_images
from .zoo import CodecModel


def generate_images(model: CodecModel, count: int, *, seed: int = 0, temperature: float = 1.0,
                    top_k: int | None = None, on_row=None) -> list[Image.Image]:
    """`count` frames of one tile (150×100 with the default model). Same seed, same images."""
    rows, cols = model.tile
    generator = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        grids = model.prior.sample(count, rows, cols, generator=generator, temperature=temperature,
                                   top_k=top_k, on_row=on_row)
    p = model.tokenizer.config.patch_size
    return token_images(model.tokenizer, list(grids), (cols * p, rows * p))


def contact_sheet(images: list[Image.Image], *, columns: int | None = None, gap: int = 2) -> Image.Image:
    """The images in a grid on a dark background, row by row."""
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    width, height = images[0].size
    sheet = Image.new("RGB", (columns * (width + gap) + gap, rows * (height + gap) + gap), (24, 24, 24))
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        sheet.paste(image, (gap + column * (width + gap), gap + row * (height + gap)))
    return sheet
