"""Image quality and rate measures shared by training, the codec and the benchmark."""

from __future__ import annotations

import torch


PSNR_CAP = 100.0  # dB for identical images: keeps means finite and the JSON valid


def psnr_from_mse(mse: torch.Tensor, *, peak: float = 1.0) -> torch.Tensor:
    """PSNR in dB of a mean squared error on a scale whose peak is `peak` (1 or 255), at most
    `PSNR_CAP` (a zero error)."""
    return 10 * torch.log10(peak**2 / mse.clamp_min(peak**2 * 10 ** (-PSNR_CAP / 10)))


def psnr_db(reference: torch.Tensor, test: torch.Tensor, *, peak: float = 1.0) -> torch.Tensor:
    """Per-image PSNR (B,) of two (B, C, H, W) tensors on the same scale (peak 1 or 255)."""
    mse = (reference.double() - test.double()).pow(2).flatten(1).mean(1)
    return psnr_from_mse(mse, peak=peak)


def quantize_8bit(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> the [0, 1] floats of the nearest 8-bit levels (what a PNG would hold)."""
    return (images.clamp(0, 1) * 255).round() / 255
