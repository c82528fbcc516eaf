"""Speed and exactness figures of the codec and the prior on real frames.

    python3 benchmarks/speed.py ../shared/data/supertuxkart/valid [--model default] [--limit 64] [--json]

Reports: compress / decompress latency of one 150×100 frame and images/s in batches of 64;
the exact (integer) prior against the float one: bits per frame of each and the KV-cache
decode loop time of each; the float model's KV-cache step against its full forward pass
(largest absolute logit difference); generation time of 16 images. For a group prior, the
raster-only loops are left out (benchmarks/throughput.py compares the two kinds).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch


def timed(function, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        function()
    return (time.perf_counter() - start) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--model", default="default")
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from stkcodec.data import find_frames
    from stkcodec.codec import Codec
    from stkcodec.windows import image_tokens
    from stkcodec.generate import generate_images
    from stkcodec.imageio import open_image
    from stkcodec.prior import GroupPrior

    codec = Codec(args.model)
    model = codec.model
    images = [open_image(p, max_pixels=2**26) for p in find_frames(args.data, args.limit)]
    report: dict = {"frames": len(images), "threads": torch.get_num_threads()}

    codec.compress(images[0])  # warm-up
    files = codec.compress_many(images)
    report["compress_one_s"] = timed(lambda: codec.compress(images[0]), 3)
    report["decompress_one_s"] = timed(lambda: codec.decompress(files[0]), 3)
    batch = images[:64]
    report["compress_batch64_images_per_s"] = len(batch) / timed(lambda: codec.compress_many(batch))
    report["decompress_batch64_images_per_s"] = len(batch) / timed(lambda: codec.decompress_many(files[: len(batch)]))
    report["mean_file_bytes"] = float(np.mean([len(f) for f in files]))

    # exact integer prior against the float prior it was made from
    grids = image_tokens(model.tokenizer, images)
    tokens = torch.stack(grids)
    with torch.inference_mode():
        float_logits = model.prior(tokens).double()
        float_bits = torch.nn.functional.cross_entropy(float_logits.flatten(0, 1), tokens.flatten(), reduction="sum")
        weights = torch.from_numpy(model.exact_prior.weights(model.exact_prior.logits(tokens)))
    exact_p = (weights / weights.sum(-1, keepdim=True)).flatten(0, 1)
    exact_bits = -exact_p.gather(1, tokens.flatten()[:, None]).clamp_min(1e-300).log().sum()
    report["float_bits_per_frame"] = float(float_bits) / math.log(2) / len(images)
    report["exact_bits_per_frame"] = float(exact_bits) / math.log(2) / len(images)
    report["exact_cost_percent"] = 100 * (report["exact_bits_per_frame"] / report["float_bits_per_frame"] - 1)

    rows, cols = tokens.shape[1:]
    flat = tokens[0].flatten()
    report["generate_16_s"] = timed(lambda: generate_images(model, 16, seed=0))
    if isinstance(model.prior, GroupPrior):  # the loops below are a raster prior's, one token per step
        return finish(report, args.json)

    def float_loop():
        cache = model.prior.new_cache()
        previous = torch.full((1,), model.prior.start_token)
        with torch.inference_mode():
            for position in range(rows * cols):
                model.prior.step(previous, position, cols, cache).softmax(-1).numpy()
                previous = flat[position : position + 1]

    def exact_loop():
        cache = model.exact_prior.new_cache(1, rows * cols)
        previous = torch.full((1,), model.exact_prior.start_token)
        for position in range(rows * cols):
            model.exact_prior.weights(model.exact_prior.step(previous, position, cols, cache))
            previous = flat[position : position + 1]

    report["float_prior_decode_loop_s"] = timed(float_loop)
    report["exact_prior_decode_loop_s"] = timed(exact_loop)

    with torch.inference_mode():
        cache = model.prior.new_cache()
        previous = torch.full((len(tokens),), model.prior.start_token)
        steps = []
        for position in range(rows * cols):
            steps.append(model.prior.step(previous, position, cols, cache))
            previous = tokens.flatten(1)[:, position]
        report["kv_cache_max_abs_logit_diff"] = float((torch.stack(steps, 1) - model.prior(tokens)).abs().max())
    finish(report, args.json)


def finish(report: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")


if __name__ == "__main__":
    main()
