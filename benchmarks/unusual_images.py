"""The figures behind `stkc compress`'s warning that an image is unlike the game frames the model
learnt (domain.py).

    python3 benchmarks/unusual_images.py ../shared/data/supertuxkart/train ../shared/data/supertuxkart/valid \
        --train-limit 400 --others DIR [--others DIR] [--frames DIR] [--model default] > docs/unusual-images.json

Codes frames spread over the training folder at level 1 and fits their base picture's PSNR as a
quadratic in the base layer's bits per token (domain.Band: the fit and the SD of the frames
about it; it goes into models/index.json's "base_band"). Then, with that band, each frame of the
validation folder (other tracks, never trained on) and of each --frames folder (game frames from
elsewhere, e.g. rendered losslessly) gets its Signals: how many are flagged, the lowest z and the
largest flat share. Each image of --others is coded at every level and compared with WebP at
each level's PSNR: bytes, PSNR, ratio, and whether (and why) it is flagged. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
from PIL import Image

BATCH = 16


def open_rgb(path) -> tuple[Image.Image, Image.Image]:
    """(the image as compress sees it: L or RGB, its RGB)"""
    with Image.open(path) as opened:
        image = opened.convert("RGB") if opened.mode not in ("L", "RGB") else opened.copy()
    return image, image.convert("RGB")


def base_layers(codec, paths, note: str) -> list[tuple[float, float, np.ndarray, np.ndarray]]:
    """Per frame at level 1: (base bits per token, base PSNR, its RGB pixels, its base picture)."""
    from stkcodec import bitstream
    from stkcodec.metrics import psnr_rgb

    out = []
    for start in range(0, len(paths), BATCH):
        opened = [open_rgb(path) for path in paths[start : start + BATCH]]
        for (image, rgb), encoded in zip(opened, codec.encode_many([image for image, _ in opened], quality=1)):
            header = bitstream.parse(encoded.data)[0]
            reference = np.asarray(rgb)
            out.append((8 * header.payload_bytes / math.prod(header.grid), psnr_rgb(reference, encoded.base),
                        reference, encoded.base))
        print(f"{note}: {len(out)}/{len(paths)}", file=sys.stderr, flush=True)
    return out


def frame_report(limits, rows, paths) -> dict:
    """How the warning treats a folder of game frames."""
    from stkcodec.domain import Signals, flat_share

    z = [limits.band.z(bpt, psnr) for bpt, psnr, _, _ in rows]
    flat = [flat_share(reference) for _, _, reference, _ in rows]
    signals = [Signals(f, v) for f, v in zip(flat, z)]
    flagged = [path.name for path, s in zip(paths, signals) if limits.reasons(s)]
    return {"frames": len(rows), "flagged": len(flagged), "flagged_frames": flagged[:20],
            "z_min": round(min(z), 3), "z_max": round(max(z), 3), "flat_share_max": round(max(flat), 4),
            "base_psnr_mean": round(float(np.mean([r[1] for r in rows])), 3),
            "base_bits_per_token_mean": round(float(np.mean([r[0] for r in rows])), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train")
    parser.add_argument("valid")
    parser.add_argument("--train-limit", type=int, default=400)
    parser.add_argument("--valid-limit", type=int, default=None)
    parser.add_argument("--others", action="append", default=[], help="a folder of images that are not game frames")
    parser.add_argument("--frames", action="append", default=[], help="another folder of game frames")
    parser.add_argument("--model", default="default")
    args = parser.parse_args()

    import torch

    from stkcodec import bitstream, domain
    from stkcodec.codec import Codec
    from stkcodec.data import find_frames, find_images
    from stkcodec.metrics import psnr_rgb

    torch.set_num_threads(1)
    codec = Codec(args.model)
    train = base_layers(codec, find_frames(args.train, args.train_limit), "train")
    bpt, psnr = np.array([r[0] for r in train]), np.array([r[1] for r in train])
    fit = np.polyfit(bpt, psnr, 2)
    band = domain.Band(tuple(round(float(c), 6) for c in fit), round(float((psnr - np.polyval(fit, bpt)).std()), 4))
    limits = domain.Limits(band)
    report = {"model": args.model, "effort": codec.effort,
              "webp": f"method {domain.WEBP_METHOD}, qualities {list(domain.WEBP_QUALITIES)}",
              "base_band": {"fit": list(band.fit), "sd": band.sd}, "flat_limit": domain.FLAT_LIMIT,
              "z_limit": domain.Z_LIMIT, "train": frame_report(limits, train, find_frames(args.train, args.train_limit))}
    del train
    for name, folder, limit in [("valid", args.valid, args.valid_limit)] + [(f, f, None) for f in args.frames]:
        paths = find_frames(folder, limit) if name == "valid" else find_images(folder)
        report[name] = frame_report(limits, base_layers(codec, paths, name), paths)
    report["others"] = []
    for path in [path for folder in args.others for path in find_images(folder)]:
        image, rgb = open_rgb(path)
        reference = np.asarray(rgb)
        [candidates] = codec.every_level([image])
        header = bitstream.parse(candidates[0][0])[0]
        signals = limits.signals(reference, candidates[0][1], header.payload_bytes, math.prod(header.grid))
        levels = []
        for level, (data, pixels) in enumerate(candidates, 1):
            comparison = domain.compare_with_webp(reference, len(data), psnr_rgb(reference, pixels))
            levels.append({"level": level, "bytes": len(data), "psnr": round(comparison.psnr, 2),
                           "ratio_to_webp": round(comparison.ratio, 3),
                           "webp_nearest": list(comparison.nearest[:2]) + [round(comparison.nearest[2], 2)]})
        report["others"].append({"image": path.name, "size": list(image.size), "mode": image.mode,
                                 **signals.record(), "flagged": limits.reasons(signals), "levels": levels})
        print(f"others: {path.name}", file=sys.stderr, flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
