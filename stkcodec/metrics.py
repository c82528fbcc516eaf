"""Image quality and rate measures shared by training, the codec and the benchmark."""

from __future__ import annotations

import torch


def psnr_db(reference: torch.Tensor, test: torch.Tensor, *, peak: float = 1.0) -> torch.Tensor:
    """Per-image PSNR (B,) of two (B, C, H, W) tensors on the same scale (peak 1 or 255)."""
    mse = (reference.double() - test.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(peak**2 / mse.clamp_min(1e-12))


def quantize_8bit(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> the [0, 1] floats of the nearest 8-bit levels (what a PNG would hold)."""
    return (images.clamp(0, 1) * 255).round() / 255
