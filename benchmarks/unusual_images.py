"""The figure behind `stkc compress`'s "unlike what the model was trained on" warning.

    python3 benchmarks/unusual_images.py ../shared/data/supertuxkart/train ../shared/data/supertuxkart/valid \
        --train-limit 500 --others /path/to/non-game/images [--model default]

Compresses frames spread over the training folder and sets the usual range of bits per token
from their 0.1th and 99.9th percentiles, widened by MARGIN; then reports how many frames of the
validation folder (other tracks, never trained on) fall outside it (false alarms), and for each
of the other images: its bits per token, whether it is flagged, its PSNR, and the bytes of WebP's
lowest setting for scale. Prints JSON; the range goes into models/index.json
("usual_bits_per_token": [low, high]). Flat screenshots, diagrams and logos cost far fewer bits
per token than any game frame (the prior finds them too easy), photos about as many as the
costliest frames.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

MARGIN = 1.10
PERCENTILES = (0.1, 99.9)


def bits_per_token(codec, images: list[Image.Image]) -> list[float]:
    from stkcodec import bitstream

    figures = []
    for start in range(0, len(images), 32):
        for data in codec.compress_many(images[start : start + 32]):
            header, _ = bitstream.parse(data)
            rows, cols = header.grid
            figures.append(8 * header.payload_bytes / (rows * cols))
    return figures


def load(paths: list[Path]) -> list[Image.Image]:
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("RGB") if image.mode not in ("L", "RGB") else image.copy())
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train")
    parser.add_argument("valid")
    parser.add_argument("--train-limit", type=int, default=500)
    parser.add_argument("--valid-limit", type=int, default=None)
    parser.add_argument("--others", help="a folder of images that are not game frames")
    parser.add_argument("--model", default="default")
    args = parser.parse_args()

    from stkcodec.codec import Codec
    from stkcodec.data import find_frames, find_images
    from stkcodec.metrics import psnr_rgb

    codec = Codec(args.model)
    train = bits_per_token(codec, load(find_frames(args.train, args.train_limit)))
    low, high = np.percentile(train, PERCENTILES)
    usual = [round(float(low) / MARGIN, 2), round(float(high) * MARGIN, 2)]
    valid = np.array(bits_per_token(codec, load(find_frames(args.valid, args.valid_limit))))
    outside = (valid < usual[0]) | (valid > usual[1])
    report = {
        "model": args.model,
        "train_frames": len(train),
        "train_bits_per_token": {"min": float(np.min(train)), "p0.1": float(low), "mean": float(np.mean(train)),
                                 "p99.9": float(high), "max": float(np.max(train))},
        "usual_bits_per_token": usual,
        "valid_frames": len(valid),
        "valid_bits_per_token": {"min": float(valid.min()), "p1": float(np.percentile(valid, 1)),
                                 "mean": float(valid.mean()), "p99": float(np.percentile(valid, 99)),
                                 "max": float(valid.max())},
        "valid_flagged": int(outside.sum()),
        "valid_false_alarm_percent": 100 * float(outside.mean()),
        "others": [],
    }
    for path in find_images(args.others) if args.others else []:
        [image] = load([path])
        data = codec.compress(image)
        [figure] = bits_per_token(codec, [image])
        decoded = codec.decompress(data)
        webp = io.BytesIO()
        image.save(webp, "WEBP", quality=0, method=6)
        report["others"].append({
            "image": path.name, "size": list(image.size), "mode": image.mode, "bytes": len(data),
            "bits_per_token": round(figure, 2), "flagged": not usual[0] <= figure <= usual[1],
            "psnr_db": round(psnr_rgb(np.asarray(image.convert("RGB")), np.asarray(decoded.convert("RGB"))), 2),
            "webp_q0_bytes": webp.tell(),
        })
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
