"""Rate-distortion maths: the bytes a codec needs at a given PSNR, and Bjøntegaard's delta rate."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def bytes_at_psnr(target: float, psnrs: Sequence[float], sizes: Sequence[float]) -> float | None:
    """The bytes a codec's sweep needs to reach `target` dB: linear in log-bytes between settings.

    Points are sorted by PSNR and each is given the fewest bytes of any setting reaching at least
    its PSNR (a higher quality can be smaller, e.g. JPEG's lowest settings), which makes the curve
    monotone. None when `target` lies outside the sweep's PSNR range.
    """
    psnr = np.asarray(psnrs, dtype=np.float64)
    log_bytes = np.log(np.asarray(sizes, dtype=np.float64))
    keep = np.isfinite(psnr)
    psnr, log_bytes = psnr[keep], log_bytes[keep]
    if not len(psnr) or not math.isfinite(target) or not psnr.min() <= target <= psnr.max():
        return None
    order = np.argsort(psnr, kind="stable")
    psnr, log_bytes = psnr[order], np.minimum.accumulate(log_bytes[order][::-1])[::-1]
    psnr, first = np.unique(psnr, return_index=True)  # after the running minimum the first of ties is the cheapest
    return float(np.exp(np.interp(target, psnr, log_bytes[first])))


def bd_rate(anchor_rates: Sequence[float], anchor_psnrs: Sequence[float],
            test_rates: Sequence[float], test_psnrs: Sequence[float]) -> float | None:
    """Bjøntegaard delta rate in percent of `test` against `anchor` (negative: test needs fewer bits).

    Cubic fits of log-rate against PSNR, integrated over the PSNR interval both curves cover.
    None when a curve has fewer than four distinct points or the intervals do not overlap.
    """
    curves = []
    for rates, psnrs in ((anchor_rates, anchor_psnrs), (test_rates, test_psnrs)):
        rate, psnr = np.asarray(rates, dtype=np.float64), np.asarray(psnrs, dtype=np.float64)
        keep = np.isfinite(psnr) & np.isfinite(rate) & (rate > 0)
        if len(np.unique(psnr[keep])) < 4:
            return None
        curves.append((np.log(rate[keep]), psnr[keep]))
    low = max(curves[0][1].min(), curves[1][1].min())
    high = min(curves[0][1].max(), curves[1][1].max())
    if high <= low:
        return None
    integrals = []
    for log_rate, psnr in curves:
        antiderivative = np.polyint(np.polyfit(psnr, log_rate, 3))
        integrals.append(np.polyval(antiderivative, high) - np.polyval(antiderivative, low))
    return float((math.exp((integrals[1] - integrals[0]) / (high - low)) - 1) * 100)
