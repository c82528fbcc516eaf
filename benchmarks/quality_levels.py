"""Every quality level of a model on every image of a folder: real file bytes and PSNR, and the
bytes WebP and AVIF need for the same PSNR, image by image.

    python3 benchmarks/quality_levels.py ../shared/data/supertuxkart/valid [--model default] [--limit N] [--json]

Files come from `Codec.every_level` (one encoder pass gives every level's file); PSNR-RGB of the
encoder's reconstruction, which a decoder matches up to float rounding. WebP (method 6) and AVIF
(speed 6) are swept over the bench's quality settings (stkcodec/bench_codecs.py); an image counts
in a ratio only where stkc's PSNR lies within that codec's sweep.
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
    args = parser.parse_args()

    from stkcodec.bench import CLASSIC, find_frames, load_frames, run_classic
    from stkcodec.codec import Codec
    from stkcodec.metrics import psnr_rgb
    from stkcodec.rd import bytes_at_psnr

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
    report = {"images": len(frames), "model": codec.model.model_id.hex(), "stkc_seconds": round(stkc_seconds, 1),
              "levels": []}
    sweeps = {} if args.no_classic else {name: run_classic(CLASSIC[name], frames) for name in ("webp", "avif")}
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
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{len(frames)} images, model {report['model']}, stkc {stkc_seconds:.0f} s")
    for row in report["levels"]:
        extra = "".join(f", x{name} {row[f'x_{name}']} ({row[f'n_{name}']})" for name in sweeps
                        if row.get(f"x_{name}") is not None and not math.isnan(row[f"x_{name}"]))
        print(f"level {row['level']}: {row['bytes']:.0f} B, {row['bpp']:.3f} bpp, {row['psnr']:.2f} dB{extra}")


if __name__ == "__main__":
    main()
