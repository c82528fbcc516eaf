"""Exact integer inference of the prior: the same probabilities on every machine.

A range decoder desynchronises at the first probability that differs by one bit from the
encoder's, and float results differ between instruction sets, thread counts, batch sizes and
devices. So the codec never uses the float model's outputs. It runs a fixed-point copy of it
in which every tensor holds integers:

* activations are integers in units of 2**-FRAC_BITS; weights are integers with one float
  scale per output channel;
* matrix products are taken in float64 over integer operands whose partial sums stay far
  below 2**53, so they are exact in any summation order (any BLAS, any blocking, any device);
* every other step is one IEEE operation that is correctly rounded everywhere (+, -, *, /,
  sqrt) followed by round-half-to-even, in a fixed order, so it too gives the same bits;
* exp is a table lookup: softmax weights are 2**(-z / EXP_STEPS) for integer z, from a table
  built with sqrt and multiplication only (not libm's exp or pow, which may differ).

The integers for a token never depend on which other tokens or images share the batch, so
the teacher-forced pass (encoder) and the KV-cache steps (decoder) agree exactly.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .prior import Prior

FRAC_BITS = 12  # activations in units of 1/4096
WEIGHT_BITS = 15  # |integer weight| <= 2**15 - 1 per output channel
EXP_STEPS = 256  # softmax exponents in steps of 1/256 of a doubling
ATTENTION_BITS = 16  # attention weights are integers <= 2**16
PROBABILITY_BITS = 40  # token weights handed to the range coder are integers <= 2**40
LOG2_E = 1.4426950408889634  # the float64 nearest log2(e), spelled out so no libm is involved
NEG_LARGE = -(2.0**50)  # a masked score: its weight underflows to exactly 0


def _exp2_fraction_table() -> torch.Tensor:
    """2**(-j / EXP_STEPS) for j = 0..EXP_STEPS-1, from sqrt and products only (exact IEEE ops)."""
    roots = []  # roots[k] = 2**(-2**-(k+1)): 2**-0.5, 2**-0.25, ...
    value = 0.5
    for _ in range(int(math.log2(EXP_STEPS))):
        value = math.sqrt(value)
        roots.append(value)
    levels = len(roots)
    table = []
    for j in range(EXP_STEPS):
        product = 1.0
        for k in range(levels):  # bit k of j (from the top) selects 2**(-2**-(k+1))
            if (j // 2 ** (levels - 1 - k)) % 2:
                product *= roots[k]
        table.append(product)
    return torch.tensor(table, dtype=torch.float64)


EXP2_FRACTION = _exp2_fraction_table()


@functools.cache
def _powers_of_two(top_bits: int) -> torch.Tensor:
    """2**(top_bits - e) for e = 0..top_bits+2, exact; 0 past top_bits (the weight rounds to 0)."""
    return torch.tensor([float(2 ** (top_bits - e)) if e <= top_bits else 0.0 for e in range(top_bits + 3)],
                        dtype=torch.float64)


def exp2_weights(exponents: torch.Tensor, top_bits: int) -> torch.Tensor:
    """Integer weights round(2**top_bits * 2**(-z / EXP_STEPS)) of integer-valued z >= 0 (float64)."""
    z = exponents.clamp(max=EXP_STEPS * (top_bits + 2)).to(torch.int64)
    whole, fraction = torch.div(z, EXP_STEPS, rounding_mode="floor"), z % EXP_STEPS
    powers = _powers_of_two(top_bits).to(exponents.device)
    return torch.round(EXP2_FRACTION.to(exponents.device)[fraction] * powers[whole])


def to_exponents(values: torch.Tensor, scale: float) -> torch.Tensor:
    """Integer exponents (units of 1/EXP_STEPS doubling) of integer `values` * `scale` nats."""
    return torch.round(values * (scale * LOG2_E * EXP_STEPS))


class ExactLinear:
    def __init__(self, weight: torch.Tensor) -> None:
        weight = weight.detach().double()  # (out, in)
        peak = weight.abs().amax(dim=1).clamp_min(1e-30)
        self.scale = peak / (2**WEIGHT_BITS - 1)  # (out,)
        self.weight_t = torch.round(weight / self.scale[:, None]).t().contiguous()  # (in, out) integers

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(torch.matmul(x, self.weight_t) * self.scale)


class ExactRMSNorm:
    def __init__(self, weight: torch.Tensor, eps: float) -> None:
        self.weight = weight.detach().double()
        self.eps_int = eps * 4.0**FRAC_BITS  # eps in the units of the integers' mean square

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mean_square = (x * x).sum(-1, keepdim=True) / x.shape[-1]
        factor = float(2**FRAC_BITS) / torch.sqrt(mean_square + self.eps_int)
        return torch.round(x * factor * self.weight)


class ExactCache:
    """Preallocated keys and values (B, heads, length, head_dim) of every layer."""

    def __init__(self, layers: int, shape: tuple[int, int, int, int], device: torch.device) -> None:
        self.keys = [torch.zeros(shape, dtype=torch.float64, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=torch.float64, device=device) for _ in range(layers)]
        self.length = 0


class ExactPrior:
    """Integer-valued twin of a `Prior`; float64 tensors on CPU (or any device: the same bits)."""

    def __init__(self, prior: Prior, device: torch.device | str = "cpu") -> None:
        config = prior.config
        self.config = config
        self.device = torch.device(device)
        one = float(2**FRAC_BITS)

        def table(embedding: torch.nn.Embedding) -> torch.Tensor:
            return torch.round(embedding.weight.detach().double() * one).to(self.device)

        self.token_table = table(prior.token_embedding)
        self.row_table = table(prior.row_embedding)
        self.col_table = table(prior.col_embedding)
        self.layers = []
        for block in prior.blocks:
            self.layers.append({
                "norm1": ExactRMSNorm(block.norm1.weight, block.norm1.eps),
                "qkv": ExactLinear(block.attn.qkv.weight),
                "proj": ExactLinear(block.attn.proj.weight),
                "norm2": ExactRMSNorm(block.norm2.weight, block.norm2.eps),
                "up": ExactLinear(block.up.weight),
                "down": ExactLinear(block.down.weight),
            })
        for layer in self.layers:
            for part in layer.values():
                for name, value in vars(part).items():
                    if isinstance(value, torch.Tensor):
                        setattr(part, name, value.to(self.device))
        self.norm = ExactRMSNorm(prior.norm.weight, prior.norm.eps)
        self.norm.weight = self.norm.weight.to(self.device)
        self.head = ExactLinear(prior.head.weight)
        self.head.weight_t, self.head.scale = self.head.weight_t.to(self.device), self.head.scale.to(self.device)
        self.n_heads = config.n_heads
        head_dim = config.d_model // config.n_heads
        # score (integer q.k, units 2**-2F) -> nats: / sqrt(head_dim) / 4**F
        self.score_scale = 1.0 / math.sqrt(head_dim) / 4.0**FRAC_BITS
        self.logit_scale = 1.0 / 2.0**FRAC_BITS
        self.start_token = prior.start_token

    def _embed(self, inputs: torch.Tensor, positions: torch.Tensor, cols: int) -> torch.Tensor:
        rows_of, cols_of = torch.div(positions, cols, rounding_mode="floor"), positions % cols
        return self.token_table[inputs] + self.row_table[rows_of] + self.col_table[cols_of]

    def _attention(self, layer: dict, x: torch.Tensor, cache: ExactCache | None, index: int) -> torch.Tensor:
        batch, length, dim = x.shape
        qkv = layer["qkv"](x).view(batch, length, 3, self.n_heads, dim // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, T, hd)
        past = 0
        if cache is not None:
            past = cache.length
            cache.keys[index][:, :, past : past + length] = k
            cache.values[index][:, :, past : past + length] = v
            k, v = cache.keys[index][:, :, : past + length], cache.values[index][:, :, : past + length]
        scores = to_exponents(torch.matmul(q, k.transpose(-1, -2)), self.score_scale)  # (B, H, T, S)
        if length > 1:
            visible = torch.ones(length, k.shape[2], dtype=torch.bool, device=x.device).tril(past)
            scores = scores.masked_fill(~visible, NEG_LARGE)
        weights = exp2_weights(scores.amax(-1, keepdim=True) - scores, ATTENTION_BITS)
        mixed = torch.round(torch.matmul(weights, v) / weights.sum(-1, keepdim=True))
        return layer["proj"](mixed.transpose(1, 2).reshape(batch, length, dim))

    def _run(self, x: torch.Tensor, cache: ExactCache | None) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = x + self._attention(layer, layer["norm1"](x), cache, index)
            x = x + layer["down"](torch.relu(layer["up"](layer["norm2"](x))))
        if cache is not None:
            cache.length += x.shape[1]
        return self.head(self.norm(x))  # integer logits, units 2**-FRAC_BITS

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced integer logits (B, h*w, vocab) of token grids (B, h, w)."""
        batch, rows, cols = tokens.shape
        flat = tokens.flatten(1).to(self.device)
        inputs = torch.cat([torch.full_like(flat[:, :1], self.start_token), flat[:, :-1]], dim=1)
        positions = torch.arange(rows * cols, device=self.device)
        return self._run(self._embed(inputs, positions, cols), None)

    def new_cache(self, batch: int, length: int) -> ExactCache:
        head_dim = self.config.d_model // self.n_heads
        return ExactCache(len(self.layers), (batch, self.n_heads, length, head_dim), self.device)

    def step(self, previous: torch.Tensor, position: int, cols: int, cache: ExactCache) -> torch.Tensor:
        """Integer logits (B, vocab) for raster `position` given previous tokens (B,)."""
        positions = torch.tensor([position], device=self.device)
        x = self._embed(previous.to(self.device)[:, None], positions, cols)
        return self._run(x, cache)[:, 0]

    def weights(self, logits: torch.Tensor) -> np.ndarray:
        """Integer logits (..., vocab) -> unnormalised integer token weights (float64 numpy),
        what the range coder reads. Exactly reproducible: see the module docstring."""
        exponents = to_exponents(logits, self.logit_scale)
        weights = exp2_weights(exponents.amax(-1, keepdim=True) - exponents, PROBABILITY_BITS)
        return weights.cpu().numpy()
