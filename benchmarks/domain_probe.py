"""The base layer as an out-of-domain signal (issue 22): each image's level-1 bits per token and
base PSNR, against the band training frames draw between the two.

    python3 benchmarks/domain_images.py          # writes others9/ and extra/ (non-game images on this machine)
    python3 benchmarks/domain_probe.py ../shared/data/supertuxkart/train ../shared/data/supertuxkart/valid \
        others9 extra --limit 400 > docs/domain-probe.json

Frames of a track cost more bits a token where their base picture is poorer (busy scenes); a
screenshot, diagram or line art costs few bits and still comes back poor. A quadratic fit of PSNR
on bits per token over the training frames gives each image a z-score (its residual over the
training residuals' standard deviation). Prints JSON: the fit, and per image bytes, bits per token,
PSNR and z.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def features(codec, paths) -> list[dict]:
    from stkcodec import bitstream
    from stkcodec.metrics import psnr_rgb

    rows = []
    for path in paths:
        with Image.open(path) as opened:
            image = opened.convert("RGB") if opened.mode not in ("L", "RGB") else opened.copy()
        [encoded] = codec.encode_many([image], quality=1)
        _, payload = bitstream.parse(encoded.data)
        tokens = math.ceil(image.width / 5) * math.ceil(image.height / 5)
        rows.append({"image": Path(path).name, "bytes": len(encoded.data), "bpt": round(8 * len(payload) / tokens, 4),
                     "psnr": round(psnr_rgb(np.asarray(image.convert("RGB")), encoded.pixels), 3)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train")
    parser.add_argument("valid")
    parser.add_argument("others", nargs="*", help="folders of images that are not game frames")
    parser.add_argument("--limit", type=int, default=400, help="frames spread over each data folder")
    parser.add_argument("--model", default="default")
    args = parser.parse_args()

    from stkcodec.codec import Codec
    from stkcodec.data import find_frames, find_images

    torch.set_num_threads(1)
    codec = Codec(args.model)
    sets = {"train": features(codec, find_frames(args.train, args.limit)),
            "valid": features(codec, find_frames(args.valid, args.limit))}
    for folder in args.others:
        sets[Path(folder).name] = features(codec, find_images(folder))
    bpt, psnr = (np.array([r[k] for r in sets["train"]]) for k in ("bpt", "psnr"))
    fit = np.polyfit(bpt, psnr, 2)
    spread = float((psnr - np.polyval(fit, bpt)).std())
    for rows in sets.values():
        for row in rows:
            row["z"] = round(float((row["psnr"] - np.polyval(fit, row["bpt"])) / spread), 2)
    print(json.dumps({"model": args.model, "fit_psnr_on_bpt": [round(float(c), 5) for c in fit],
                      "residual_sd_db": round(spread, 4), **sets}, indent=1))


if __name__ == "__main__":
    main()
