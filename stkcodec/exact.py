"""Exact integer inference of the prior: the same probabilities on every machine.

A range decoder desynchronises at the first probability that differs by one bit from the
encoder's, and float results differ between instruction sets, thread counts, batch sizes and
devices. So the codec never uses the float model's outputs. It runs a fixed-point copy of it
in which every tensor holds integers:

* activations are integers in units of 2**-FRAC_BITS; weights are integers with one float
  scale per output channel;
* matrix products are exact in any summation order (any BLAS, any blocking, any thread
  count): in the "float64" arithmetic (every shipped model's) they are taken in
  float64 over integer operands whose partial sums stay far below 2**53; in the "int8"
  arithmetic (`PriorConfig.arithmetic`) every operand of a product is first rounded to an
  integer of at most 127 in magnitude (7 bits for attention weights) on a step stored with the
  model, so the products run in float32, about 2.5x faster here, with every partial sum at most
  2**24 (`products32` cuts longer sums);
* every other step is one IEEE operation that is correctly rounded everywhere (+, -, *, /,
  sqrt) followed by round-half-to-even, in a fixed order, so it too gives the same bits;
* exp is a table lookup: softmax weights are 2**(-z / EXP_STEPS) for integer z, from a table
  built with sqrt and multiplication only (not libm's exp or pow, which may differ).

The integers for a token never depend on which other tokens or images share the batch, so
the teacher-forced pass (encoder) and the KV-cache steps (decoder) agree exactly.

The element-wise steps run in NumPy: decoding is a loop of one small step per token, and
NumPy's per-operation overhead is a fraction of PyTorch's, which made up most of a step's
time. The products run in PyTorch's kernels (see `_matmul`).
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import constriction
import numpy as np
import torch

from . import kernels
from .schedule import plan

if TYPE_CHECKING:  # prior.py builds its twins from here (`TokenPrior.exact`): no import back at run time
    from .prior import GroupPrior, TokenPrior

FRAC_BITS = 12  # activations in units of 1/4096
WEIGHT_BITS = 15  # |integer weight| <= 2**15 - 1 per output channel
EXP_STEPS = 256  # softmax exponents in steps of 1/256 of a doubling
ATTENTION_BITS = 16  # attention weights are integers <= 2**16
INT8 = 127  # |operand| of a product in the "int8" arithmetic
INT8_ATTENTION_BITS = 7  # its attention weights are integers <= 2**7, so weight x value <= 2**14
FLOAT32_EXACT = 2**24  # every integer up to this is a float32, so integer sums below it are exact
PROBABILITY_BITS = 40  # token weights handed to the range coder are integers <= 2**40
LOG2_E = 1.4426950408889634  # the float64 nearest log2(e), spelled out so no libm is involved
NEG_LARGE = -(2.0**50)  # a masked score: its weight underflows to exactly 0
TEACHER_FORCED_TILES = 2  # grids per teacher-forced pass of an encoder (memory only: the same integers)
ATTENTION_ELEMENTS = 2**21  # scores per slice of a batch's attention (16 MB of float64; memory only: the same integers)
FAMILY = constriction.stream.model.Categorical(perfect=False)  # how the range coder reads token weights


def root_products(start: float, count: int) -> np.ndarray:
    """For j < 2**count, the product of the successive square roots of `start` that j's bits
    select (its top bit the first root), multiplied in that order: sqrt and * only, exact IEEE
    operations, so the same bits on every machine (exp2 tables here and in enhance_exact.py)."""
    roots = []
    value = start
    for _ in range(count):
        value = math.sqrt(value)
        roots.append(value)
    table = []
    for j in range(2**count):
        product = 1.0
        for k in range(count):
            if (j >> (count - 1 - k)) & 1:
                product *= roots[k]
        table.append(product)
    return np.array(table, dtype=np.float64)


EXP2_FRACTION = root_products(0.5, int(math.log2(EXP_STEPS)))  # 2**(-j / EXP_STEPS), j < EXP_STEPS


@functools.cache
def _exp2_table(top_bits: int) -> np.ndarray:
    """round(2**top_bits * 2**(-z / EXP_STEPS)) for z = 0..EXP_STEPS*(top_bits+2): each entry the
    correctly rounded product of a fraction from EXP2_FRACTION and an exact power of two; 0 past
    2**-(top_bits+1), where every weight rounds to 0."""
    whole, fraction = np.divmod(np.arange(EXP_STEPS * (top_bits + 2) + 1), EXP_STEPS)
    powers = np.array([float(2 ** (top_bits - e)) if e <= top_bits else 0.0 for e in range(top_bits + 3)])
    return np.round(EXP2_FRACTION[fraction] * powers[whole])


@functools.cache
def _exp2_table32(top_bits: int) -> np.ndarray:
    return _exp2_table(top_bits).astype(np.float32)  # small integers: the same values


def exp2_weights(exponents: np.ndarray, top_bits: int, dtype: type = np.float64) -> np.ndarray:
    """Integer weights round(2**top_bits * 2**(-z / EXP_STEPS)) of integer-valued z >= 0, one
    lookup per element; float64, or float32 for top_bits <= 24."""
    table = _exp2_table(top_bits) if dtype == np.float64 else _exp2_table32(top_bits)
    # mode="clip" sends every z past the table to its last entry, 0; int64 (intp) indices
    # spare NumPy a conversion that costs more than the lookup.
    return table.take(exponents.astype(np.int64), mode="clip")


def to_exponents(values: np.ndarray, scale: float, *, out: np.ndarray | None = None) -> np.ndarray:
    """Integer exponents (units of 1/EXP_STEPS doubling) of integer `values` * `scale` nats;
    `out=values` works in place."""
    product = np.multiply(values, scale * LOG2_E * EXP_STEPS, out=out)
    return np.round(product, out=product)


# x + ROUNDING is x rounded to an integer, half to even (IEEE addition: the float64s between 2**52
# and 2**53 are the integers), for |x| < 2**51; its bits as an int64 are ROUNDING's plus that integer.
ROUNDING = 1.5 * 2.0**52
ROUNDING_BITS = int(np.array(ROUNDING).view(np.int64))


def _softmax_exponents(values: np.ndarray, scale: float) -> torch.Tensor:
    factor = scale * LOG2_E * EXP_STEPS  # as to_exponents forms it
    values = torch.from_numpy(values)
    rounded = torch.mul(values.to(torch.float64), factor).add_(ROUNDING)  # a new array, in float64
    top = values.amax(-1, keepdim=True).to(torch.float64).mul_(factor).add_(ROUNDING)
    exponents = rounded.view(torch.int64)
    return torch.sub(top.view(torch.int64), exponents, out=exponents)


def softmax_exponents(values: np.ndarray, scale: float) -> np.ndarray:
    """max(e) - e (int64) over the last axis of e = `to_exponents(values, scale)`, in three passes
    over `values` (float32 or float64 integers) instead of five: the product lands in float64,
    the rounding is an addition whose int64 bits hold the integer, and the largest exponent is
    the largest value's (rounding is monotone). In PyTorch's element-wise kernels (both cores):
    IEEE products and sums, the same values as NumPy's."""
    return _softmax_exponents(values, scale).numpy()


@functools.cache
def _table_tensor(top_bits: int, dtype: type) -> torch.Tensor:
    return torch.from_numpy(_exp2_table(top_bits) if dtype == np.float64 else _exp2_table32(top_bits))


def softmax_weights(values: np.ndarray, scale: float, top_bits: int, dtype: type = np.float64) -> np.ndarray:
    """`exp2_weights(max(e) - e, top_bits, dtype)` of e = `to_exponents(values, scale)` over the
    last axis: the same integers as those two steps (see `softmax_exponents`)."""
    table = _table_tensor(top_bits, dtype)
    exponents = _softmax_exponents(values, scale).clamp_(max=len(table) - 1)  # past the table: its last entry, 0
    return torch.take(table, exponents).numpy()


@functools.cache
def log2_weights(top_bits: int = PROBABILITY_BITS) -> np.ndarray:
    """log2(max(w, 1)) of each weight w of `_exp2_table(top_bits)`, indexed as it is: what an
    encoder that weighs rates (rdo.py) takes of a weight, one lookup instead of a logarithm."""
    return np.log2(np.maximum(_exp2_table(top_bits), 1.0))


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b, also over stacks of matrices, in PyTorch's kernels: NumPy loops over a stack one
    small product at a time, and its BLAS threads would fight PyTorch's for the cores. Exact
    like every product here, whichever kernel and summation order run."""
    return torch.matmul(torch.from_numpy(a), torch.from_numpy(b)).numpy()


def products32(a: np.ndarray, b: np.ndarray, bound: int) -> np.ndarray:
    """a @ b of integer float32 operands with |a_ik * b_kj| <= `bound`, exact: the inner dimension
    is cut into runs whose sums stay within 2**24, each run's product taken in float32 (exact in
    any order), and the runs added in float64 (exact: integers far below 2**53). One run gives
    float32 (integers, exact), more give float64; callers scale in float64 either way."""
    run = max(1, FLOAT32_EXACT // bound)
    inner = a.shape[-1]
    if inner <= run:
        return torch.matmul(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    total = np.zeros((*np.broadcast_shapes(a.shape[:-2], b.shape[:-2]), a.shape[-2], b.shape[-1]))
    for start in range(0, inner, run):
        total += torch.matmul(torch.from_numpy(a[..., start : start + run]),
                              torch.from_numpy(b[..., start : start + run, :])).numpy()
    return total


def _rounded_tensor(x: np.ndarray, step: float, peak: int) -> torch.Tensor:
    """round(x / step) within ±peak, in PyTorch's element-wise kernels (both cores, one pass
    each, in place): IEEE division and rounding half to even, the same values as NumPy's."""
    return torch.div(torch.from_numpy(x), step).round_().clamp_(-peak, peak)


def quantise(x: np.ndarray, step: float, peak: int = INT8) -> np.ndarray:
    """Integers x (float64) -> round(x / step) within ±peak, as float32 operands of `products32`."""
    return _rounded_tensor(x, step, peak).to(torch.float32).numpy()


def _float64(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().double().cpu().numpy()


class ExactLinear:
    def __init__(self, weight: torch.Tensor) -> None:
        weight = _float64(weight)  # (out, in)
        peak = np.maximum(np.abs(weight).max(axis=1), 1e-30)
        self.scale = peak / (2**WEIGHT_BITS - 1)  # (out,)
        self.weight_t = np.ascontiguousarray(np.round(weight / self.scale[:, None]).T)  # (in, out) integers

    def __call__(self, x: np.ndarray) -> np.ndarray:
        flat = _matmul(x.reshape(-1, x.shape[-1]), self.weight_t)
        return np.round(flat * self.scale).reshape(*x.shape[:-1], -1)


class ExactLinear8:
    """The "int8" arithmetic's linear layer: weights rounded to at most 127 per output channel,
    inputs to at most 127 on `step` (float units of the model's activations), float32 products."""

    def __init__(self, integers: torch.Tensor, scale: torch.Tensor, step: float) -> None:
        """`integers` (out, in) int8 and `scale` (out,) float32: the prior's `int8_integers`."""
        self.weight_t = np.ascontiguousarray(integers.numpy().T).astype(np.float32)
        scale = _float64(scale)
        self.step = float(step) * 2.0**FRAC_BITS  # in the integers' units (a power of two times a float32: exact)
        self.factor = scale * self.step  # integer product -> output units, one rounding below

        self.kernel = kernels.int8_product(self.weight_t)  # the same integers, faster, where it runs
        self.factor_tensor = torch.from_numpy(self.factor)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        flat = x.reshape(-1, x.shape[-1])
        operands = _rounded_tensor(flat, self.step, INT8)
        if self.kernel is not None and len(flat):
            products = self.kernel(operands.numpy())
        else:
            products = products32(operands.to(torch.float32).numpy(), self.weight_t, INT8 * INT8)
        # float32 or float64 integers times float64 factors: the product in float64 (type
        # promotion, as NumPy's), rounded
        out = torch.mul(torch.from_numpy(products), self.factor_tensor).round_()
        return out.numpy().reshape(*x.shape[:-1], -1)


class ExactRMSNorm:
    def __init__(self, weight: torch.Tensor, eps: float) -> None:
        self.weight = _float64(weight)
        self.eps_int = eps * 4.0**FRAC_BITS  # eps in the units of the integers' mean square

    def __call__(self, x: np.ndarray) -> np.ndarray:
        mean_square = (x * x).sum(-1, keepdims=True) / x.shape[-1]
        factor = float(2**FRAC_BITS) / np.sqrt(mean_square + self.eps_int)
        return np.round(x * factor * self.weight)


class ExactCache:
    """Preallocated keys and values (B, heads, length, head_dim) of every layer: float64 integers,
    or, in the "int8" arithmetic, the float32 operands they are rounded to (half the memory, and
    each is rounded once, when it is cached, instead of at every step that reads it)."""

    def __init__(self, layers: int, shape: tuple[int, int, int, int], dtype: type = np.float64) -> None:
        self.keys = [np.zeros(shape, dtype) for _ in range(layers)]
        self.values = [np.zeros(shape, dtype) for _ in range(layers)]
        self.length = 0


class ExactTokenPrior:
    """What the integer twins of both kinds of prior share, in float64 NumPy arrays: the
    embeddings, the blocks and the head; `weights` turns integer logits (units 2**-FRAC_BITS)
    into what the range coder reads. Each kind owns its coding order: `logits` and
    `coding_logits` (the encoder's, teacher-forced), `symbol_order`, and `decode_chunk`."""

    def __init__(self, prior: TokenPrior) -> None:
        config = prior.config
        self.config = config
        one = float(2**FRAC_BITS)

        def table(embedding: torch.nn.Embedding) -> np.ndarray:
            return np.round(_float64(embedding.weight) * one)

        self.token_table = table(prior.token_embedding)
        self.row_table = table(prior.row_embedding)
        self.col_table = table(prior.col_embedding)
        self.int8 = config.arithmetic == "int8"
        steps = prior.int8_step_table() if self.int8 else {}  # {name: step}, float units

        def linear(weight: str, step: str):
            if self.int8:
                return ExactLinear8(*prior.int8_integers[weight], steps[step])
            return ExactLinear(prior.get_parameter(weight))

        self.layers = [{
            "norm1": ExactRMSNorm(block.norm1.weight, block.norm1.eps),
            "qkv": linear(f"blocks.{i}.attn.qkv.weight", f"{i}.qkv"),
            "proj": linear(f"blocks.{i}.attn.proj.weight", f"{i}.proj"),
            "norm2": ExactRMSNorm(block.norm2.weight, block.norm2.eps),
            "up": linear(f"blocks.{i}.up.weight", f"{i}.up"),
            "down": linear(f"blocks.{i}.down.weight", f"{i}.down"),
            **({part: steps[f"{i}.{part}"] * 2.0**FRAC_BITS for part in "qkv"} if self.int8 else {}),
        } for i, block in enumerate(prior.blocks)]
        self.norm = ExactRMSNorm(prior.norm.weight, prior.norm.eps)
        self.head = linear("head.weight", "head")
        self.n_heads = config.n_heads
        head_dim = config.d_model // config.n_heads
        # score (integer q.k, units 2**-2F) -> nats: / sqrt(head_dim) / 4**F
        self.score_scale = 1.0 / math.sqrt(head_dim) / 4.0**FRAC_BITS
        self.logit_scale = 1.0 / 2.0**FRAC_BITS
        self.start_token = prior.start_token

    def _embed(self, inputs: np.ndarray, positions: np.ndarray, cols: int) -> np.ndarray:
        rows_of, cols_of = np.divmod(positions, cols)
        return self.token_table[inputs] + self.row_table[rows_of] + self.col_table[cols_of]

    def _attention(self, layer: dict, x: np.ndarray, cache: ExactCache | None, index: int,
                   keys: int | None, mask: np.ndarray | None, first: int = 0) -> np.ndarray:
        """Causal self-attention (raster); or, with `keys`, the first `keys` entries are the keys
        and values, and `mask` (T, keys) says what each entry sees (None: every cached key).
        Outputs for the entries from `first` on (the others only give keys and values)."""
        batch, length, dim = x.shape
        qkv = layer["qkv"](x).reshape(batch, length, 3, self.n_heads, dim // self.n_heads).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0][:, :, first:], qkv[1], qkv[2]  # (B, H, T, hd)
        length -= first
        if mask is not None:
            mask = mask[first:]
        if keys is not None:
            k, v = k[:, :, :keys], v[:, :, :keys]
        if self.int8:  # the products' operands: the same integers whether cached or not
            k, v = quantise(k, layer["k"]), quantise(v, layer["v"])
        past = 0
        if cache is not None:
            past, new = cache.length, k.shape[2]
            cache.keys[index][:, :, past : past + new] = k
            cache.values[index][:, :, past : past + new] = v
            k, v = cache.keys[index][:, :, : past + new], cache.values[index][:, :, : past + new]
        # The (B, H, T, S) arrays of scores and weights dominate time and memory: a batch of many
        # tiles (a chunk of a large image, or many frames) runs in slices of the batch, each entry's
        # integers the same either way (no entry reads another's).
        step = max(1, ATTENTION_ELEMENTS // (q.shape[1] * q.shape[2] * k.shape[2]))
        parts = [self._mix(layer, q[b : b + step], k[b : b + step], v[b : b + step], mask, keys, length, past)
                 for b in range(0, batch, step)]
        mixed = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return layer["proj"](mixed.transpose(0, 2, 1, 3).reshape(batch, length, dim))

    def _mix(self, layer: dict, q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None,
             keys: int | None, length: int, past: int) -> np.ndarray:
        """Attention of queries q (b, H, T, hd) over keys and values (b, H, S, hd): (b, H, T, hd)
        integers (in the "int8" arithmetic k and v are already rounded to their operands)."""
        # In place where it can be: these arrays dominate the time, and fresh ones page-fault.
        if self.int8:
            scores = products32(quantise(q, layer["q"]), k.swapaxes(-1, -2), INT8 * INT8)
            scale = self.score_scale * layer["q"] * layer["k"]
        else:
            scores = _matmul(q, k.swapaxes(-1, -2))  # (B, H, T, S) integer q.k
            scale = self.score_scale
        top_bits, dtype = (INT8_ATTENTION_BITS, np.float32) if self.int8 else (ATTENTION_BITS, np.float64)
        causal = mask is None and keys is None and length > 1
        if mask is None and not causal:  # every key seen: a decoder's and an encoder's group steps
            weights = softmax_weights(scores, scale, top_bits, dtype)
        else:  # float64 from here, as in the float64 arithmetic
            scores = scores.astype(np.float64, copy=False)
            to_exponents(scores, scale, out=scores)
            scores[..., ~(mask if mask is not None else np.tri(length, k.shape[2], past, dtype=bool))] = NEG_LARGE
            np.subtract(scores.max(-1, keepdims=True), scores, out=scores)
            weights = exp2_weights(scores, top_bits, dtype)
        if self.int8:
            mixed = products32(weights, v, 2**INT8_ATTENTION_BITS * INT8)
            mixed = mixed.astype(np.float64, copy=False) * layer["v"]  # float64 under any NumPy's promotion rules
            mixed = np.round(mixed / weights.sum(-1, keepdims=True, dtype=np.float64))
        else:
            mixed = np.round(_matmul(weights, v) / weights.sum(-1, keepdims=True))
        return mixed

    def _run(self, x: np.ndarray, cache: ExactCache | None, *, keys: int | None = None,
             mask: np.ndarray | None = None, readout: slice = slice(None)) -> np.ndarray:
        """Integer logits (units 2**-FRAC_BITS) of the entries `readout` of x (B, T, d)."""
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            # The last layer's outputs count only for `readout` (a group prior's queries): the
            # entries before it only give that layer its keys and values.
            first = (readout.start or 0) if index == last and keys is not None else 0
            x = x[:, first:] + self._attention(layer, layer["norm1"](x), cache, index, keys, mask, first)
            x = x + layer["down"](np.maximum(layer["up"](layer["norm2"](x)), 0.0))
        if cache is not None:
            cache.length += x.shape[1] if keys is None else keys
        return self.head(self.norm(x if first else x[:, readout]))

    def new_cache(self, batch: int, length: int) -> ExactCache:
        head_dim = self.config.d_model // self.n_heads
        return ExactCache(len(self.layers), (batch, self.n_heads, length, head_dim),
                          np.float32 if self.int8 else np.float64)

    def weights(self, logits: np.ndarray) -> np.ndarray:
        """Integer logits (..., vocab) -> unnormalised integer token weights (float64), what the
        range coder reads. Exactly reproducible: see the module docstring."""
        return softmax_weights(logits, self.logit_scale, PROBABILITY_BITS)

    def coding_groups(self, tokens: np.ndarray, margins: np.ndarray | None = None, choose=None):
        """What an encoder codes, a group of cells at a time in coding order, from token grids
        (B, h, w): (raster cells (m,), the tokens coded there (B, m), their weights (B, m, vocab)).
        `choose` (rdo.chooser) may replace tokens as they are coded, given their `margins`
        (B, h, w, bits). This prior's one group is every cell, from teacher-forced passes of
        TEACHER_FORCED_TILES grids (its attention scores are (B, heads, T, T)); it codes the tokens
        as they are (a group prior overrides it)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        batch, rows, cols = tokens.shape
        weights = np.concatenate([self.weights(self.coding_logits(tokens[start : start + TEACHER_FORCED_TILES]))
                                  for start in range(0, batch, TEACHER_FORCED_TILES)])
        yield self.symbol_order(rows, cols), tokens.reshape(batch, rows * cols), weights

    def decode_chunk(self, decoders: list, tiles: int, rows: int, cols: int) -> np.ndarray:
        """The symbols of a chunk of `tiles` tiles of rows×cols for each stream (one decoder
        each): (streams*tiles, rows*cols), raster order per tile."""
        raise NotImplementedError


class ExactPrior(ExactTokenPrior):
    """Integer-valued twin of a raster `Prior`: `logits` (teacher-forced, the encoder) and
    `step` (KV cache, the decoder) give the same integers; a decoder takes one token of every
    tile of a chunk per step."""

    def logits(self, tokens: torch.Tensor | np.ndarray) -> np.ndarray:
        """Teacher-forced integer logits (B, h*w, vocab) of token grids (B, h, w)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        batch, rows, cols = tokens.shape
        flat = tokens.reshape(batch, rows * cols)
        inputs = np.concatenate([np.full((batch, 1), self.start_token), flat[:, :-1]], axis=1)
        return self._run(self._embed(inputs, np.arange(rows * cols), cols), None)

    def symbol_order(self, rows: int, cols: int) -> np.ndarray:
        """Raster indices of a tile's cells in the order they are coded."""
        return np.arange(rows * cols)

    def coding_logits(self, tokens: torch.Tensor | np.ndarray) -> np.ndarray:
        """The integer logits (B, h*w, vocab) an encoder codes with: the teacher-forced pass."""
        return self.logits(tokens)

    def step(self, previous: torch.Tensor | np.ndarray, position: int, cols: int, cache: ExactCache) -> np.ndarray:
        """Integer logits (B, vocab) for raster `position` given previous tokens (B,)."""
        previous = np.asarray(previous, dtype=np.int64)
        x = self._embed(previous[:, None], np.array([position]), cols)
        return self._run(x, cache)[:, 0]

    def decode_chunk(self, decoders: list, tiles: int, rows: int, cols: int) -> np.ndarray:
        count = len(decoders) * tiles
        length = rows * cols
        cache = self.new_cache(count, length)
        previous = np.full(count, self.start_token, dtype=np.int64)
        symbols = np.empty((count, length), dtype=np.int64)
        for position in range(length):
            weights = self.weights(self.step(previous, position, cols, cache))  # (count, V)
            for slot in range(count):
                symbols[slot, position] = decoders[slot // tiles].decode(FAMILY, weights[slot : slot + 1])[0]
            previous = symbols[:, position]
        return symbols


class ExactGroupPrior(ExactTokenPrior):
    """Integer-valued twin of a `GroupPrior`: `logits` (teacher-forced, the encoder) and
    `group_step` (one group per call with the KV cache, the decoder) give the same integers;
    a decoder takes one group of every tile of a chunk per step, each stream's symbols in one call."""

    def __init__(self, prior: GroupPrior) -> None:
        super().__init__(prior)
        self.query = np.round(_float64(prior.query) * float(2**FRAC_BITS))
        self.schedule = prior.config.schedule

    def symbol_order(self, rows: int, cols: int) -> np.ndarray:
        return plan(self.schedule, rows, cols).order

    def _queries(self, positions: np.ndarray, cols: int, batch: int) -> np.ndarray:
        rows_of, cols_of = np.divmod(positions, cols)
        queries = self.row_table[rows_of] + self.col_table[cols_of] + self.query  # (m, d)
        return np.broadcast_to(queries, (batch, *queries.shape))

    def _start(self, batch: int) -> np.ndarray:
        return np.broadcast_to(self.token_table[self.start_token], (batch, 1, self.token_table.shape[1]))

    def logits(self, tokens: torch.Tensor | np.ndarray) -> np.ndarray:
        """Teacher-forced integer logits (B, h*w, vocab), raster order, of token grids (B, h, w)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        batch, rows, cols = tokens.shape
        tile = plan(self.schedule, rows, cols)
        length = rows * cols
        x = np.concatenate([self._start(batch), self._embed(tokens.reshape(batch, length)[:, tile.order], tile.order, cols),
                            self._queries(tile.order, cols, batch)], axis=1)  # (B, 1 + 2T, d)
        logits = self._run(x, None, keys=1 + length, mask=tile.visibility(), readout=slice(1 + length, None))
        return logits[:, np.argsort(tile.order)]

    def coding_logits(self, tokens: torch.Tensor | np.ndarray) -> np.ndarray:
        """The integer logits (B, h*w, vocab), raster order, that an encoder codes with: the
        decoder's own group steps (the same integers as `logits`, at about half its work, since
        they skip what the teacher-forced pass's masks throw away)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        batch, rows, cols = tokens.shape
        logits = np.empty((batch, rows * cols, self.config.vocab_size))
        for cells, group_logits in self._group_steps(tokens.reshape(batch, rows * cols), rows, cols):
            logits[:, cells] = group_logits
        return logits

    def _group_steps(self, flat: np.ndarray, rows: int, cols: int):
        """(raster cells, integer logits (B, len(cells), vocab)) of each group in turn, each given
        the tokens of `flat` (B, rows*cols) as they are when the group before it is asked for: a
        caller may replace a group's tokens before the next step reads them."""
        tile = plan(self.schedule, rows, cols)
        cache = self.new_cache(flat.shape[0], 1 + rows * cols)
        for group in range(tile.count):
            before = tile.members(group - 1) if group else None
            yield tile.members(group), self.group_step(flat[:, before] if group else None, before,
                                                       tile.members(group), cols, cache)

    def coding_groups(self, tokens: np.ndarray, margins: np.ndarray | None = None, choose=None):
        """The decoder's own group steps, one group at a time (so an encoder holds one group's
        weights, not a tile's); with `choose`, each group's tokens chosen from its weights."""
        batch, rows, cols = np.shape(tokens)
        flat = np.array(tokens, dtype=np.int64).reshape(batch, rows * cols)  # a copy: the chosen tokens go in it
        if choose is not None:
            margins = np.asarray(margins, dtype=np.float64).reshape(batch, rows * cols, -1)
        for cells, group_logits in self._group_steps(flat, rows, cols):
            exponents = softmax_exponents(group_logits, self.logit_scale)  # as self.weights
            weights = _exp2_table(PROBABILITY_BITS).take(exponents, mode="clip")
            if choose is not None:
                flat[:, cells] = choose(weights, flat[:, cells], margins[:, cells], exponents)
            yield cells, flat[:, cells], weights

    def group_step(self, context: np.ndarray | None, context_cells: np.ndarray | None, cells: np.ndarray,
                   cols: int, cache: ExactCache) -> np.ndarray:
        """Integer logits (B, len(cells), vocab) of raster `cells`, given the tokens `context`
        (B, m) of the group before at `context_cells` (None for the first group)."""
        batch = cache.keys[0].shape[0]
        entries = self._start(batch) if context is None else self._embed(np.asarray(context, dtype=np.int64),
                                                                         context_cells, cols)
        x = np.concatenate([entries, self._queries(cells, cols, batch)], axis=1)
        return self._run(x, cache, keys=entries.shape[1], readout=slice(entries.shape[1], None))


    def decode_chunk(self, decoders: list, tiles: int, rows: int, cols: int) -> np.ndarray:
        count = len(decoders) * tiles
        schedule = plan(self.schedule, rows, cols)
        cache = self.new_cache(count, 1 + rows * cols)
        symbols = np.empty((count, rows * cols), dtype=np.int64)
        for group in range(schedule.count):
            cells = schedule.members(group)
            before = schedule.members(group - 1) if group else None
            context = symbols[:, before] if group else None
            weights = self.weights(self.group_step(context, before, cells, cols, cache))  # (count, m, V)
            for stream, decoder in enumerate(decoders):
                own = slice(stream * tiles, (stream + 1) * tiles)
                probabilities = weights[own].transpose(1, 0, 2).reshape(len(cells) * tiles, -1)  # cell-major, as coded
                symbols[own, cells] = decoder.decode(FAMILY, probabilities).reshape(len(cells), tiles).T
        return symbols


def exact_prior(prior: TokenPrior) -> ExactTokenPrior:
    """The exact twin of a float prior of either kind (its own `exact()`)."""
    return prior.exact()
