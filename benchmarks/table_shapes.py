"""How well an enhancement model's coding tables fit its symbols: the symbols' cost under the
model's own tables, under tables of their real frequencies (fitted on training frames) and
under Laplace tables of one global width, per level (the measurement behind `distribution`).

    python3 benchmarks/table_shapes.py ../shared/data/supertuxkart/train ../shared/data/supertuxkart/valid \
        [--model p5-10bit-aug] [--train-frames 1500] [--valid-frames 200]

Symbols and table indices come from the float model, rounded as the coder rounds (levels 2 up).
Prints bytes a frame summed over the levels, and each level's change.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from stkcodec.data import BasePairs
from stkcodec.enhance_exact import SYMBOL_RANGE, _laplace_table, coding_tables, table_scales
from stkcodec.enhancer import LAPLACE_DIVERSITY, LOG_SCALE_MIN, SCALE_STEPS, SCALES
from stkcodec.zoo import CodecModel

R = SYMBOL_RANGE


def symbols(model, pairs: BasePairs) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per 0-based level: every symbol and its table index (`Enhancer.coded`, as a coder rounds)."""
    out = {level: ([], []) for level in range(model.config.levels)}
    with torch.no_grad():
        for batch in pairs.batches(50):
            x, x0, tokens = batch.pairs[:, :3], batch.pairs[:, 3:], batch.tokens
            for level in out:
                levels = torch.full((len(x),), level)
                _, s, _, log_scale, _ = model.coded(x, x0, levels, training=False, tokens=tokens)
                k = torch.round((log_scale.clamp_min(LOG_SCALE_MIN) - LOG_SCALE_MIN) * SCALE_STEPS / math.log(2))
                out[level][0].append(s.clamp(-R, R).long().flatten().numpy())
                out[level][1].append(k.clamp(0, SCALES - 1).long().flatten().numpy())
    return {level: (np.concatenate(s), np.concatenate(k)) for level, (s, k) in out.items()}


def laplace(shift: float) -> np.ndarray:
    """The coder's own Laplace tables (`enhance_exact._laplace_table`), of diversity b = scale · e^shift, normalised."""
    p = np.maximum(_laplace_table(table_scales() * math.exp(shift) / LAPLACE_DIVERSITY), 1e-300)
    return p / p.sum(1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train")
    parser.add_argument("valid")
    parser.add_argument("--model", default="p5-10bit-aug")
    parser.add_argument("--train-frames", type=int, default=1500)
    parser.add_argument("--valid-frames", type=int, default=200)
    args = parser.parse_args()
    codec = CodecModel.load(args.model)
    model = codec.enhancer.eval()
    train = symbols(model, BasePairs.build(codec.tokenizer, args.train, limit=args.train_frames))
    valid = symbols(model, BasePairs.build(codec.tokenizer, args.valid, limit=args.valid_frames))
    table = coding_tables(model.config.distribution)[0]
    own = table / table.sum(1, keepdims=True)
    counts = np.zeros_like(own)
    for s, k in train.values():
        np.add.at(counts, (k, s + R), 1)
    frequencies = (counts + own) / (counts.sum(1, keepdims=True) + 1)  # one pseudo-count of the model's own table
    shifts = np.linspace(-1.0, 0.2, 13)
    train_cost = [-(counts * np.log2(laplace(v))).sum() for v in shifts]
    best = float(shifts[int(np.argmin(train_cost))])
    candidates = {"real frequencies": frequencies, f"laplace, b = scale x e^{best:+.1f}": laplace(best)}
    frames = args.valid_frames
    base = {level: -np.log2(own[k, s + R]).sum() for level, (s, k) in valid.items()}
    print(f"{args.model} ({model.config.distribution} tables): {sum(base.values()) / 8 / frames:.0f} B a frame, "
          f"levels 2-{len(base) + 1}, {frames} frames of {args.valid}")
    for name, tables in candidates.items():
        cost = {level: -np.log2(tables[k, s + R]).sum() for level, (s, k) in valid.items()}
        by_level = " ".join(f"{100 * (cost[level] / base[level] - 1):+.1f}" for level in cost)
        print(f"{name:28s} {sum(cost.values()) / 8 / frames:.0f} B a frame "
              f"({100 * (sum(cost.values()) / sum(base.values()) - 1):+.2f}%); by level (%): {by_level}")


if __name__ == "__main__":
    main()
