"""Rate-distortion optimised tokens: the encoder's choice of what the base layer codes.

The tokenizer's token for a cell is the corner of the hypercube nearest its latent (BSQ: each
bit the sign of one coordinate). A bit whose coordinate lies near zero is almost a coin toss:
the other corner is nearly as near, and the prior may find it far cheaper. So the encoder,
while it codes a tile group by group (the group prior's schedule), picks for each cell the
token t that minimises

    rate(t) + lam * distortion(t)

where rate is -log2 of the probability the range coder will give t (the exact prior's weights,
given the tokens already chosen, which the decoder also holds) and distortion is twice the
sum of the margins |u_i| of the bits t flips: sqrt(bits)/2 times what t adds to the squared
distance between the unit latent u and its code (0 for the tokenizer's own token). The decoder is
unchanged: it decodes whatever tokens were coded. Measured on 200 valid frames (the default
model, every level; all 1,603 in README.md, "Quality levels"): lam = 30 codes level 1 in 340 B instead of 344 at the
same 24.46 dB and every enhanced level 0.2-0.6% smaller at the same PSNR (the enhancement
corrects the base it is given); lam = 20 does as well within 0.1%; on 32 frames lam = 10
lost 0.4 dB at level 1 for 2.4% fewer bytes, and lam = 2 or less wrecks every level. A
pixel-space distortion (the tokenizer decoder's gradient, a first-order estimate of each
flip) did no better than the margins at any weight tried.

An encoder setting, not part of the format: `EFFORT_LAMBDA` maps `Codec(effort=...)` to lam.
"""

from __future__ import annotations

import functools

import numpy as np

from .exact import log2_weights

EFFORT_LAMBDA = {0: None, 1: 30.0}  # effort 0: the tokenizer's tokens as they are
DEFAULT_EFFORT = 1


@functools.cache
def token_signs(bits: int) -> np.ndarray:
    """(2**bits, bits) float64 of ±1: the sign of each coordinate of each token's code (bit i set: +1)."""
    digits = (np.arange(2**bits)[:, None] >> np.arange(bits)) & 1
    return (2.0 * digits - 1.0).astype(np.float64)


def chooser(lam: float):
    """`choose(weights, tokens, margins, exponents=None) -> tokens` for
    ExactTokenPrior.coding_groups: weights (B, m, V) of a group's cells, the tokenizer's tokens
    (B, m) and their margins (B, m, bits); `exponents`, where given, are the weights' indices
    into the exp2 table (exact.softmax_exponents), whose logarithms are a lookup (the same values)."""
    def choose(weights: np.ndarray, tokens: np.ndarray, margins: np.ndarray,
               exponents: np.ndarray | None = None) -> np.ndarray:
        signs = token_signs(margins.shape[-1])
        unit = margins * signs[tokens]  # the latent's coordinates, as far as the margins keep them
        distortion = margins.sum(-1, keepdims=True) - unit @ signs.T  # (B, m, V), 0 at `tokens`
        logs = (np.log2(np.maximum(weights, 1.0)) if exponents is None
                else log2_weights().take(exponents, mode="clip"))
        rate = np.log2(weights.sum(-1, keepdims=True)) - logs
        return np.argmin(rate + lam * distortion, axis=-1)

    return choose
