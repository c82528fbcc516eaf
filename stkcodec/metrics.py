"""Image quality measures shared by training, the codec and the benchmark.

The benchmark's follow CompressAI's bench conventions on 0..255 RGB: PSNR per image then the
mean, and MS-SSIM (Wang et al. 2003: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, the five
standard scale weights). A 150×100 frame only has room for four scales with an 11-pixel window
(100 → 50 → 25 → 12 → 6 rows), so `ms_ssim_rgb` uses as many scales as fit and renormalises
their weights to sum to 1.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

PEAK = 255.0  # of the benchmark's 8-bit images
WINDOW, SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


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


def psnr_rgb(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB of two (H, W, 3) uint8 images on 0..255, at most `PSNR_CAP`."""
    mse = np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2)
    return float(psnr_from_mse(torch.tensor(mse, dtype=torch.float64), peak=PEAK))


def ms_ssim_scales(height: int, width: int) -> int:
    """How many MS-SSIM scales fit: each halves the image and must stay at least WINDOW wide."""
    scales, side = 0, min(height, width)
    while scales < len(MS_SSIM_WEIGHTS) and side >= WINDOW:
        scales, side = scales + 1, side // 2
    return scales


@functools.lru_cache(maxsize=32)
def _blur_matrix(size: int) -> np.ndarray:
    # A banded matrix turns the valid-mode Gaussian filter into one BLAS product per axis,
    # several times faster than shifting and adding 11 slices.
    offsets = np.arange(WINDOW) - WINDOW // 2
    kernel = np.exp(-(offsets**2) / (2 * SIGMA**2))
    kernel /= kernel.sum()
    matrix = np.zeros((size - WINDOW + 1, size))
    for row in range(size - WINDOW + 1):
        matrix[row, row : row + WINDOW] = kernel
    return matrix


def _blur(maps: np.ndarray) -> np.ndarray:
    return _blur_matrix(maps.shape[-2]) @ maps @ _blur_matrix(maps.shape[-1]).T


def _ssim_terms(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean SSIM and mean contrast-structure term of (C, H, W) float images."""
    c1, c2 = (K1 * PEAK) ** 2, (K2 * PEAK) ** 2
    mu_x, mu_y, xx, yy, xy = _blur(np.stack([x, y, x * x, y * y, x * y]))
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (luminance * cs).mean(axis=(-2, -1)), cs.mean(axis=(-2, -1))


def ms_ssim_rgb(reference: np.ndarray, test: np.ndarray) -> float:
    """MS-SSIM of two (H, W, 3) uint8 images on 0..255, averaged over the channels.

    Uses as many of the five scales as fit (see `ms_ssim_scales`) with their weights renormalised;
    NaN when the image is smaller than one window. Downsampling is 2×2 averaging (an odd last row
    or column is dropped); negative terms are clipped to 0 as pytorch_msssim does.
    """
    scales = ms_ssim_scales(*reference.shape[:2])
    if scales == 0:
        return math.nan
    weights = np.array(MS_SSIM_WEIGHTS[:scales]) / sum(MS_SSIM_WEIGHTS[:scales])
    x = reference.astype(np.float64).transpose(2, 0, 1)
    y = test.astype(np.float64).transpose(2, 0, 1)
    terms = []
    for scale in range(scales):
        ssim, cs = _ssim_terms(x, y)
        terms.append(np.maximum(ssim if scale == scales - 1 else cs, 0))
        if scale < scales - 1:
            h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
            x, y = (a[:, :h, :w].reshape(a.shape[0], h // 2, 2, w // 2, 2).mean(axis=(2, 4)) for a in (x, y))
    per_channel = np.prod(np.stack(terms) ** weights[:, None], axis=0)
    return float(per_channel.mean())
