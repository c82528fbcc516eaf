"""The enhancement layer: a second coded layer over the base tokens, at one of several rates.

Over a tile of the token grid (a whole SuperTuxKart frame is one tile), it codes a latent y of
C channels per grid cell and adds what it carries to the base reconstruction x0:

* E (encoder only) sees the image x and x0 and makes y;
* a learned gain per level and channel scales y before rounding, so one network serves every
  level (as CompressAI's `vbr` models and Cui et al.'s gain units);
* y is coded in two passes of a checkerboard, each parallel over the tile. The anchors (cells
  with row + column even) have one Gaussian per level and channel; the other half has a
  Gaussian whose mean and scale a small network reads from the decoded anchors around it.
  Symbols are rounded around the predicted mean: s = round(y·g − μ), ŷ = s + μ;
  a model's `distribution` makes these Gaussians or Laplace distributions (the coding tables'
  family; Laplace fits the sparse, peaked symbols better);
* D adds a residual, computed from ŷ / g and x0, to x0.

The entropy network (anchor Gaussians and the context network) has an exact integer twin in
`enhance_exact.py`, which the codec uses, so encoder and decoder agree to the bit. E and D are
float: a decoder on another machine may differ by a level in a few pixels, never in a symbol.

The probe this grew from (shared notes, "enhancement-probe") conditioned the entropy model on
the base tokens too; a constant input in their place did as well, so the first model reads the
anchors only. There the anchors, coded with one Gaussian per level and channel, took 63-74% of
the bits, so a model with `token_values` reads the base tokens (integers both sides hold) through
an embedding and a small network of its own: it moves the anchors' means and scales cell by cell
and adds to the context network's hidden layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .modelfile import ModelFile
from .patches import pad_to_patches
from .tokenizer import ResBlock

# Scales of the coded Gaussians (scaled domain) are SCALE_MIN * 2**(k / SCALE_STEPS), k < SCALES:
# part of the format (enhance_exact.py builds the coding tables from them).
SCALE_MIN = 0.11
SCALE_STEPS = 8
SCALES = 80
LOG_SCALE_MIN = math.log(SCALE_MIN)
LOG_SCALE_MAX = LOG_SCALE_MIN + (SCALES - 1) * math.log(2) / SCALE_STEPS
# The coded distributions: a model's `distribution` picks the family of every table (a property of
# the model, as `token_values` is). Laplace fits the latents' peaked, heavy-tailed symbols better:
# on a Gaussian model's symbols (p5-10bit-aug's, 200 valid frames, levels 2-8), Laplace
# tables of diversity σ·e^-0.4 cost 3.5% fewer bits than its own Gaussian tables, and the
# tables of the symbols' real frequencies 4.3% fewer (models/README.md, p5-10bit-laplace).
DISTRIBUTIONS = ("gaussian", "laplace")
# A Laplace table's diversity is its scale times this: the smallest, b = 0.0275, codes a zero for
# 2·10^-8 bits as the smallest Gaussian (σ = 0.11) does for 10^-5; at b = 0.11 a zero would cost
# 0.015 bits, and most of the latent's symbols are zeros coded with the smallest table.
LAPLACE_DIVERSITY = 0.25
# A Laplace model adopting a Gaussian one moves its log scales by this: b = σ·e^-0.4 fitted best
# the Gaussian model's symbols (the measurement above).
LAPLACE_SHIFT = -0.4 - math.log(LAPLACE_DIVERSITY)
# The anchors' means and log scales are stored divided by this: a per-channel parameter moves by
# about the learning rate per Adam step, and these must travel a few units (σ from 1 to 0.11).
ANCHOR_RATE = 10.0
# E and D: the modules that make the latent and the picture (what `--keep-transforms` freezes)
TRANSFORMS = ("enc_embed", "enc_blocks", "enc_out", "dec_embed", "dec_latent", "dec_blocks", "dec_out", "refine")


@dataclass(frozen=True, kw_only=True)
class EnhancerConfig:
    patch_size: int = 5  # the base tokenizer's patch: one latent vector per token
    levels: int = 5  # enhancement levels (the codec's quality levels 2..levels+1; 1 is the base alone)
    latent_channels: int = 64
    width: int = 128  # channels of E and D
    encoder_blocks: int = 2
    decoder_blocks: int = 3
    context_width: int = 128  # channels of the context network (the exact part)
    refine_channels: int = 16  # the full-resolution refinement after D's pixel shuffle
    token_values: int = 0  # the base tokens' alphabet (2**bits); 0: the entropy model ignores them
    token_width: int = 32  # the base tokens' embedding (with token_values)
    distribution: str = "gaussian"  # the family of the coding tables: one of DISTRIBUTIONS
    # The channels coded first in each half of the checkerboard (four passes, see `Enhancer`);
    # () codes each half in one pass.
    leading_channels: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution {self.distribution!r}: one of {', '.join(DISTRIBUTIONS)}")
        lead = tuple(self.leading_channels)
        if list(lead) != sorted(set(lead)) or (lead and not (0 <= lead[0] and lead[-1] < self.latent_channels
                                                             and len(lead) < self.latent_channels)):
            raise ValueError(f"leading channels {lead}: distinct, ascending, some of the {self.latent_channels} "
                             "channels but not all")
        object.__setattr__(self, "leading_channels", lead)  # a list from a file's config -> a tuple


def checkerboard(rows: int, cols: int, device: torch.device | None = None) -> torch.Tensor:
    """(rows, cols) bool: True at the anchors, the cells coded first (row + column even)."""
    return (torch.arange(rows, device=device)[:, None] + torch.arange(cols, device=device)[None, :]) % 2 == 0


class _LowerBound(torch.autograd.Function):
    """max(x, bound), with the gradient kept where it pushes x up (CompressAI's LowerBound)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bound: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * ((x >= ctx.bound) | (grad < 0)).to(grad.dtype), None


def coded_scale(log_scale: torch.Tensor) -> torch.Tensor:
    """Log scales (scaled domain) -> the scales a coder can use: within the table's range."""
    return _LowerBound.apply(log_scale, LOG_SCALE_MIN).clamp_max(LOG_SCALE_MAX).exp()


def gaussian_bits(residual: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """-log2 P(residual) under a zero-mean Gaussian of `scale` discretised to unit bins."""
    residual = residual.abs()  # both edges in the lower tail: accurate far from the mean
    upper = torch.special.ndtr((0.5 - residual) / scale)
    lower = torch.special.ndtr((-0.5 - residual) / scale)
    return -torch.log2((upper - lower).clamp_min(1e-9))


def laplace_bits(residual: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """-log2 P(residual) under a zero-mean Laplace of diversity `scale` discretised to unit bins:
    in closed form, each branch finite wherever it is not used (so are the gradients)."""
    residual = residual.abs()
    lower, upper = residual - 0.5, residual + 0.5
    # |r| >= 1/2: P = ½·e^(-lower/b)·(1 - e^(-1/b))
    tail = -lower.clamp_min(0) / scale + torch.log(-torch.expm1(-1 / scale)) - math.log(2)
    # |r| < 1/2: P = 1 - ½·(e^(lower/b) + e^(-upper/b))
    centre = torch.log((1 - 0.5 * (torch.exp(lower.clamp_max(0) / scale) + torch.exp(-upper / scale))).clamp_min(1e-9))
    return -torch.where(lower >= 0, tail, centre) / math.log(2)


def table_laplace_bits(residual: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """laplace_bits of a Laplace table's `scale`: its diversity is LAPLACE_DIVERSITY times that."""
    return laplace_bits(residual, scale * LAPLACE_DIVERSITY)


SYMBOL_BITS = {"gaussian": gaussian_bits, "laplace": table_laplace_bits}


def _round(values: torch.Tensor, training: bool) -> torch.Tensor:
    rounded = torch.round(values)
    return values + (rounded - values).detach() if training else rounded  # straight-through in training


class ContextNet(nn.Module):
    """Decoded latents (B, inputs, h, w), unscaled, zero where not decoded -> a raw mean and log
    scale (B, C, h, w) each: a 5x5 convolution, then two 1x1 (ReLU between), as the context network."""

    def __init__(self, inputs: int, width: int, channels: int) -> None:
        super().__init__()
        self.first = nn.Conv2d(inputs, width, 5, padding=2)
        self.mid = nn.Conv2d(width, width, 1)
        self.out = nn.Conv2d(width, 2 * channels, 1)

    def forward(self, decoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.out(F.relu(self.mid(F.relu(self.first(decoded))))).chunk(2, 1)


class Enhancer(nn.Module, ModelFile):
    """x, base reconstruction x0 -> enhancement symbols and the enhanced reconstruction."""

    kind = "enhancer"
    ENCODER_ONLY = ("enc_embed", "enc_blocks", "enc_out")  # E: decoding needs D and the entropy model
    config_class = EnhancerConfig

    def __init__(self, config: EnhancerConfig) -> None:
        super().__init__()
        self.config = config
        C, N, M, p = config.latent_channels, config.width, config.context_width, config.patch_size
        # E(x, x0) -> y on the token grid
        self.enc_embed = nn.Conv2d(9, N, p, stride=p)
        self.enc_blocks = nn.Sequential(*[ResBlock(N) for _ in range(config.encoder_blocks)])
        self.enc_out = nn.Conv2d(N, C, 1)
        # per level: gains, and the anchors' Gaussians (scaled domain)
        self.log_gain = nn.Parameter(torch.zeros(config.levels, C))
        self.log_inv_gain = nn.Parameter(torch.zeros(config.levels, C))
        self.anchor_mean = nn.Parameter(torch.zeros(config.levels, C))  # times ANCHOR_RATE
        self.anchor_log_scale = nn.Parameter(torch.full((config.levels, C), -1.0 / ANCHOR_RATE))
        # the context network: decoded anchors (unscaled) -> mean and log scale of the other half
        self.ctx_in = nn.Conv2d(C, M, 5, padding=2)
        self.ctx_mid = nn.Conv2d(M, M, 1)
        self.ctx_out = nn.Conv2d(M, 2 * C, 1)
        # with leading channels, two more: the anchors' leading channels -> what moves the anchors'
        # other means and log scales; all that is decoded before the other half's other channels ->
        # what moves theirs (each starting at zero, so the model starts as the two-pass one)
        if config.leading_channels:
            self.register_buffer("lead", torch.zeros(C, dtype=torch.bool), persistent=False)
            self.lead[list(config.leading_channels)] = True
            self.anchor_rest = ContextNet(len(config.leading_channels), M, C)
            self.other_rest = ContextNet(C, M, C)
        # the base network: tokens -> the anchors' raw mean and log scale, and a term of the context's hidden layer
        if config.token_values:
            self.tok_embed = nn.Embedding(config.token_values, config.token_width)
            self.base_in = nn.Conv2d(config.token_width, M, 5, padding=2)
            self.base_mid = nn.Conv2d(M, M, 1)
            self.base_out = nn.Conv2d(M, 2 * C, 1)
            self.base_ctx = nn.Conv2d(M, M, 1)
        # D(ŷ / g, x0) -> x0 + residual
        self.dec_embed = nn.Conv2d(3, N, p, stride=p)
        self.dec_latent = nn.Conv2d(C, N, 3, padding=1)
        self.dec_blocks = nn.Sequential(*[ResBlock(N) for _ in range(config.decoder_blocks)])
        self.dec_out = nn.Conv2d(N, 3 * p * p, 3, padding=1)
        self.shuffle = nn.PixelShuffle(p)
        R = config.refine_channels
        self.refine = nn.Sequential(nn.Conv2d(6, R, 3, padding=1), nn.GELU(), nn.Conv2d(R, 3, 3, padding=1))
        zeroed = [self.dec_out, self.refine[-1]]  # starts as the base layer: residual 0
        if config.token_values:  # and as the model without the tokens (see `adopt`)
            zeroed += [self.base_out, self.base_ctx]
        if config.leading_channels:  # and as the two-pass model
            zeroed += [self.anchor_rest.out, self.other_rest.out]
        for layer in zeroed:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def initialise_gains(self, lambdas: list[float]) -> None:
        """Quantisation steps about λ^-1/2 apart from level to level (a fresh model only)."""
        start = 0.5 * torch.log(torch.tensor(lambdas) / lambdas[len(lambdas) // 2])
        with torch.no_grad():
            self.log_gain.copy_(start[:, None].expand_as(self.log_gain))
            self.log_inv_gain.copy_(-start[:, None].expand_as(self.log_inv_gain))

    def adopt(self, other: "Enhancer", lambdas: list[float]) -> list[str]:
        """Start from a trained `other` (same E, D and context shapes): every tensor of the same name
        and shape is copied; the per-level tables are copied for the levels they share and extended
        past the last by the quantisation step λ^-1/2 predicts; residual blocks of E or D that
        `other` lacks start as the identity (their last convolution at zero), so the model starts
        where `other` stood. A Laplace model adopting a Gaussian one starts with every log scale
        moved by LAPLACE_SHIFT. Returns the names left as they were."""
        own, theirs = self.state_dict(), other.state_dict()
        per_level = {"log_gain": 0.5, "log_inv_gain": -0.5, "anchor_log_scale": 0.5 / ANCHOR_RATE, "anchor_mean": 0.0}
        kept = []
        with torch.no_grad():
            for name, tensor in own.items():
                source = theirs.get(name)
                if name in per_level and source is not None and source.shape[1:] == tensor.shape[1:]:
                    shared = min(len(source), len(tensor))
                    tensor[:shared] = source[:shared]
                    for level in range(shared, len(tensor)):
                        tensor[level] = tensor[level - 1] + per_level[name] * math.log(lambdas[level] / lambdas[level - 1])
                elif source is not None and source.shape == tensor.shape:
                    tensor.copy_(source)
                else:
                    kept.append(name)
            for name in kept:
                if name.startswith(("enc_blocks.", "dec_blocks.")) and ".conv2." in name:
                    own[name].zero_()
            if (self.config.distribution, other.config.distribution) == ("laplace", "gaussian"):
                # every log scale moves: the anchors' tables and the context network's log-scale outputs
                # (the base network's add to the anchors' and start from the adopted model's)
                own["anchor_log_scale"] += LAPLACE_SHIFT / ANCHOR_RATE
                own["ctx_out.bias"][self.config.latent_channels :] += LAPLACE_SHIFT
            elif self.config.distribution != other.config.distribution:
                raise ValueError(f"adopting a {other.config.distribution} model into a {self.config.distribution} one")
        return kept

    # ---- the parts, each on a batch of tiles (B, ·, h·p, w·p) or latents (B, C, h, w)

    def encode(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Images and base reconstructions (B, 3, H, W) in [0, 1] -> latents y (B, C, h, w), unscaled."""
        self.check_encodes()
        p = self.config.patch_size
        x, x0 = pad_to_patches(x, p), pad_to_patches(x0, p)
        return self.enc_out(self.enc_blocks(self.enc_embed(torch.cat([x * 2 - 1, x0 * 2 - 1, (x - x0) * 4], 1))))

    def base(self, tokens: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Base tokens (B, h, w) -> (the anchors' raw mean and log scale (B, 2C, h, w), the context
        network's hidden term (B, M, h, w)); None for a model that ignores the tokens."""
        if not self.config.token_values:
            return None
        embedded = self.tok_embed(tokens.long()).permute(0, 3, 1, 2)
        hidden = F.relu(self.base_mid(F.relu(self.base_in(embedded))))
        return self.base_out(hidden), self.base_ctx(hidden)

    def context(self, anchors: torch.Tensor, base_term: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded anchors (B, C, h, w), unscaled, zero elsewhere (and the base network's hidden
        term) -> the other half's raw mean and log scale (B, C, h, w) each, before the level's gain."""
        first = self.ctx_in(anchors)
        hidden = F.relu(self.ctx_mid(F.relu(first if base_term is None else first + base_term)))
        return self.ctx_out(hidden).chunk(2, 1)

    def decode(self, latents: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Unscaled ŷ (B, C, h, w) and x0 (B, 3, H, W) -> the enhanced image (B, 3, H, W), unclamped."""
        height, width = x0.shape[-2:]
        x0 = pad_to_patches(x0, self.config.patch_size)
        features = self.dec_embed(x0 * 2 - 1) + self.dec_latent(latents)
        x1 = x0 + self.shuffle(self.dec_out(self.dec_blocks(features)))
        return (x1 + self.refine(torch.cat([x1, x0], 1)))[..., :height, :width]

    def gains(self, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """0-based levels (B,) -> gains and inverse gains (B, C, 1, 1)."""
        return self.log_gain[level].exp()[:, :, None, None], self.log_inv_gain[level].exp()[:, :, None, None]

    def coded(self, x: torch.Tensor, x0: torch.Tensor, level: torch.Tensor, *, training: bool,
              tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """-> (y·g, symbols, means, log scales (B, C, h, w) each, all in the scaled domain; inverse
        gains (B, C, 1, 1)): the coded latent and the distribution of each symbol, as `forward`
        codes them (straight-through rounding when training)."""
        gain, inv_gain = self.gains(level)
        y = self.encode(x, x0) * gain  # (B, C, h, w), scaled: quantised to integers
        anchor = checkerboard(*y.shape[-2:], device=y.device)
        mean_a, log_scale_a = (ANCHOR_RATE * table[level][:, :, None, None].expand_as(y)
                               for table in (self.anchor_mean, self.anchor_log_scale))
        base = self.base(tokens)
        if base is not None:
            base_mean, base_log_scale = base[0].chunk(2, 1)
            mean_a, log_scale_a = mean_a + base_mean * gain, log_scale_a + base_log_scale
        lead = self.lead[:, None, None] if self.config.leading_channels else None
        if lead is not None:  # pass 2: the anchors' other channels, given their leading ones
            first = (_round(y - mean_a, training) + mean_a) * (anchor & lead)
            rest_mean, rest_log_scale = self.anchor_rest(first[:, self.lead] * inv_gain[:, self.lead])
            mean_a = torch.where(lead, mean_a, mean_a + rest_mean * gain)
            log_scale_a = torch.where(lead, log_scale_a, log_scale_a + rest_log_scale)
        y_hat_a = (_round(y - mean_a, training) + mean_a) * anchor
        raw_mean, raw_log_scale = self.context(y_hat_a * inv_gain, None if base is None else base[1])
        if lead is not None:  # pass 4: the other half's other channels, given all decoded before
            first = (_round(y - raw_mean * gain, training) + raw_mean * gain) * (~anchor & lead)
            rest_mean, rest_log_scale = self.other_rest((y_hat_a + first) * inv_gain)
            raw_mean = torch.where(lead, raw_mean, raw_mean + rest_mean)
            raw_log_scale = torch.where(lead, raw_log_scale, raw_log_scale + rest_log_scale)
        mean = torch.where(anchor, mean_a, raw_mean * gain)
        log_scale = torch.where(anchor, log_scale_a, raw_log_scale + gain.log())
        return y, _round(y - mean, training), mean, log_scale, inv_gain

    def forward(self, x: torch.Tensor, x0: torch.Tensor, level: torch.Tensor, *, training: bool,
                tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (enhanced images (B, 3, H, W), bits per image (B,)); `tokens` (B, h, w), the base
        tokens, for a model with `token_values`. Training: straight-through
        rounding for what D and the context see, uniform noise for the rate; otherwise what a
        coder would do (up to the scale table's steps)."""
        y, symbols, mean, log_scale, inv_gain = self.coded(x, x0, level, training=training, tokens=tokens)
        residual = y + torch.empty_like(y).uniform_(-0.5, 0.5) - mean if training else symbols
        bits = SYMBOL_BITS[self.config.distribution](residual, coded_scale(log_scale)).sum((1, 2, 3))
        return self.decode((symbols + mean) * inv_gain, x0), bits

    @torch.no_grad()
    def channel_bits(self, x: torch.Tensor, x0: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Bits (C,) each channel of the anchors costs over a batch, summed over the levels, as a coder
        codes them: what picks a model's leading channels (the anchors carry most of the bits)."""
        total = torch.zeros(self.config.latent_channels)
        anchor = checkerboard(-(-x.shape[-2] // self.config.patch_size), -(-x.shape[-1] // self.config.patch_size))
        for k in range(self.config.levels):
            level = torch.full((len(x),), k)
            _, symbols, _, log_scale, _ = self.coded(x, x0, level, training=False, tokens=tokens)
            bits = SYMBOL_BITS[self.config.distribution](symbols, coded_scale(log_scale))
            total += (bits * anchor).sum((0, 2, 3))
        return total


def leading_channels(bits: torch.Tensor, count: int) -> tuple[int, ...]:
    """The `count` channels of most bits (`Enhancer.channel_bits`), ascending."""
    return tuple(sorted(int(c) for c in torch.argsort(bits, descending=True, stable=True)[:count]))
