"""`stkc bench`: rate-distortion and speed of stkc against JPEG, WebP, AVIF and JPEG XL.

Every classic codec runs through Pillow, in memory, swept over its quality setting with options
that favour it (stated in `ClassicCodec.settings`); stkc runs at its single operating point through
the `Codec` API. Rates come from the real encoded bytes, headers and containers included.

Metrics follow CompressAI's bench conventions on 0..255 RGB: PSNR per image then the mean, and
MS-SSIM (Wang et al. 2003: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, the five standard scale
weights). A 150×100 frame only has room for four scales with an 11-pixel window (100 → 50 → 25 → 12
→ 6 rows), so `ms_ssim_rgb` uses as many scales as fit and renormalises their weights to sum to 1.
"""

from __future__ import annotations

import functools
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, features

from .data import find_frames  # noqa: F401  (cli_codec takes it from here)
from .errors import BadInputError

PEAK = 255.0
PSNR_CAP = 100.0  # dB for identical images: keeps means finite and the JSON valid
WINDOW, SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
STKC_BATCH = 32
RESULT_KEYS = ("quality", "bpp", "bytes", "psnr-rgb", "ms-ssim-rgb", "encoding_time_ms", "decoding_time_ms")


@dataclass(frozen=True)
class ClassicCodec:
    """A Pillow codec with the options it is benchmarked at and its quality sweep."""

    name: str
    label: str
    pillow_format: str
    qualities: tuple[int, ...]
    options: dict = field(default_factory=dict)
    described: str = ""

    @property
    def settings(self) -> str:
        """The options in words, for the output: a reader should know what was compared."""
        return f"{self.described}, quality {self.qualities[0]}..{self.qualities[-1]} ({len(self.qualities)} settings)"


CLASSIC = {
    codec.name: codec
    for codec in (
        # Very low qualities matter: stkc files are a few hundred bytes, JPEG's floor is ~450.
        ClassicCodec("jpeg", "JPEG", "JPEG", (1, 3, 5, 8, 12, 18, 25, 35, 50, 65, 80, 95),
                     {"optimize": True, "subsampling": 2}, "optimize=True (Huffman tables), 4:2:0"),
        # WebP and AVIF in steps of 1 up to 10, where stkc's files lie: interpolating across a wide
        # step would overstate their bytes there (PSNR is concave in log-bytes).
        ClassicCodec("webp", "WebP", "WEBP", (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 15, 20, 30, 40, 50, 65, 80, 95),
                     {"method": 6}, "method=6 (slowest, smallest)"),
        # speed 6 costs ~15 ms a frame; speed 4 triples that for under 1% fewer bytes.
        ClassicCodec("avif", "AVIF", "AVIF", (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 15, 20, 30, 40, 50, 60, 75, 90),
                     {"speed": 6, "subsampling": "4:2:0", "max_threads": 1}, "speed=6, 4:2:0, one thread"),
        ClassicCodec("jxl", "JPEG XL", "JXL", (0, 5, 10, 15, 20, 30, 40, 50, 65, 80, 95),
                     {"effort": 7, "num_threads": 1, "use_container": False},
                     "effort=7, bare codestream, one thread"),
    )
}
ALL_CODECS = (*CLASSIC, "stkc")
LABELS = {**{name: codec.label for name, codec in CLASSIC.items()}, "stkc": "stkc"}


def codec_available(name: str) -> tuple[bool, str | None]:
    """Whether this Pillow can encode `name`, and if not, why (a line for the user)."""
    if name == "jxl":
        try:
            import pillow_jxl  # noqa: F401  (importing registers the JXL format with Pillow)
        except ImportError:
            return False, "pillow-jxl-plugin is not installed (pip install 'stkc[jxl]')"
        return True, None
    feature = {"jpeg": "jpg", "webp": "webp", "avif": "avif"}[name]
    try:
        present = bool(features.check(feature))
    except (ValueError, KeyError):  # an older Pillow that does not know the feature at all
        present = False
    return (True, None) if present else (False, f"this Pillow ({features.version('PIL')}) lacks {feature} support")


def library_version(name: str) -> str | None:
    """The codec library's version, so results can be traced to what produced them."""
    if name == "jxl":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"pillow-jxl-plugin {version('pillow-jxl-plugin')}"
        except PackageNotFoundError:
            return None
    try:
        if name == "jpeg" and features.check_feature("libjpeg_turbo"):
            return f"libjpeg-turbo {features.version_feature('libjpeg_turbo')}"
        found = features.version({"jpeg": "jpg", "webp": "webp", "avif": "avif"}[name])
    except (ValueError, KeyError):
        return None
    return f"lib{name} {found}" if found else None


# --- metrics ------------------------------------------------------------------------------------


def psnr_rgb(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB of two (H, W, 3) uint8 images on 0..255, capped at `PSNR_CAP`."""
    mse = np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2)
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * math.log10(PEAK**2 / mse))


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


# --- rate comparisons ---------------------------------------------------------------------------


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


# --- runners ------------------------------------------------------------------------------------


@dataclass
class Frame:
    """One benchmark image: its name, pixels, and the size of the file it came from."""

    name: str
    image: Image.Image
    pixels: np.ndarray
    source_bytes: int
    source_format: str


@dataclass
class Sweep:
    """Per-setting, per-image measurements of one codec: arrays of shape (settings, images)."""

    codec: str
    qualities: list
    bytes: np.ndarray
    psnr: np.ndarray
    ms_ssim: np.ndarray
    encode_ms: np.ndarray
    decode_ms: np.ndarray
    pixels: np.ndarray  # (images,) pixel counts

    @classmethod
    def empty(cls, codec: str, qualities: list, frames: Sequence[Frame]) -> "Sweep":
        shape = (len(qualities), len(frames))
        return cls(codec, list(qualities), *(np.full(shape, np.nan) for _ in range(5)),
                   np.array([f.pixels.shape[0] * f.pixels.shape[1] for f in frames], dtype=np.float64))

    def measure(self, setting: int, image: int, frame: Frame, data: bytes, decoded: Image.Image,
                encode_ms: float, decode_ms: float) -> None:
        if decoded.size != frame.image.size:
            raise BadInputError(f"{frame.name}: {self.codec} decoded {decoded.size}, expected {frame.image.size}")
        result = np.asarray(decoded.convert("RGB"))
        self.bytes[setting, image] = len(data)
        self.psnr[setting, image] = psnr_rgb(frame.pixels, result)
        self.ms_ssim[setting, image] = ms_ssim_rgb(frame.pixels, result)
        self.encode_ms[setting, image], self.decode_ms[setting, image] = encode_ms, decode_ms

    @property
    def bpp(self) -> np.ndarray:
        return 8 * self.bytes / self.pixels

    def mean_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean bpp and mean PSNR per setting: the curve BD-rates compare."""
        return np.nanmean(self.bpp, axis=1), np.nanmean(self.psnr, axis=1)

    def results(self) -> dict:
        """Means over images per setting, in CompressAI's bench JSON layout."""
        def means(values: np.ndarray, digits: int) -> list:
            return [_json_number(np.nanmean(row) if np.isfinite(row).any() else math.nan, digits) for row in values]

        return dict(zip(RESULT_KEYS, (self.qualities, means(self.bpp, 4), means(self.bytes, 1), means(self.psnr, 3),
                                      means(self.ms_ssim, 5), means(self.encode_ms, 3), means(self.decode_ms, 3))))


def _json_number(value: float, digits: int) -> float | None:
    return round(float(value), digits) if math.isfinite(value) else None


def load_frames(paths: Sequence[Path], *, max_pixels: int = 64 * 2**20) -> list[Frame]:
    """Decode each file to RGB once; the bench never touches the files again."""
    from .imageio import open_image

    frames = []
    for path in paths:
        pixels = np.asarray(open_image(path, max_pixels=max_pixels))
        # A fresh image without format or filename: pillow-jxl would otherwise transcode a JPEG
        # source losslessly instead of encoding the pixels.
        frames.append(Frame(str(path), Image.fromarray(pixels, "RGB"), pixels, Path(path).stat().st_size,
                            Path(path).suffix.lstrip(".").upper()))
    return frames


def steps(codecs: Sequence[str], frames: Sequence[Frame]) -> int:
    """Progress units of a run: one per image and setting of every available codec."""
    per_image = sum(len(CLASSIC[c].qualities) for c in codecs if c in CLASSIC and codec_available(c)[0])
    return len(frames) * (per_image + ("stkc" in codecs))


def run_classic(codec: ClassicCodec, frames: Sequence[Frame], on_step: Callable[[int], None] = lambda n: None) -> Sweep:
    """Encode and decode every frame at every quality, in memory. Raises OSError/ValueError when
    the encoder refuses (the caller reports the codec as unavailable)."""
    sweep = Sweep.empty(codec.name, list(codec.qualities), frames)
    for image_index, frame in enumerate(frames):
        for setting, quality in enumerate(codec.qualities):
            buffer = io.BytesIO()
            start = time.perf_counter()
            frame.image.save(buffer, format=codec.pillow_format, quality=quality, **codec.options)
            encoded = time.perf_counter()
            data = buffer.getvalue()
            with Image.open(io.BytesIO(data)) as decoded:
                decoded.load()
                finished = time.perf_counter()
                sweep.measure(setting, image_index, frame, data, decoded, 1000 * (encoded - start),
                              1000 * (finished - encoded))
            on_step(1)
    return sweep


def run_stkc(codec, frames: Sequence[Frame], on_step: Callable[[int], None] = lambda n: None) -> Sweep:
    """stkc's one operating point through `Codec.compress_many`/`decompress_many`, batch by batch;
    each image is charged its batch's time divided by the batch size."""
    sweep = Sweep.empty("stkc", [None], frames)
    if frames:  # warm up: the first call pays one-off costs (allocations, lazy set-up) no file would repeat
        codec.decompress_many(codec.compress_many([frames[0].image]))
    for start in range(0, len(frames), STKC_BATCH):
        batch = frames[start : start + STKC_BATCH]
        begin = time.perf_counter()
        files = codec.compress_many([frame.image for frame in batch])
        encoded = time.perf_counter()
        images = codec.decompress_many(files, [frame.name for frame in batch])
        finished = time.perf_counter()
        for offset, (frame, data, image) in enumerate(zip(batch, files, images)):
            sweep.measure(0, start + offset, frame, data, image, 1000 * (encoded - begin) / len(batch),
                          1000 * (finished - encoded) / len(batch))
        on_step(len(batch))
    return sweep


def compare_to_stkc(stkc: Sweep, other: Sweep) -> dict:
    """Per image, the bytes `other` needs to match stkc's PSNR, and stkc's share of them; images
    where stkc's PSNR lies outside `other`'s sweep are excluded and counted."""
    ratios, below = [], 0
    for image in range(stkc.bytes.shape[1]):
        target, psnrs = stkc.psnr[0, image], other.psnr[:, image]
        needed = bytes_at_psnr(target, psnrs, other.bytes[:, image])
        below += int(needed is None and target < np.nanmin(psnrs))
        ratios.append(None if needed is None else float(stkc.bytes[0, image] / needed))
    kept = [ratio for ratio in ratios if ratio is not None]
    excluded = len(ratios) - len(kept)
    return {"mean_ratio": _json_number(_mean(np.array(kept)), 4), "images": len(kept), "excluded": excluded,
            "excluded_below": below, "excluded_above": excluded - below,
            "per_image": [None if ratio is None else round(ratio, 4) for ratio in ratios]}


def compare_to_source(stkc: Sweep, frames: Sequence[Frame]) -> dict:
    """stkc's file size against each source file's own (a PNG or a JPEG as it was stored)."""
    sizes = np.array([frame.source_bytes for frame in frames], dtype=np.float64)
    return {"mean_ratio": _json_number(_mean(stkc.bytes[0] / sizes), 5), "images": len(frames), "excluded": 0,
            "formats": sorted({frame.source_format for frame in frames}),
            "mean_source_bytes": _json_number(_mean(sizes), 1)}


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _classic_sweep(codec: ClassicCodec, frames: Sequence[Frame],
                   on_step: Callable[[int], None]) -> tuple[Sweep | None, str | None]:
    """A classic codec's sweep, or why there is none: a missing or refusing encoder never fails the bench."""
    available, reason = codec_available(codec.name)
    if not available:
        return None, reason
    done = [0]

    def counted(n: int) -> None:
        done[0] += n
        on_step(n)

    try:
        return run_classic(codec, frames, counted), None
    except (OSError, ValueError, KeyError, NotImplementedError) as error:
        on_step(len(frames) * len(codec.qualities) - done[0])  # the progress bar still ends full
        return None, f"encoding failed ({str(error).splitlines()[0] if str(error) else type(error).__name__})"


def run_bench(frames: Sequence[Frame], codecs: Sequence[str], stkc_codec=None, *, name: str = "stkc bench",
              on_step: Callable[[int], None] = lambda n: None) -> dict:
    """Run every requested codec over `frames`; the JSON-ready report, laid out like CompressAI's:
    codecs (settings, availability, mean results per setting), stkc_vs, bd_rate[test][anchor], images."""
    sweeps: dict[str, Sweep] = {}
    report: dict = {"name": name, "images": len(frames), "codecs": {}}
    for codec_name in codecs:
        if codec_name == "stkc":
            if stkc_codec is None:
                raise ValueError("benchmarking stkc needs a Codec")
            sweeps["stkc"] = run_stkc(stkc_codec, frames, on_step)
            report["codecs"]["stkc"] = {
                "available": True, "reason": None, "library": f"model {stkc_codec.model.model_id.hex()}",
                "settings": "one operating point, batched compress_many/decompress_many, "
                            "file bytes incl. the 23-byte header"}
            continue
        sweep, reason = _classic_sweep(CLASSIC[codec_name], frames, on_step)
        if sweep is not None:
            sweeps[codec_name] = sweep
        report["codecs"][codec_name] = {"available": sweep is not None, "reason": reason,
                                        "library": library_version(codec_name),
                                        "settings": CLASSIC[codec_name].settings}
    for codec_name, entry in report["codecs"].items():
        entry["results"] = sweeps[codec_name].results() if codec_name in sweeps else {key: [] for key in RESULT_KEYS}
    if "stkc" in sweeps:
        report["stkc_vs"] = {c: compare_to_stkc(sweeps["stkc"], s) for c, s in sweeps.items() if c != "stkc"}
        report["stkc_vs"]["source"] = compare_to_source(sweeps["stkc"], frames)
    report["bd_rate"] = {}
    for test, test_sweep in sweeps.items():
        for anchor, anchor_sweep in sweeps.items():
            value = bd_rate(*anchor_sweep.mean_curve(), *test_sweep.mean_curve()) if test != anchor else None
            if value is not None:
                report["bd_rate"].setdefault(test, {})[anchor] = round(value, 2)
    return report
