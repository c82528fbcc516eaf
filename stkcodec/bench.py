"""`stkc bench`: rate-distortion and speed of stkc against JPEG, WebP, AVIF and JPEG XL.

Runs every codec of the registry (bench_codecs.py) over the frames at each of its settings,
measures each image (metrics.py) and compares the sweeps (rd.py); the report is JSON-ready and
laid out like CompressAI's bench. Rates come from the real encoded bytes, headers and
containers included; speeds are milliseconds per image and megapixels per second.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .bench_codecs import ALL_CODECS, CLASSIC, LABELS, STKC, ClassicCodec, codec_available, library_version
from .data import find_frames
from .errors import BadInputError
from .metrics import PSNR_CAP, ms_ssim_rgb, ms_ssim_scales, psnr_rgb
from .rd import bd_rate, bytes_at_psnr

__all__ = ["ALL_CODECS", "CLASSIC", "LABELS", "PSNR_CAP", "Frame", "Sweep", "bd_rate", "bytes_at_psnr",
           "codec_available", "find_frames", "library_version", "load_frames", "ms_ssim_rgb", "ms_ssim_scales",
           "psnr_rgb", "run_bench", "run_classic", "run_stkc", "steps"]

RESULT_KEYS = ("quality", "bpp", "bytes", "psnr-rgb", "ms-ssim-rgb", "encoding_time_ms", "decoding_time_ms",
               "encoding_mpx_per_s", "decoding_mpx_per_s")


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

        def megapixels_per_s(milliseconds: np.ndarray) -> list:  # all the images' pixels over all their time
            # four significant digits: a slow machine's 0.0003 Mpx/s must not round to 0
            return [_significant(np.sum(self.pixels[np.isfinite(row)]) / 1000 / np.nansum(row)
                                 if np.nansum(row) > 0 else math.nan) for row in milliseconds]

        return dict(zip(RESULT_KEYS, (self.qualities, means(self.bpp, 4), means(self.bytes, 1), means(self.psnr, 3),
                                      means(self.ms_ssim, 5), means(self.encode_ms, 3), means(self.decode_ms, 3),
                                      megapixels_per_s(self.encode_ms), megapixels_per_s(self.decode_ms))))


def _significant(value: float, digits: int = 4) -> float | None:
    return float(f"{value:.{digits}g}") if math.isfinite(value) else None


def _json_number(value: float, digits: int) -> float | None:
    return round(float(value), digits) if math.isfinite(value) else None


def load_frames(paths: Sequence[Path], *, max_pixels: int = 64 * 2**20) -> list[Frame]:
    """Decode each file to RGB once; the bench never touches the files again."""
    from .imageio import open_image

    frames = []
    for path in paths:
        pixels = np.asarray(open_image(path, max_pixels=max_pixels).convert("RGB"))
        # A fresh image without format or filename: pillow-jxl would otherwise transcode a JPEG
        # source losslessly instead of encoding the pixels.
        frames.append(Frame(str(path), Image.fromarray(pixels, "RGB"), pixels, Path(path).stat().st_size,
                            Path(path).suffix.lstrip(".").upper()))
    return frames


def steps(codecs: Sequence[str], frames: Sequence[Frame], stkc_levels: int = 1) -> int:
    """Progress units of a run: one per image and setting of every available codec."""
    per_image = sum(len(CLASSIC[c].qualities) for c in codecs if c in CLASSIC and codec_available(c)[0])
    return len(frames) * (per_image + ("stkc" in codecs) * stkc_levels)


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
    """stkc at each of its quality levels through `Codec.compress_many`/`decompress_many`, batch by
    batch; each image is charged its batch's time divided by the batch size."""
    levels = list(range(1, codec.levels + 1))
    sweep = Sweep.empty(STKC.name, levels, frames)
    if frames:  # warm up: the first call pays one-off costs (allocations, lazy set-up) no file would repeat
        codec.decompress_many(codec.compress_many([frames[0].image], quality=levels[-1]))
    for start in range(0, len(frames), STKC.batch):
        batch = frames[start : start + STKC.batch]
        for setting, quality in enumerate(levels):
            begin = time.perf_counter()
            files = codec.compress_many([frame.image for frame in batch], quality=quality)
            encoded = time.perf_counter()
            images = codec.decompress_many(files, [frame.name for frame in batch])
            finished = time.perf_counter()
            for offset, (frame, data, image) in enumerate(zip(batch, files, images)):
                sweep.measure(setting, start + offset, frame, data, image, 1000 * (encoded - begin) / len(batch),
                              1000 * (finished - encoded) / len(batch))
            on_step(len(batch))
    return sweep


def _versus(sizes: np.ndarray, targets: np.ndarray, other: Sweep) -> dict:
    """Per image, stkc's bytes over the bytes `other` needs for stkc's PSNR there; images where
    that PSNR lies outside `other`'s sweep are excluded and counted."""
    ratios, below = [], 0
    for image, (size, target) in enumerate(zip(sizes, targets)):
        psnrs = other.psnr[:, image]
        needed = bytes_at_psnr(target, psnrs, other.bytes[:, image])
        below += int(needed is None and target < np.nanmin(psnrs))
        ratios.append(None if needed is None else float(size / needed))
    kept = [ratio for ratio in ratios if ratio is not None]
    excluded = len(ratios) - len(kept)
    return {"mean_ratio": _json_number(_mean(np.array(kept)), 4), "images": len(kept), "excluded": excluded,
            "excluded_below": below, "excluded_above": excluded - below,
            "per_image": [None if ratio is None else round(ratio, 4) for ratio in ratios]}


def compare_to_stkc(stkc: Sweep, other: Sweep) -> dict:
    """At equal PSNR, level 1's figures (the base layer) and, under "levels", every level's
    (level, mean_psnr, mean_bytes and the same figures)."""
    result = _versus(stkc.bytes[0], stkc.psnr[0], other)
    result["levels"] = [{"level": k + 1, "mean_psnr": _json_number(_mean(stkc.psnr[k]), 3),
                         "mean_bytes": _json_number(_mean(stkc.bytes[k]), 1),
                         **{k2: v for k2, v in _versus(stkc.bytes[k], stkc.psnr[k], other).items() if k2 != "per_image"}}
                        for k in range(stkc.bytes.shape[0])]
    return result


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
              on_step: Callable[[int], None] = lambda n: None,
              on_codec: Callable[[str], None] = lambda name: None) -> dict:
    """Run every requested codec over `frames`; the JSON-ready report, laid out like CompressAI's:
    codecs (settings, availability, mean results per setting), stkc_vs, bd_rate[test][anchor], images."""
    sweeps: dict[str, Sweep] = {}
    report: dict = {"name": name, "images": len(frames), "codecs": {}}
    for codec_name in codecs:
        on_codec(codec_name)  # what the run is doing now (the CLI's bar says it)
        if codec_name == "stkc":
            if stkc_codec is None:
                raise ValueError("benchmarking stkc needs a Codec")
            sweeps["stkc"] = run_stkc(stkc_codec, frames, on_step)
            report["codecs"]["stkc"] = {"available": True, "reason": None,
                                        "library": f"model {stkc_codec.model.model_id.hex()}",
                                        "settings": STKC.settings(stkc_codec.levels)}
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
