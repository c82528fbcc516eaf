"""Validation figures of a codec model's two parts, on every image of a folder.

    python3 benchmarks/evaluate_models.py ../shared/data/supertuxkart/valid [--model default]

Tokenizer: PSNR-RGB (0..255, 8-bit output) of decode_index(encode_index(x)), mean over images,
and how the codebook is used. Prior: cross-entropy in bits per image and per token, with the
float model and with the exact integer model the codec uses.
"""

from __future__ import annotations

import argparse
import json

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--model", default="default")
    args = parser.parse_args()

    from stkcodec.data import ImageFolder, TokenGrids
    from stkcodec.objectives import PriorObjective, TokenizerObjective
    from stkcodec.zoo import CodecModel

    model = CodecModel.load(args.model)
    images = ImageFolder(args.data)
    device = torch.device("cpu")
    report = {"images": len(images)}
    report.update(TokenizerObjective().evaluate(model.tokenizer, images, device=device, limit=None))
    with torch.inference_mode():
        grids = torch.cat([model.tokenizer.encode_index(batch) for batch in images.batches(64)])
    tokens = TokenGrids(grids, source={})
    report.update(PriorObjective().evaluate(model.prior, tokens, device=device, limit=None))
    exact_bits = 0.0
    for batch in tokens.batches(32):
        weights = torch.from_numpy(model.exact_prior.weights(model.exact_prior.coding_logits(batch)))
        chosen = weights.gather(-1, batch.flatten(1)[..., None])[..., 0]
        exact_bits -= float(torch.log2(chosen / weights.sum(-1)).sum())
    report["exact_bits_per_image"] = exact_bits / len(grids)
    report["exact_cost_percent"] = 100 * (report["exact_bits_per_image"] / report["valid_bits_per_image"] - 1)
    report["tokens_per_image"] = grids[0].numel()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
