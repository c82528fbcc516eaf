"""Cutting images into the p×p patches the tokenizer codes: one padding rule for every user."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def pad_to_patches(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, ceil(H/p)*p, ceil(W/p)*p): the last row and column repeated, so a
    partial patch at the edge looks like its neighbours rather than like black."""
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % patch_size, -width % patch_size
    if pad_h or pad_w:
        images = F.pad(images, (0, pad_w, 0, pad_h), mode="replicate")
    return images


def patch_vectors(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, h, w, 3*p*p): each patch's pixels, padded as the tokenizer pads."""
    padded = pad_to_patches(images, patch_size)
    h, w = padded.shape[-2] // patch_size, padded.shape[-1] // patch_size
    columns = F.unfold(padded, kernel_size=patch_size, stride=patch_size)  # (B, 3*p*p, h*w)
    return columns.transpose(1, 2).reshape(len(images), h, w, -1)
