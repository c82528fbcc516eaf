"""Exact integer inference of the enhancement layer's entropy model, and its coding tables.

Everything that decides a probability is computed as in `exact.py`: integers in units of
2**-FRAC_BITS, products in float64 over integer operands (exact in any order), every other step
one correctly rounded IEEE operation followed by round-half-to-even. Gains come from an exp2 built
of sqrt and products (`exp2`), never from libm. The coding tables (one discretised Gaussian, or
Laplace for a model of that `distribution`, per scale of `enhancer.SCALE_MIN * 2**(k / SCALE_STEPS)`)
are integrated the same way, so they are the same on every machine and need not be stored.

Symbols are coded with constriction's queue coder: per pass of the checkerboard, the symbols of
the pass sorted (stably) by their scale index, each run of one index with that index's table.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import constriction
import numpy as np
import torch
from torch.nn import functional as F

from .enhancer import ANCHOR_RATE, LAPLACE_DIVERSITY, SCALE_MIN, SCALE_STEPS, SCALES, Enhancer, checkerboard
from .exact import EXP2_FRACTION, EXP_STEPS, FRAC_BITS, LOG2_E, WEIGHT_BITS, _float64, _matmul, root_products

SYMBOL_RANGE = 255  # symbols are clamped to [-SYMBOL_RANGE, SYMBOL_RANGE] (part of the format)
ONE = float(2**FRAC_BITS)
LN2_UNITS = 2839  # round(ln 2 * 2**FRAC_BITS): a log scale's step between tables is this / SCALE_STEPS
LOG_SCALE_MIN_UNITS = -9041  # round(ln(SCALE_MIN) * 2**FRAC_BITS)
TABLE_SAMPLES = 16  # midpoints per unit bin when a table is integrated
COLUMN_ELEMENTS = 2**22  # a context network's first-layer columns per slice of tiles (32 MB; memory only)


FINE_FRACTION = root_products(EXP2_FRACTION[1], 8)  # 2**(-j / 2**16), j < 256: past EXP2_FRACTION's roots
FRACTION_STEPS = EXP_STEPS * len(FINE_FRACTION)  # 2**16


def exp2(values: np.ndarray) -> np.ndarray:
    """2**values from EXP2_FRACTION and FINE_FRACTION (sqrt and products only) and exact powers
    of two: relative error about 2**-17, the same bits on every machine."""
    values = np.asarray(values, dtype=np.float64)
    whole = np.floor(values)
    steps = np.round((1.0 - (values - whole)) * FRACTION_STEPS)  # 2**frac = 2 * 2**-(1 - frac)
    top = steps >= FRACTION_STEPS
    steps = np.where(top, 0, steps).astype(np.int64)
    fraction = EXP2_FRACTION[steps >> 8] * FINE_FRACTION[steps & 255]
    return _normal(np.ldexp(np.where(top, 1.0, 2.0 * fraction), whole.astype(np.int64)))


def _normal(values: np.ndarray) -> np.ndarray:
    """Subnormal values -> 0. A process may flush subnormals to zero (training does:
    torch.set_flush_denormal) or not, so they would make the tables differ between processes;
    every normal result is the same either way, and a subnormal one is 0 in both."""
    return np.where(values < np.finfo(np.float64).tiny, 0.0, values)


def table_scales() -> np.ndarray:
    """SCALE_MIN * 2**(k / SCALE_STEPS) for k < SCALES, by products of an exact root."""
    root = 2.0
    for _ in range(int(math.log2(SCALE_STEPS))):
        root = math.sqrt(root)
    steps = [1.0]
    for _ in range(SCALE_STEPS - 1):
        steps.append(steps[-1] * root)
    return np.array([SCALE_MIN * math.ldexp(steps[k % SCALE_STEPS], k // SCALE_STEPS) for k in range(SCALES)])


def _gaussian_table(scales: np.ndarray) -> np.ndarray:
    """(K, V): each symbol's bin of a zero-mean Gaussian, midpoint rule, TABLE_SAMPLES per bin."""
    offsets = (np.arange(TABLE_SAMPLES) + 0.5) / TABLE_SAMPLES - 0.5  # (S,)
    points = np.arange(-SYMBOL_RANGE, SYMBOL_RANGE + 1, dtype=np.float64)[None, :, None] + offsets  # (1, V, S)
    z = points * points / (2.0 * scales[:, None, None] ** 2) * LOG2_E  # density exp(-t²/2σ²) = 2**-z
    density = exp2(-z)  # (K, V, S)
    table = np.zeros(density.shape[:2])
    for sample in range(TABLE_SAMPLES):  # a fixed order of additions
        table = table + density[:, :, sample]
    return table


def _laplace_table(scales: np.ndarray) -> np.ndarray:
    """(K, V): each symbol's bin of a zero-mean Laplace of diversity b = scale · LAPLACE_DIVERSITY
    (an exact power of two), integrated in closed form: 1 - 2**(-(½·log2 e)/b) at 0,
    ½·(2**(-((|s| - ½)·log2 e)/b) - 2**(-((|s| + ½)·log2 e)/b)) elsewhere."""
    magnitude = np.abs(np.arange(-SYMBOL_RANGE, SYMBOL_RANGE + 1, dtype=np.float64))[None, :]  # (1, V)
    b = scales[:, None] * LAPLACE_DIVERSITY  # (K, 1)
    inner = exp2(-(np.maximum(magnitude - 0.5, 0.5) * LOG2_E) / b)
    outer = exp2(-((magnitude + 0.5) * LOG2_E) / b)
    return np.where(magnitude == 0, 1.0 - inner, 0.5 * (inner - outer))


TABLE_FAMILIES = {"gaussian": _gaussian_table, "laplace": _laplace_table}


@functools.cache
def coding_tables(distribution: str = "gaussian") -> tuple[np.ndarray, tuple]:
    """(SCALES, 2*SYMBOL_RANGE+1) unnormalised probabilities of symbols -R..R under each table's
    zero-mean distribution of `table_scales()[k]` (a Gaussian's σ, or a Laplace's diversity over
    LAPLACE_DIVERSITY), and constriction's model of each."""
    table = _normal(TABLE_FAMILIES[distribution](table_scales()))
    models = tuple(constriction.stream.model.Categorical(row, perfect=False) for row in table)
    return table, models


def scale_index(log_scale_units: np.ndarray) -> np.ndarray:
    """Integer log scales (units 2**-FRAC_BITS of a nat) -> the nearest table, clipped: integers only."""
    offset = (SCALE_STEPS * (log_scale_units.astype(np.int64) - LOG_SCALE_MIN_UNITS) + LN2_UNITS // 2) // LN2_UNITS
    return np.clip(offset, 0, SCALES - 1)


def _integer_weights(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(out, ...) float64 -> (integers (out, rest), one scale per output channel)."""
    flat = weight.reshape(len(weight), -1)
    scale = np.maximum(np.abs(flat).max(axis=1), 1e-30) / (2**WEIGHT_BITS - 1)
    return np.round(flat / scale[:, None]), scale


class _IntegerNet:
    """A context network (`enhancer.ContextNet`'s shape: 5x5, 1x1, 1x1, ReLU between) in integers:
    the first layer's weights per level, the level's inverse gains folded into them (of the
    channels it reads), so it reads decoded latents in the scaled domain's integer units."""

    def __init__(self, first, first_bias, mid, mid_bias, out, out_bias, inv_gain: np.ndarray) -> None:
        first = _float64(first)  # (M, inputs, k, k)
        self.first = [_integer_weights(first * gains[None, :, None, None]) for gains in inv_gain]
        self.first_bias = np.round(_float64(first_bias) * ONE)
        self.kernel = first.shape[-1]
        self.mid, self.mid_scale = _integer_weights(_float64(mid))
        self.mid_bias = np.round(_float64(mid_bias) * ONE)
        self.out, self.out_scale = _integer_weights(_float64(out))
        self.out_bias = np.round(_float64(out_bias) * ONE)

    def __call__(self, decoded: np.ndarray, level: int, hidden_term: np.ndarray | None = None) -> np.ndarray:
        """Decoded latents (n, inputs, h, w), integer units, zero where not decoded (and a term
        added to the first hidden layer) -> raw means and log scales (n, 2C, h*w), integer units.
        Runs in slices of the n tiles (each tile's integers the same either way): the first
        layer's columns are inputs·25 values a cell."""
        step = max(1, COLUMN_ELEMENTS // (decoded[0].size * self.kernel**2))
        if len(decoded) > step:
            return np.concatenate([self(decoded[b : b + step], level, None if hidden_term is None else
                                        hidden_term[b : b + step]) for b in range(0, len(decoded), step)])
        weights, scale = self.first[level]
        columns = F.unfold(torch.from_numpy(decoded), self.kernel, padding=self.kernel // 2).numpy()  # (n, in*k*k, h*w)
        hidden = np.round(_matmul(weights, columns) * scale[:, None]) + self.first_bias[:, None]  # (n, M, h*w)
        if hidden_term is not None:
            hidden = hidden + hidden_term
        hidden = np.maximum(hidden, 0.0)
        hidden = np.maximum(np.round(_matmul(self.mid, hidden) * self.mid_scale[:, None]) + self.mid_bias[:, None], 0.0)
        return np.round(_matmul(self.out, hidden) * self.out_scale[:, None]) + self.out_bias[:, None]


class ExactEnhancerEntropy:
    """The entropy side of an `Enhancer` in integers: anchor tables, and for the other half of
    the checkerboard the integer mean and table of every symbol, from the decoded anchors."""

    def __init__(self, model: Enhancer) -> None:
        config = model.config
        self.levels, self.channels = config.levels, config.latent_channels
        self.distribution = config.distribution
        log_gain, log_inv_gain = _float64(model.log_gain), _float64(model.log_inv_gain)  # (L, C)
        self.gain = exp2(log_gain * LOG2_E)  # (L, C)
        self.inv_gain = exp2(log_inv_gain * LOG2_E)
        self.log_gain_units = np.round(log_gain * ONE)
        self.anchor_mean = np.round(_float64(model.anchor_mean) * (ANCHOR_RATE * ONE))  # (L, C), units 2**-F
        self.anchor_index = scale_index(np.round(_float64(model.anchor_log_scale) * (ANCHOR_RATE * ONE)))  # (L, C)
        self.context_net = _IntegerNet(model.ctx_in.weight, model.ctx_in.bias, model.ctx_mid.weight, model.ctx_mid.bias,
                                       model.ctx_out.weight, model.ctx_out.bias, self.inv_gain)
        # a model with leading channels codes each half in two passes (`enhancer.Enhancer`)
        self.lead = np.zeros(self.channels, dtype=bool)
        self.lead[list(config.leading_channels)] = True
        self.leads = bool(config.leading_channels)
        if self.leads:
            self.anchor_rest = _IntegerNet(*_net_tensors(model.anchor_rest), self.inv_gain[:, self.lead])
            self.other_rest = _IntegerNet(*_net_tensors(model.other_rest), self.inv_gain)
        self.anchor_log_scale = np.round(_float64(model.anchor_log_scale) * (ANCHOR_RATE * ONE))  # (L, C) units
        self.reads_tokens = bool(config.token_values)
        if self.reads_tokens:
            self.embedding = np.round(_float64(model.tok_embed.weight) * ONE)  # (V, E) units
            self.base_layers = [(*_integer_weights(_float64(layer.weight)), np.round(_float64(layer.bias) * ONE))
                                for layer in (model.base_in, model.base_mid, model.base_out, model.base_ctx)]
            self.base_kernel = model.base_in.weight.shape[-1]

    def base(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Base tokens (n, h, w) -> (the anchors' raw means and log scales (n, 2C, h*w), the context
        network's hidden term (n, M, h*w)), integer units; None for a model that ignores tokens."""
        if not self.reads_tokens:
            return None
        embedded = np.ascontiguousarray(self.embedding[tokens.astype(np.int64)].transpose(0, 3, 1, 2))  # (n, E, h, w)
        columns = F.unfold(torch.from_numpy(embedded), self.base_kernel, padding=self.base_kernel // 2).numpy()
        (first, first_scale, first_bias), (mid, mid_scale, mid_bias), (out, out_scale, out_bias), \
            (ctx, ctx_scale, ctx_bias) = self.base_layers
        hidden = np.maximum(np.round(_matmul(first, columns) * first_scale[:, None]) + first_bias[:, None], 0.0)
        hidden = np.maximum(np.round(_matmul(mid, hidden) * mid_scale[:, None]) + mid_bias[:, None], 0.0)
        return (np.round(_matmul(out, hidden) * out_scale[:, None]) + out_bias[:, None],
                np.round(_matmul(ctx, hidden) * ctx_scale[:, None]) + ctx_bias[:, None])

    def anchors(self, level: int, base: tuple[np.ndarray, np.ndarray] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """The anchors' integer means (units 2**-F) and tables at a 0-based level: (C, 1) each
        without the base network, (n, C, h*w) from its `base` output."""
        if base is None:
            return self.anchor_mean[level][:, None], self.anchor_index[level][:, None]
        return self._moved_anchors(base[0], level)

    def _moved_anchors(self, raw: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw means and log scales (n, 2C, h*w) that move the anchors' own -> integer means and tables."""
        raw_mean, raw_log_scale = raw[:, : self.channels], raw[:, self.channels :]
        mean = self.anchor_mean[level][:, None] + np.round(raw_mean * self.gain[level][:, None])
        return mean, scale_index(self.anchor_log_scale[level][:, None] + raw_log_scale)

    def context_raw(self, decoded_anchors: np.ndarray, level: int, base_term: np.ndarray | None = None) -> np.ndarray:
        """Decoded anchors ŷ (n, C, h, w) in integer units of 2**-F, zero elsewhere (and the base
        network's hidden term) -> the context network's raw means and log scales (n, 2C, h*w)."""
        return self.context_net(decoded_anchors, level, base_term)

    def context(self, decoded_anchors: np.ndarray, level: int, base_term: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """Decoded anchors ŷ (n, C, h, w) in integer units of 2**-F, zero elsewhere (and the base
        network's hidden term) -> integer means (units 2**-F) and tables of every cell (n, C, h, w)
        (read at non-anchors only)."""
        return self.other_parameters(self.context_raw(decoded_anchors, level, base_term), level, decoded_anchors.shape)

    def other_parameters(self, raw: np.ndarray, level: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Raw means and log scales (n, 2C, h*w) of the other half -> integer means and tables (n, C, h, w)."""
        channels = self.channels
        raw_mean, raw_log_scale = raw[:, :channels], raw[:, channels:]
        mean = np.round(raw_mean * self.gain[level][:, None])
        index = scale_index(raw_log_scale + self.log_gain_units[level][:, None])
        return mean.reshape(shape), index.reshape(shape)

    def anchor_others(self, decoded_lead: np.ndarray, level: int, base: tuple[np.ndarray, np.ndarray] | None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """A model with leading channels: the anchors' leading channels decoded (n, C, h, w), integer
        units, zero elsewhere -> integer means and tables (n, C, h, w) of the anchors' other channels
        (read there only): the anchors' own, moved by the anchor_rest network."""
        raw = self.anchor_rest(np.ascontiguousarray(decoded_lead[:, self.lead]), level)  # (n, 2C, h*w)
        mean, index = self._moved_anchors(raw if base is None else raw + base[0], level)
        return mean.reshape(decoded_lead.shape), index.reshape(decoded_lead.shape)

    def other_others(self, decoded: np.ndarray, level: int, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A model with leading channels: all decoded before the other half's other channels
        (n, C, h, w), integer units, zero elsewhere, and the context network's raw output -> integer
        means and tables (n, C, h, w) of those channels (read there only)."""
        return self.other_parameters(raw + self.other_rest(decoded, level), level, decoded.shape)


def _net_tensors(net) -> tuple:
    """An `enhancer.ContextNet`'s weights and biases in `_IntegerNet`'s order."""
    return net.first.weight, net.first.bias, net.mid.weight, net.mid.bias, net.out.weight, net.out.bias


def _passes(shape: tuple[int, int, int, int], lead: np.ndarray | None = None) -> list[np.ndarray]:
    """Flat indices of (n, C, h, w) in coding order's passes, each in C order: the anchors, then
    the rest; with `lead` (C,) bool, each half's leading channels, then its other channels."""
    n, channels, rows, cols = shape
    anchor = np.broadcast_to(checkerboard(rows, cols).numpy(), shape).reshape(-1)
    flat = np.arange(anchor.size)
    if lead is None:
        return [flat[anchor], flat[~anchor]]
    leading = np.broadcast_to(lead[None, :, None, None], shape).reshape(-1)
    return [flat[anchor & leading], flat[anchor & ~leading], flat[~anchor & leading], flat[~anchor & ~leading]]


def _runs(indices: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """A pass's tables -> (stable order by table, [(table, start, stop)] runs in that order)."""
    order = np.argsort(indices, kind="stable")
    tables, starts, counts = np.unique(indices[order], return_index=True, return_counts=True)
    return order, [(int(k), int(s), int(s + c)) for k, s, c in zip(tables, starts, counts)]


class ChunkCoder:
    """Codes the symbols of one chunk's tiles (n, C, h, w) at one level, pass by pass, for several
    streams at once (one image each): the networks run once for all of them, and each stream's
    symbols go to its own coder. A stream's integers never depend on the others. `base`, the
    base network's output for each stream's tiles (`chunk_base`), for an entropy model that reads
    the tokens. Each pass's means and tables come from what the passes before it decoded:
    the anchors' from the level's tables (and the base network), the other half's from the
    context network over the decoded anchors; with leading channels, each half's other channels
    also from what its leading channels decoded (`ExactEnhancerEntropy.anchor_others`, `other_others`)."""

    def __init__(self, entropy: ExactEnhancerEntropy, level: int, shape: tuple[int, int, int, int],
                 base: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.entropy, self.level, self.shape = entropy, level, shape
        self.passes = _passes(shape, entropy.lead if entropy.leads else None)
        n, channels, rows, cols = shape
        if entropy.reads_tokens != (base is not None):
            raise ValueError("the base network's output goes with an entropy model that reads tokens, only")
        self.base = base
        mean, index = entropy.anchors(level, self.base)  # (C, 1) each, or (streams*n, C, h*w)
        streams = 1 if base is None else len(base[0]) // n
        cells = int(np.prod(shape))
        self.anchor_mean, self.anchor_index = (np.broadcast_to(a, (streams * n, channels, rows * cols)).reshape(streams, cells)
                                               for a in (mean, index))  # (streams or 1, cells) integer units

    def _own(self, values: np.ndarray, stream: int) -> np.ndarray:
        return values[stream if len(values) > 1 else 0]

    def _parameters(self, step: int, decoded: np.ndarray, raw: list) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each stream's means (integer units) and tables at the cells of pass `step`, given `decoded`
        (streams, cells), ŷ in integer units, zero where not decoded yet; `raw` keeps the context
        network's raw output for the pass after it."""
        cells, entropy, level = self.passes[step], self.entropy, self.level
        if step == 0:
            return [(self._own(self.anchor_mean, k)[cells], self._own(self.anchor_index, k)[cells])
                    for k in range(len(decoded))]
        grid = decoded.reshape(len(decoded) * self.shape[0], *self.shape[1:])
        if entropy.leads and step == 1:
            mean, index = entropy.anchor_others(grid, level, self.base)
        elif step == len(self.passes) - 1 - entropy.leads:  # the other half (its leading channels)
            raw.append(entropy.context_raw(grid, level, None if self.base is None else self.base[1]))
            mean, index = entropy.other_parameters(raw[0], level, grid.shape)
        else:
            mean, index = entropy.other_others(grid, level, raw[0])
        mean, index = mean.reshape(len(decoded), -1), index.reshape(len(decoded), -1)
        return [(m[cells], k[cells]) for m, k in zip(mean, index)]

    def _code(self, streams: int, code_pass) -> list[tuple[np.ndarray, np.ndarray]]:
        """Runs the passes in order; `code_pass(stream, cells, means, tables)` codes one stream's
        symbols of a pass and returns them. Returns per stream (symbols, means in integer units)
        (n, C, h, w): ŷ = symbols + means / 2**F."""
        cells = int(np.prod(self.shape))
        decoded = np.zeros((streams, cells))
        symbols = np.empty((streams, cells), dtype=np.int64)
        means = np.empty((streams, cells))
        raw: list = []
        for step, where in enumerate(self.passes):
            for stream, (mean, index) in enumerate(self._parameters(step, decoded, raw)):
                coded = code_pass(stream, where, mean, index)
                symbols[stream, where], means[stream, where] = coded, mean
                decoded[stream, where] = coded * ONE + mean
        return [(s.reshape(self.shape), m.reshape(self.shape)) for s, m in zip(symbols, means)]

    def encode(self, encoders: list, scaled_latents: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each stream's scaled latents y·g (n, C, h, w) float -> coded by its encoder; returns per
        stream (symbols, means in integer units) (n, C, h, w): ŷ = symbols + means / 2**F."""
        flat = [y.reshape(-1).astype(np.float64) for y in scaled_latents]
        family = self.entropy.distribution

        def code_pass(stream, cells, mean, index):
            symbols = np.clip(np.round(flat[stream][cells] - mean / ONE), -SYMBOL_RANGE, SYMBOL_RANGE).astype(np.int64)
            _encode_pass(encoders[stream], symbols, index, family)
            return symbols

        return self._code(len(encoders), code_pass)

    def decode(self, decoders: list) -> list[tuple[np.ndarray, np.ndarray]]:
        """The inverse of `encode`: per stream (symbols, means in integer units) (n, C, h, w)."""
        family = self.entropy.distribution
        return self._code(len(decoders), lambda stream, cells, mean, index: _decode_pass(decoders[stream], index, family))


def chunk_base(entropy: ExactEnhancerEntropy, tokens: np.ndarray | None, shape: tuple[int, int, int, int]
               ) -> tuple[np.ndarray, np.ndarray] | None:
    """The base tokens of each stream's tiles (streams, n, h, w) -> what `ChunkCoder` takes as
    `base`: the base network's output for all of them (None for a model that ignores tokens)."""
    if not entropy.reads_tokens:
        return None
    n, _, rows, cols = shape
    if tokens is None or tokens.shape[1:] != (n, rows, cols):
        raise ValueError(f"this enhancement model reads the base tokens of each tile, {n}x{rows}x{cols}")
    return entropy.base(tokens.reshape(-1, rows, cols))


def select_base(base: tuple[np.ndarray, np.ndarray] | None, streams: Sequence[int], n: int):
    """The rows of `chunk_base`'s output that belong to some of its streams (in that order)."""
    if base is None:
        return None
    rows = np.concatenate([np.arange(k * n, (k + 1) * n) for k in streams])
    return tuple(part[rows] for part in base)


def _encode_pass(encoder, symbols: np.ndarray, indices: np.ndarray, distribution: str) -> None:
    _, models = coding_tables(distribution)
    order, runs = _runs(indices)
    coded = (symbols[order] + SYMBOL_RANGE).astype(np.int32)
    for table, start, stop in runs:
        encoder.encode(coded[start:stop], models[table])


def _decode_pass(decoder, indices: np.ndarray, distribution: str) -> np.ndarray:
    _, models = coding_tables(distribution)
    order, runs = _runs(indices)
    symbols = np.empty(len(indices), dtype=np.int64)
    for table, start, stop in runs:
        symbols[order[start:stop]] = decoder.decode(models[table], stop - start).astype(np.int64) - SYMBOL_RANGE
    return symbols
