"""Binary Spherical Quantization (Zhao et al., arXiv 2406.07548).

A latent vector is projected onto the unit sphere in `bits` dimensions and snapped to the
nearest corner of the hypercube scaled onto that sphere, i.e. to ±1/sqrt(bits) in each
coordinate. A code is the integer whose binary digits are the signs. Index<->code conversion
uses arithmetic (floor division and modulo), not bitwise operators, which misbehave on MPS.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _bernoulli_entropy(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-6, 1 - 1e-6)
    return -(p * p.log() + (1 - p) * (1 - p).log())


FULL_ENTROPY_BITS = 12
ENTROPY_SAMPLES = 4096  # latents per batch that the full-codebook entropy looks at


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-12).log()).sum(-1)


class BSQ(nn.Module):
    temperature = 0.05  # distances between neighbouring codes are about 2/bits

    def __init__(self, *, bits: int) -> None:
        super().__init__()
        self.bits = bits
        self.register_buffer("powers", 2 ** torch.arange(bits, dtype=torch.int64), persistent=False)

    @property
    def codebook_size(self) -> int:
        return 2**self.bits

    def forward(self, latents: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Quantize `latents` (..., bits) -> (codes (..., bits), auxiliary losses).

        The losses are the commitment of the latent to its code and the paper's entropy term
        (see `entropy_loss`).

        Runs in float32 even under autocast: the sign of a half-precision value near zero is
        not the sign of the float32 one, and tokens must not depend on the precision.
        """
        with torch.autocast(device_type=latents.device.type, enabled=False):
            unit = nn.functional.normalize(latents.float(), dim=-1)
            hard = torch.where(unit > 0, 1.0, -1.0) / math.sqrt(self.bits)
            codes = unit + (hard - unit).detach()  # straight-through
            losses = {"commitment": (unit - hard.detach()).pow(2).sum(-1).mean()}
            if self.training:
                losses["entropy"] = self.entropy_loss(unit.flatten(0, -2))
                losses["codes_used"] = self.codes_to_index(hard).unique().numel() * torch.ones(())  # a measure, not a loss
        return codes, losses

    def entropy_loss(self, unit: torch.Tensor) -> torch.Tensor:
        """Per-sample entropy minus codebook entropy of the soft code assignment, in nats.

        Each latent should sit confidently at one code while the batch as a whole uses the
        codebook evenly; without this the codes collapse to a few dozen of the 1024. Up to
        FULL_ENTROPY_BITS the soft assignment is over the whole codebook, which also
        penalises bits that copy each other, estimated on at most about 2 * ENTROPY_SAMPLES
        latents of the batch; above, the paper's factorised form (one
        Bernoulli per bit) keeps the cost linear in bits.
        """
        if self.bits <= FULL_ENTROPY_BITS:
            # The (N, K) soft assignment is the costliest tensor in training; a regular subsample
            # of the latents estimates the codebook usage as well and keeps it (4096, K).
            unit = unit[:: max(1, unit.shape[0] // ENTROPY_SAMPLES)]
            codebook = self.index_to_codes(torch.arange(self.codebook_size, device=unit.device))  # (K, bits)
            probabilities = torch.softmax(unit @ codebook.t() / self.temperature, dim=-1)  # (N, K)
            per_sample = _entropy(probabilities).mean()
            return per_sample - _entropy(probabilities.mean(0))
        p_one = torch.sigmoid(unit * (4 / (math.sqrt(self.bits) * self.temperature)))  # (N, bits)
        per_sample = _bernoulli_entropy(p_one).sum(-1).mean()
        return per_sample - _bernoulli_entropy(p_one.mean(0)).sum()

    def codes_to_index(self, codes: torch.Tensor) -> torch.Tensor:
        """(..., bits) codes -> (...) int64 indices; bit i is set where coordinate i is positive."""
        digits = (codes > 0).to(torch.int64)
        return (digits * self.powers).sum(-1)

    def index_to_codes(self, index: torch.Tensor) -> torch.Tensor:
        """(...) int64 indices -> (..., bits) float32 codes on the sphere."""
        digits = torch.div(index.unsqueeze(-1), self.powers, rounding_mode="floor") % 2
        return (digits.float() * 2 - 1) / math.sqrt(self.bits)
