"""The figures behind `stkc compress`'s warning that WebP would serve an image better (domain.py).

    python3 benchmarks/unusual_images.py ../shared/data/supertuxkart/train ../shared/data/supertuxkart/valid \
        --train-limit 200 --others /path/to/non-game/images [--model default]

Codes frames spread over the training folder at every quality level and compares each file with
WebP at its PSNR (`domain.compare_with_webp`); each level's PSNR floor is the frames' lowest PSNR
less PSNR_MARGIN dB. Then reports, per level, how many frames of the validation folder (other
tracks, never trained on) the warning flags with those floors and domain.RATIO_LIMIT, with each
frame's ratio and PSNR, and for each of the other images, at each level, its bytes, PSNR, ratio
to WebP and why it is flagged. Prints JSON; the floors go into models/index.json ("psnr_floor").
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from PIL import Image

PSNR_MARGIN = 2.0


def compared(codec, paths, note=None) -> list[list]:
    """Per image, per level: its Comparison (every level from one encoder pass)."""
    from stkcodec.domain import compare_with_webp
    from stkcodec.metrics import psnr_rgb

    out = []
    for k, path in enumerate(paths):
        with Image.open(path) as opened:
            image = opened.convert("RGB") if opened.mode not in ("L", "RGB") else opened.copy()
        reference = np.asarray(image.convert("RGB"))
        [candidates] = codec.every_level([image])
        out.append([compare_with_webp(reference, len(data), psnr_rgb(reference, pixels)) for data, pixels in candidates])
        if note and (k + 1) % 50 == 0:
            print(f"{note}: {k + 1}/{len(paths)}", file=sys.stderr, flush=True)
    return out


def summary(comparisons: list[list]) -> dict:
    ratios = np.array([[c.ratio for c in levels] for levels in comparisons])
    psnrs = np.array([[c.psnr for c in levels] for levels in comparisons])
    return {"ratio_mean": ratios.mean(0).round(3).tolist(), "ratio_p99": np.percentile(ratios, 99, 0).round(3).tolist(),
            "ratio_max": ratios.max(0).round(3).tolist(), "psnr_mean": psnrs.mean(0).round(2).tolist(),
            "psnr_min": psnrs.min(0).round(2).tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train")
    parser.add_argument("valid")
    parser.add_argument("--train-limit", type=int, default=200)
    parser.add_argument("--valid-limit", type=int, default=None)
    parser.add_argument("--others", help="a folder of images that are not game frames")
    parser.add_argument("--model", default="default")
    args = parser.parse_args()

    from stkcodec import domain
    from stkcodec.codec import Codec
    from stkcodec.data import find_frames, find_images

    codec = Codec(args.model)
    train = compared(codec, find_frames(args.train, args.train_limit), "train")
    floors = tuple(round(float(p) - PSNR_MARGIN, 2) for p in summary(train)["psnr_min"])
    limits = domain.Limits(psnr=floors)
    valid_paths = find_frames(args.valid, args.valid_limit)
    valid = compared(codec, valid_paths, "valid")
    flags = np.array([[bool(limits.reasons(level + 1, c)) for level, c in enumerate(levels)] for levels in valid])
    report = {
        "model": args.model,
        "webp": f"method {domain.WEBP_METHOD}, qualities {list(domain.WEBP_QUALITIES)}",
        "ratio_limit": domain.RATIO_LIMIT,
        "psnr_floor": list(floors),
        "train_frames": len(train),
        "train": summary(train),
        "valid_frames": len(valid),
        "valid": summary(valid),
        "valid_flagged_per_level": flags.sum(0).tolist(),
        "valid_per_frame": {path.name: [[round(c.ratio, 3), round(c.psnr, 2)] for c in levels]  # (ratio, PSNR) per level
                            for path, levels in zip(valid_paths, valid)},
        "others": [],
    }
    for path in find_images(args.others) if args.others else []:
        [levels] = compared(codec, [path])
        with Image.open(path) as image:
            size, mode = list(image.size), image.mode
        report["others"].append({
            "image": path.name, "size": size, "mode": mode,
            "levels": [{"level": level + 1, "bytes": c.stkc_bytes, "psnr": round(c.psnr, 2),
                        "ratio_to_webp": round(c.ratio, 3), "webp_nearest": list(c.nearest[:2]) + [round(c.nearest[2], 2)],
                        "flagged": limits.reasons(level + 1, c)} for level, c in enumerate(levels)],
        })
    per_frame = report.pop("valid_per_frame")
    rows = ",\n".join(f"    {json.dumps(name)}: {json.dumps(v, separators=(',', ':'))}" for name, v in per_frame.items())
    print(json.dumps(report, indent=2)[:-2] + ',\n  "valid_per_frame": {\n' + rows + "\n  }\n}")  # a frame a line


if __name__ == "__main__":
    main()
