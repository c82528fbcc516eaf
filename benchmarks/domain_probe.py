"""Signals that might tell non-game images from frames (issue 22): each image's level-1 bits per
token and base PSNR, against the band training frames draw between the two; and statistics of
the image and of the tokenizer's latents that a warning could weigh (`stats`).

    python3 benchmarks/domain_images.py          # writes others9/ and extra/ (non-game images on this machine)
    python3 benchmarks/domain_probe.py ../shared/data/supertuxkart/train ../shared/data/supertuxkart/valid \
        others9 extra --limit 400 > docs/domain-probe.json

Frames of a track cost more bits a token where their base picture is poorer (busy scenes); a
screenshot, diagram or line art costs few bits and still comes back poor. A quadratic fit of PSNR
on bits per token over the training frames gives each image a z-score (its residual over the
training residuals' standard deviation). Prints JSON: the fit, and per image bytes, bits per token,
PSNR, z and the statistics; and per statistic the range over the training and the validation
frames, and each non-game image's value.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def stats(codec, image: Image.Image) -> dict:
    """Statistics of an image and of the tokenizer's latents for it."""
    from stkcodec.domain import flat_share

    rgb = np.asarray(image.convert("RGB")).astype(np.float64)
    gray = rgb @ [0.299, 0.587, 0.114]
    height, width = gray.shape
    laplacian = np.abs(4 * gray[1:-1, 1:-1] - 2 * (gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:])
                       + gray[:-2, :-2] + gray[:-2, 2:] + gray[2:, :-2] + gray[2:, 2:])
    noise = math.sqrt(math.pi / 2) * laplacian.sum() / (6 * (width - 2) * (height - 2))  # Immerkaer 1996
    gradient = np.hypot(np.diff(gray, axis=1)[:-1], np.diff(gray, axis=0)[:, :-1])
    rg, yb = rgb[..., 0] - rgb[..., 1], 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    colourful = math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean())  # Hasler and Suesstrunk
    with torch.inference_mode():
        pixels = torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)[None]
        latents = codec.model.tokenizer._latents(pixels).float()
    norm = latents.norm(dim=-1)
    margins = torch.nn.functional.normalize(latents, dim=-1).abs()
    return {"flat_share": round(flat_share(rgb.astype(np.uint8)), 4), "noise": round(noise, 3),
            "colourfulness": round(colourful, 2), "gradient_mean": round(float(gradient.mean()), 3),
            "gradient_kurtosis": round(float(((gradient - gradient.mean()) ** 4).mean() / (gradient.var() ** 2 + 1e-9)), 2),
            "latent_norm_mean": round(float(norm.mean()), 4), "latent_norm_sd": round(float(norm.std()), 4),
            "margin_min_mean": round(float(margins.min(-1).values.mean()), 4)}


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
                     "psnr": round(psnr_rgb(np.asarray(image.convert("RGB")), encoded.pixels), 3),
                     **stats(codec, image)})
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
    ranges = {}
    for key in [key for key in sets["train"][0] if key != "image"]:
        ranges[key] = {name: [min(r[key] for r in sets[name]), max(r[key] for r in sets[name])] for name in ("train", "valid")}
        ranges[key]["others"] = {r["image"]: r[key] for name in sets if name not in ("train", "valid") for r in sets[name]}
    print(json.dumps({"model": args.model, "fit_psnr_on_bpt": [round(float(c), 5) for c in fit],
                      "residual_sd_db": round(spread, 4), "ranges": ranges, **sets}, indent=1))


if __name__ == "__main__":
    main()
