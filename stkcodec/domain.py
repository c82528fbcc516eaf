"""Whether an image is like the game frames the model learnt, and WebP's file at its PSNR.

The shipped models learnt SuperTuxKart frames. On other images (screenshots, diagrams, logos,
line art, text, photos) they spend more bytes than WebP for the same picture quality. Two
signals of the image itself tell most of them from frames, whatever level they are coded at
(`Limits`): the share of flat colour (`flat_share`: most of a screenshot or logo, little of a
rendered frame, losslessly rendered or not), and how far the base picture's PSNR falls below
what training frames reach at the same bits per token (`Band`: text, line art, icons and
screenshots cost few bits and still come back poor). Photographs pass both; no statistic
measured tells them from frames (benchmarks/domain_probe.py). WebP's ratio at equal PSNR is
reported, not weighed: frames of unseen tracks reach 2.6x WebP's bytes (docs/unusual-images.json).
WebP (method 4, a few ms a frame) is swept for the PSNR of stkc's own reconstruction.

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
FLAT_LIMIT = 0.45  # flagged above this share of flat colour (flat_share)
Z_LIMIT = -3.4  # flagged when the base picture lies this many standard deviations below the Band
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
class Band:
    """Where training frames' base layers lie: their base picture's PSNR (dB) as a polynomial in
    the base layer's bits per token (`fit`, numpy.polyval's order), and the standard deviation of
    their PSNRs about it (`sd`). Busy frames cost more bits and come back poorer; text, line art,
    screenshots and icons cost few bits and still come back poor (benchmarks/unusual_images.py)."""

    fit: tuple[float, ...]
    sd: float

    def z(self, bits_per_token: float, psnr: float) -> float:
        """How many standard deviations the base picture's PSNR lies above the training frames'
        at those bits (below: negative)."""
        return (psnr - float(np.polyval(self.fit, bits_per_token))) / self.sd


@dataclass(frozen=True)
class Signals:
    """What tells an image from the game frames the model learnt, whatever level it is coded at."""

    flat: float  # share of the pixels whose 3x3 neighbourhood is one colour (flat_share)
    z: float | None  # the base layer's Band.z; None for a model without a band

    def record(self) -> dict:
        """What `stkc compress --json` reports of them."""
        return {"flat_share": round(self.flat, 4), "base_z": None if self.z is None else round(self.z, 2)}


def flat_share(pixels: np.ndarray, rows_at_once: int = 512) -> float:
    """(H, W, 3) uint8 -> the share of the pixels not on the border whose 3x3 neighbourhood is
    exactly one colour: most of a screenshot, diagram, logo or line art; at most 0.36 of a training
    frame (flat sky) and 0.03 of a valid frame. Works through the image in bands of rows."""
    height, width = pixels.shape[:2]
    if height < 3 or width < 3:
        return 0.0
    flat = 0
    for top in range(0, height - 2, rows_at_once):
        band = pixels[top : min(height, top + rows_at_once + 2)].astype(np.int32)
        key = (band[..., 0] << 16) | (band[..., 1] << 8) | band[..., 2]
        centre = key[1:-1, 1:-1]
        same = np.ones(centre.shape, bool)
        for dy in range(3):
            for dx in range(3):
                same &= key[dy : dy + centre.shape[0], dx : dx + centre.shape[1]] == centre
        flat += int(same.sum())
    return flat / ((height - 2) * (width - 2))


@dataclass(frozen=True)
class Limits:
    """When an image is flagged as unlike the game frames the model learnt: more than FLAT_LIMIT
    of it is flat colour ("flat"), or its base picture is more than -Z_LIMIT standard deviations
    poorer than training frames' at its bits per token ("base"; a model without a `band` has the
    first alone). Both are the image's own, not the level's: an image is flagged at every level
    or at none. No frame of the validation tracks is flagged (docs/unusual-images.json); WebP's
    figures at equal PSNR are reported, not weighed (frames of unseen tracks range up to 3x)."""

    band: Band | None = None

    def signals(self, reference: np.ndarray, base: np.ndarray, base_payload_bytes: int, tokens: int) -> Signals:
        """The image's pixels and its base picture (H, W, 3) uint8, the base layer's payload size
        and token count -> its Signals."""
        z = None
        if self.band is not None:
            z = self.band.z(8 * base_payload_bytes / tokens, psnr_rgb(reference, base))
        return Signals(flat_share(reference), z)

    def reasons(self, signals: Signals) -> list[str]:
        """Why an image is flagged: "flat", "base", both or neither."""
        reasons = ["flat"] if signals.flat > FLAT_LIMIT else []
        if signals.z is not None and signals.z < Z_LIMIT:
            reasons.append("base")
        return reasons

    def message(self, name: str, level: int, comparison: Comparison, signals: Signals) -> str | None:
        """The warning's one line, or None when the image is not flagged."""
        reasons = self.reasons(signals)
        if not reasons:
            return None
        why = []
        if "flat" in reasons:
            why.append(f"{signals.flat:.0%} of it is flat colour, as in screenshots, diagrams and logos")
        if "base" in reasons:
            why.append(f"its base layer comes back {-signals.z * self.band.sd:.1f} dB poorer than game frames' at "
                       "its bits, as text and line art do")
        quality, size, psnr = comparison.nearest
        if comparison.ratio > 1:
            webp = (f"WebP needs {comparison.ratio:.2f}x fewer bytes for that PSNR "
                    f"(WebP -q {quality}: {size:,} B at {psnr:.1f} dB)")
        else:
            webp = f"compare WebP -q {quality}: {size:,} B at {psnr:.1f} dB"
        return (f"{name}: unlike the SuperTuxKart frames the model learnt ({'; '.join(why)}): level {level} "
                f"gives {comparison.stkc_bytes:,} B at {comparison.psnr:.1f} dB, {webp}")


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


def assess(image: Image.Image, encoded, limits: Limits, header, *, compare: bool = False
           ) -> tuple[Comparison | None, Signals]:
    """An image, its `codec.Encoded` (with pixels and base) and the file's parsed header -> the
    comparison with WebP and the image's Signals, in RGB. The comparison (about five WebP encodes,
    as long as a tenth of the frame's coding) decides nothing: it is made for a flagged image,
    whose warning gives WebP's figures, or when `compare` asks for it (a report); else None."""
    reference = np.asarray(image.convert("RGB"))
    signals = limits.signals(reference, encoded.base, header.payload_bytes, math.prod(header.grid))
    comparison = None
    if compare or limits.reasons(signals):
        comparison = compare_with_webp(reference, len(encoded.data), psnr_rgb(reference, encoded.pixels))
    return comparison, signals
