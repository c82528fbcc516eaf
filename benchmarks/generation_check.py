"""Are generated frames new, likely under the prior, and distinct from each other?

    python3 benchmarks/generation_check.py [-n 64] [--seed 0] [--model default] [--sheet sheet.png]

Samples n token grids with the KV cache, reports the time, the mean NLL of the samples under
the prior (nats per token), how many distinct grids and distinct decoded images there are, and
the smallest pixel distance (RMSE, 0..255) between two of the images.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="default")
    parser.add_argument("--sheet")
    args = parser.parse_args()

    from stkcodec.windows import token_images
    from stkcodec.generate import contact_sheet
    from stkcodec.zoo import CodecModel

    model = CodecModel.load(args.model)
    rows, cols = model.tile
    start = time.perf_counter()
    with torch.inference_mode():
        grids = model.prior.sample(args.n, rows, cols, generator=torch.Generator().manual_seed(args.seed))
        seconds = time.perf_counter() - start
        nll = torch.nn.functional.cross_entropy(model.prior(grids).flatten(0, 1), grids.flatten()).item()
    p = model.tokenizer.config.patch_size
    images = token_images(model.tokenizer, list(grids), (cols * p, rows * p))
    pixels = np.stack([np.asarray(image, dtype=np.float64) for image in images]).reshape(args.n, -1)
    squared = (pixels**2).sum(1)
    distances = (squared[:, None] + squared[None, :] - 2 * pixels @ pixels.T) / pixels.shape[1]
    np.fill_diagonal(distances, np.inf)
    report = {
        "samples": args.n,
        "sampling_seconds": round(seconds, 2),
        "nll_nats_per_token": round(nll, 4),
        "distinct_token_grids": len({g.numpy().tobytes() for g in grids}),
        "distinct_images": len({image.tobytes() for image in images}),
        "min_pairwise_rmse": round(float(np.sqrt(max(distances.min(), 0))), 2),
    }
    if args.sheet:
        contact_sheet(images).save(args.sheet)
        report["sheet"] = args.sheet
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
