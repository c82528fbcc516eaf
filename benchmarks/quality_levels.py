"""Every quality level of a model on every image of a folder: real file bytes and PSNR, and the
bytes WebP and AVIF need for the same PSNR, image by image.

    python3 benchmarks/quality_levels.py ../shared/data/supertuxkart/valid [--model default] [--limit N] [--json]
        [--classic-cache sweeps.npz] [--per-image levels.npz]

Files come from `Codec.every_level` (one encoder pass gives every level's file); PSNR-RGB of the
encoder's reconstruction, which a decoder matches up to float rounding. WebP (method 6) and AVIF
(speed 6) are swept over the bench's quality settings (stkcodec/bench_codecs.py); an image counts
in a ratio only where stkc's PSNR lies within that codec's sweep. BD-rate (PSNR) compares the
mean curves: stkc's levels against each codec's settings. `--classic-cache` keeps the WebP and
AVIF sweeps (they do not depend on the model) for the next run on the same images.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--model", default="default")
    parser.add_argument("--limit", type=int, default=None, help="images spread over the folder  [default: all]")
    parser.add_argument("--no-classic", action="store_true", help="stkc's levels only")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--classic-cache", help="npz file of the WebP/AVIF sweeps: read if it matches, else written")
    parser.add_argument("--per-image", help="npz file to write each image's bytes and PSNR at every level "
                                            "(names, bytes and psnr: levels x images)")
    args = parser.parse_args()

    from stkcodec.bench import find_frames, load_frames
    from stkcodec.codec import Codec
    from stkcodec.metrics import psnr_rgb
    from stkcodec.rd import bd_rate, bytes_at_psnr

    codec = Codec(args.model)
    frames = load_frames(find_frames(args.data, args.limit))
    started = time.perf_counter()
    sizes = np.zeros((codec.levels, len(frames)))
    psnrs = np.zeros((codec.levels, len(frames)))
    for start in range(0, len(frames), 32):
        batch = frames[start : start + 32]
        for offset, candidates in enumerate(codec.every_level([f.image for f in batch])):
            for level, (data, pixels) in enumerate(candidates):
                sizes[level, start + offset] = len(data)
                psnrs[level, start + offset] = psnr_rgb(batch[offset].pixels, pixels)
    stkc_seconds = time.perf_counter() - started
    if args.per_image:
        np.savez(args.per_image, names=np.array([f.name for f in frames]), bytes=sizes, psnr=psnrs)
    report = {"images": len(frames), "model": codec.model.model_id.hex(), "stkc_seconds": round(stkc_seconds, 1),
              "levels": []}
    sweeps = {} if args.no_classic else classic_sweeps(frames, args.classic_cache)
    for level in range(codec.levels):
        row = {"level": level + 1, "bytes": round(float(sizes[level].mean()), 1),
               "bpp": round(float((8 * sizes[level] / np.array([f.pixels[..., 0].size for f in frames])).mean()), 4),
               "psnr": round(float(psnrs[level].mean()), 3)}
        for name, sweep in sweeps.items():
            needed = [bytes_at_psnr(p, sweep.psnr[:, i], sweep.bytes[:, i]) for i, p in enumerate(psnrs[level])]
            ratios = [s / n for s, n in zip(sizes[level], needed) if n is not None]
            row[f"x_{name}"] = round(float(np.mean(ratios)), 4) if ratios else None
            row[f"median_x_{name}"] = round(float(np.median(ratios)), 4) if ratios else None
            row[f"n_{name}"] = len(ratios)
        both = []
        for i, p in enumerate(psnrs[level]):
            needed = [bytes_at_psnr(p, s.psnr[:, i], s.bytes[:, i]) for s in sweeps.values()]
            if sweeps and all(n is not None for n in needed):
                both.append(sizes[level, i] / min(needed))
        row["x_better"] = round(float(np.mean(both)), 4) if both else None
        row["n_better"] = len(both)
        report["levels"].append(row)
    curve = ([row["bpp"] for row in report["levels"]], [row["psnr"] for row in report["levels"]])
    report["bd_rate_psnr"] = {name: (None if (v := bd_rate(*sweep.mean_curve(), *curve)) is None else round(v, 2))
                              for name, sweep in sweeps.items()}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{len(frames)} images, model {report['model']}, stkc {stkc_seconds:.0f} s")
    for row in report["levels"]:
        extra = "".join(f", x{name} {row[f'x_{name}']} ({row[f'n_{name}']})" for name in sweeps
                        if row.get(f"x_{name}") is not None and not math.isnan(row[f"x_{name}"]))
        print(f"level {row['level']}: {row['bytes']:.0f} B, {row['bpp']:.3f} bpp, {row['psnr']:.2f} dB{extra}")
    for name, value in report["bd_rate_psnr"].items():
        print(f"BD-rate (PSNR) against {name}: {value}%")


def classic_sweeps(frames, cache: str | None) -> dict:
    """WebP's and AVIF's sweeps of `frames`, from `cache` when it holds these images at these settings."""
    from pathlib import Path

    from stkcodec.bench import CLASSIC, Sweep, run_classic

    key = json.dumps({"images": [str(Path(f.name).resolve()) for f in frames],  # however the folder was spelt
                      "settings": {n: [list(CLASSIC[n].qualities), CLASSIC[n].options] for n in ("webp", "avif")}},
                     sort_keys=True, default=str)
    if cache and Path(cache).exists():
        with np.load(cache) as stored:
            if str(stored["key"]) == key:
                return {name: Sweep(name, list(CLASSIC[name].qualities), stored[f"{name}_bytes"], stored[f"{name}_psnr"],
                                    *(np.full(stored[f"{name}_psnr"].shape, np.nan) for _ in range(3)),
                                    np.array([f.pixels.shape[0] * f.pixels.shape[1] for f in frames], dtype=np.float64))
                        for name in ("webp", "avif")}
    sweeps = {name: run_classic(CLASSIC[name], frames) for name in ("webp", "avif")}
    if cache:
        np.savez(cache, key=np.array(key), **{f"{n}_{k}": getattr(s, k) for n, s in sweeps.items() for k in ("bytes", "psnr")})
    return sweeps


if __name__ == "__main__":
    main()
