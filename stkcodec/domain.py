"""Whether stkc serves an image: its file against WebP's at the same PSNR.

The shipped models learnt SuperTuxKart frames. On other images (photos, screenshots, line art)
they spend more bytes than WebP for the same picture quality, and no figure of the model's own
(bits per token, the base layer's error) tells those images from game frames reliably: a photo
costs about as many bits per token as a busy frame, a logo's base picture is as sharp as a
frame's. So the check asks the question a user would: WebP (method 4, a few ms a frame) is swept
for the PSNR of stkc's own reconstruction, and an image is flagged when WebP would need clearly
fewer bytes (RATIO_LIMIT), or when stkc's picture is far worse than any training frame's at that
level while WebP's file is sharper (`Limits`; docs/unusual-images.json). Game frames of tracks the
model never saw are coded less well than those it trained on (on the validation tracks about 0.83x
WebP's bytes at level 4, on training frames 0.57x), and a few of them cost more than WebP's: the
limit sits above nearly all of them, and a frame flagged is one WebP does code better.

Below WebP's lowest setting its curve is extended by the slope of its two lowest settings
(at most EXTEND_DB, down to half its smallest file): a file that costs more than WebP's smallest and looks worse loses either way.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .imageio import open_unlimited
from .metrics import psnr_rgb
from .rd import bytes_at_psnr

WEBP_QUALITIES = (0, 5, 10, 20, 30, 45, 60, 75, 90, 100)
WEBP_METHOD = 4
RATIO_LIMIT = 1.5  # stkc's bytes over WebP's at equal PSNR above which an image is flagged
MAX_PIXELS = 16_000_000  # larger images are not compared: WebP's copies would outgrow the codec's memory
MAX_SIDE = 16383  # WebP's largest side
EXTEND_DB = 4.0  # below WebP's lowest setting its curve is extended by at most this many dB
EXTEND_FLOOR = 0.5  # ... and to no less than this fraction of its smallest file


@dataclass(frozen=True)
class Comparison:
    """stkc's file against WebP at the PSNR of stkc's reconstruction."""

    stkc_bytes: int
    psnr: float  # stkc's, dB (RGB)
    webp_bytes: float  # WebP's at that PSNR: interpolated, or extended below its lowest setting; inf if out of reach
    nearest: tuple[int, int, float]  # a real WebP file near it: (quality, bytes, PSNR)

    @property
    def ratio(self) -> float:
        """stkc's bytes over WebP's at equal PSNR (0 when WebP cannot reach stkc's PSNR)."""
        return self.stkc_bytes / self.webp_bytes

    def record(self) -> dict:
        """What `stkc compress --json` reports of it."""
        quality, size, psnr = self.nearest
        return {"psnr": round(self.psnr, 3),
                "webp_bytes_at_psnr": None if math.isinf(self.webp_bytes) else round(self.webp_bytes),
                "ratio_to_webp": round(self.ratio, 4),
                "webp_nearest": {"quality": quality, "bytes": size, "psnr": round(psnr, 3)}}


@dataclass(frozen=True)
class Limits:
    """When an image is flagged: its file costs more than `ratio` times WebP's at equal PSNR, or
    its PSNR at level k is below `psnr[k - 1]` while WebP's nearest file is sharper than that (a
    picture far worse than any game frame's at that level: text and line art at level 1). The
    floors come from training frames (benchmarks/unusual_images.py, models/index.json); a model
    without them has the ratio alone."""

    psnr: tuple[float, ...] | None = None
    ratio: float | None = None  # None: RATIO_LIMIT

    def reasons(self, level: int, comparison: Comparison) -> list[str]:
        """Why an image coded at `level` is flagged: "ratio", "psnr", both or neither."""
        reasons = ["ratio"] if comparison.ratio > (RATIO_LIMIT if self.ratio is None else self.ratio) else []
        if self.psnr is not None and comparison.psnr < self.psnr[level - 1] < comparison.nearest[2]:
            reasons.append("psnr")
        return reasons

    def message(self, name: str, level: int, comparison: Comparison) -> str | None:
        """The warning's one line, or None when the image is not flagged."""
        reasons = self.reasons(level, comparison)
        if not reasons:
            return None
        quality, size, psnr = comparison.nearest
        webp = f"WebP -q {quality}: {size:,} B at {psnr:.1f} dB"
        if "ratio" in reasons:
            how = f"{comparison.ratio:.2f}x what WebP needs for that PSNR ({webp})"
        else:
            how = f"a poorer picture than any game frame's at level {level} (at least {self.psnr[level - 1]:.1f} dB; {webp})"
        return (f"{name}: {comparison.stkc_bytes:,} B at {comparison.psnr:.1f} dB, {how}: unlike the SuperTuxKart "
                "frames the model codes well, WebP serves this image better")


def comparable(width: int, height: int) -> bool:
    """Whether an image of this size is compared with WebP (at most MAX_PIXELS, sides WebP can code)."""
    return width * height <= MAX_PIXELS and max(width, height) <= MAX_SIDE


def _webp(image: Image.Image, reference: np.ndarray, quality: int) -> tuple[int, float]:
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", quality=quality, method=WEBP_METHOD)
    buffer.seek(0)
    with open_unlimited(buffer) as decoded:
        return buffer.tell(), psnr_rgb(reference, np.asarray(decoded.convert("RGB")))


def compare_with_webp(reference: np.ndarray, stkc_bytes: int, psnr: float) -> Comparison:
    """The image's pixels (H, W, 3) uint8 and stkc's file size and PSNR -> the comparison.
    Bisects WEBP_QUALITIES (WebP's PSNR rises with its quality): about five encodes."""
    image = Image.fromarray(reference, "RGB")
    points: dict[int, tuple[int, float]] = {}

    def point(k: int) -> tuple[int, float]:
        if k not in points:
            points[k] = _webp(image, reference, WEBP_QUALITIES[k])
        return points[k]

    last = len(WEBP_QUALITIES) - 1
    if point(0)[1] >= psnr:  # even WebP's smallest file is as sharp: extend its curve below it
        (b0, p0), (b1, p1) = point(0), point(1)
        slope = (math.log(b1) - math.log(b0)) / (p1 - p0) if p1 > p0 else 0.0
        webp = max(b0 * math.exp(-slope * min(p0 - psnr, EXTEND_DB)), b0 * EXTEND_FLOOR)
        return Comparison(stkc_bytes, psnr, webp, (WEBP_QUALITIES[0], b0, p0))
    if point(last)[1] < psnr:
        return Comparison(stkc_bytes, psnr, math.inf, (WEBP_QUALITIES[last], *point(last)))
    low, high = 0, last  # point(low) below psnr, point(high) at or above
    while high - low > 1:
        middle = (low + high) // 2
        if point(middle)[1] >= psnr:
            high = middle
        else:
            low = middle
    sizes, psnrs = zip(*points.values())
    webp = bytes_at_psnr(psnr, psnrs, sizes)  # linear in log-bytes between the settings around it
    return Comparison(stkc_bytes, psnr, webp, (WEBP_QUALITIES[high], *point(high)))


def compare(image: Image.Image, encoded) -> Comparison:
    """An image and its `codec.Encoded` (with pixels) -> the comparison, in RGB."""
    reference = np.asarray(image.convert("RGB"))
    return compare_with_webp(reference, len(encoded.data), psnr_rgb(reference, encoded.pixels))
