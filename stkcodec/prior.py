"""The priors: decoder-only transformers over a token grid, raster order or a group schedule.

`Prior` (schedule "raster") predicts one token at a time. Position i of a grid of h×w tokens
(row r = i // w, column c = i % w) reads the token before it (a start token for i = 0) plus learned row and column embeddings of (r, c), the cell it
predicts, so the model knows where in the image it is for any grid up to max_rows×max_cols.
Causal self-attention, RMSNorm, ReLU MLP, no biases: every piece has an exact integer
counterpart in `exact.py`, which the codec uses; this float model trains and generates.
`GroupPrior` predicts whole groups of tokens at once in a fixed schedule (schedule.py), so a
decoder runs a handful of steps per tile instead of one per token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .modelfile import ModelFile
from .schedule import RASTER, plan


@dataclass(frozen=True, kw_only=True)
class PriorConfig:
    vocab_size: int = 1024
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    mlp_ratio: int = 4
    max_rows: int = 64
    max_cols: int = 64
    schedule: str = RASTER  # or a group schedule such as "bayer8:1,2,4,8" (schedule.py)
    # How the exact twin computes (exact.py): "float64" (15-bit weights, float64 products), or
    # "int8" (every product's operands rounded to 8 bits on steps stored in `int8_steps`, float32
    # products). The float network is the same for both: int8 is calibrated after training.
    arithmetic: str = "float64"


ARITHMETICS = ("float64", "int8")
INT8_PARTS = ("qkv", "q", "k", "v", "proj", "up", "down")  # per block: where the int8 twin rounds


class RMSNorm(nn.Module):
    eps = 1e-5

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class KVCache:
    """Keys and values of every layer for the positions seen so far: (B, heads, T, head_dim)."""

    def __init__(self, n_layers: int) -> None:
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers

    @property
    def length(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def extend(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys[layer] is not None:
            keys = torch.cat([self.keys[layer], keys], dim=2)
            values = torch.cat([self.values[layer], values], dim=2)
        self.keys[layer], self.values[layer] = keys, values
        return keys, values


class Attention(nn.Module):
    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=False)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0,
                keys: int | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Causal self-attention, or with `keys`: only the first `keys` entries are keys and
        values, and `mask` (T, keys) (or every cached key, when None) says what each entry sees."""
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.n_heads, dim // self.n_heads).permute(2, 0, 3, 1, 4)
        if keys is not None:
            k, v = k[:, :, :keys], v[:, :, :keys]
        causal = keys is None
        if cache is not None:
            causal = causal and cache.length == 0  # a query after the cached ones sees all of them
            k, v = cache.extend(layer, k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and length > 1)  # (B, H, T, hd)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class Block(nn.Module):
    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        self.norm1 = RMSNorm(config.d_model)
        self.attn = Attention(config)
        self.norm2 = RMSNorm(config.d_model)
        self.up = nn.Linear(config.d_model, config.mlp_ratio * config.d_model, bias=False)
        self.down = nn.Linear(config.mlp_ratio * config.d_model, config.d_model, bias=False)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0,
                keys: int | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cache, layer, keys, mask)
        return x + self.down(F.relu(self.up(self.norm2(x))))


class TokenPrior(nn.Module, ModelFile):
    """What both coding orders share: embeddings of tokens, rows and columns, the blocks and
    the head. `Prior` (raster) and `GroupPrior` are its two kinds, siblings: each owns its
    forward pass, its sampling and its exact twin (`exact()`), which owns its coding of a chunk."""

    kind = "prior"
    config_class = PriorConfig

    @classmethod
    def build(cls, config: PriorConfig) -> "TokenPrior":
        """A "prior" file holds either kind: the one its schedule names."""
        return build_prior(config)

    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size + 1, config.d_model)  # last row: start token
        self.row_embedding = nn.Embedding(config.max_rows, config.d_model)
        self.col_embedding = nn.Embedding(config.max_cols, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.arithmetic not in ARITHMETICS:
            raise ValueError(f"arithmetic {config.arithmetic!r}: expected one of {', '.join(ARITHMETICS)}")
        if config.arithmetic == "int8":  # the input step of each product, in activation units (`calibrate_int8`)
            self.register_buffer("int8_steps", torch.ones(config.n_layers * len(INT8_PARTS) + 1))
        self.apply(self._init)
        for block in self.blocks:  # scaled residual branches, as in GPT-2
            for linear in (block.attn.proj, block.down):
                nn.init.normal_(linear.weight, std=0.02 / math.sqrt(2 * config.n_layers))
        if config.arithmetic == "int8":  # a file's or `calibrate_int8`'s replace these
            self.set_int8_weights(self.rounded_int8_weights())

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    @property
    def start_token(self) -> int:
        return self.config.vocab_size

    def check_grid(self, rows: int, cols: int) -> None:
        if rows > self.config.max_rows or cols > self.config.max_cols:
            raise ValueError(f"grid {rows}x{cols} exceeds the prior's {self.config.max_rows}x{self.config.max_cols}")

    def embed(self, inputs: torch.Tensor, positions: torch.Tensor, cols: int) -> torch.Tensor:
        """inputs (B, T) token ids, positions (T,) raster indices of the predicted cells -> (B, T, d)."""
        rows_of, cols_of = torch.div(positions, cols, rounding_mode="floor"), positions % cols
        return self.token_embedding(inputs) + self.row_embedding(rows_of) + self.col_embedding(cols_of)

    def new_cache(self) -> KVCache:
        return KVCache(self.config.n_layers)

    def int8_names(self) -> list[str]:
        """The rounding points of the int8 twin, in `int8_steps`'s order: "<block>.<part>", then "head"."""
        return [f"{i}.{part}" for i in range(self.config.n_layers) for part in INT8_PARTS] + ["head"]

    def int8_step_table(self) -> dict[str, float]:
        return dict(zip(self.int8_names(), self.int8_steps.tolist()))

    def int8_weights(self) -> list[str]:
        """The weights of the int8 twin's products, by state-dict name."""
        return [f"blocks.{i}.{part}.weight" for i in range(self.config.n_layers)
                for part in ("attn.qkv", "attn.proj", "up", "down")] + ["head.weight"]

    def rounded_int8_weights(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The float weights of the products rounded to integers of at most 127 per output
        channel (scale = the channel's largest |w| / 127, in float64)."""
        from .exact import INT8

        integers = {}
        for name in self.int8_weights():
            weight = self.get_parameter(name).detach().double()
            scale = weight.abs().amax(1).clamp_min(1e-30) / INT8
            integers[name] = (torch.round(weight / scale[:, None]), scale)
        return integers

    def set_int8_weights(self, integers: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """An int8 prior's product weights as its twin uses them: {name: (int8 integers (out, in),
        float32 scale (out,))}, the one source of truth; the float network's weights become
        integer x scale."""
        self.int8_integers = {name: (q.to(torch.int8), scale.float()) for name, (q, scale) in integers.items()}
        with torch.no_grad():
            for name, (q, scale) in self.int8_integers.items():
                self.get_parameter(name).copy_(q.float() * scale[:, None])

    def packed(self, state: dict) -> dict:
        """An int8 prior's file keeps each product's weights as int8 integers (`<name>.int8`) and
        a float32 scale per output channel (`<name>.scale`): half the bytes of float16, and exactly
        what its twin multiplies by."""
        if self.config.arithmetic != "int8":
            return state
        state = dict(state)
        for name in self.int8_weights():
            del state[name]
            state[f"{name}.int8"], state[f"{name}.scale"] = self.int8_integers[name]
        return state

    def unpacked(self, stored: dict) -> dict:
        if self.config.arithmetic != "int8":
            return stored
        state = dict(stored)
        integers = {name: (state.pop(f"{name}.int8"), state.pop(f"{name}.scale")) for name in self.int8_weights()
                    if f"{name}.int8" in state}
        if integers:
            self.set_int8_weights(integers)  # its parameters too; load_state_dict then loads the same values
        state.update({name: self.get_parameter(name).detach().clone() for name in integers})
        return state


class Prior(TokenPrior):
    """The raster prior: token i of a tile from tokens < i, one token per decoding step."""

    def exact(self):
        from .exact import ExactPrior  # exact.py builds on this module

        return ExactPrior(self)

    def shifted_inputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, h, w) grid -> (B, h*w) inputs: the start token, then every token but the last."""
        flat = tokens.flatten(1)
        start = torch.full_like(flat[:, :1], self.start_token)
        return torch.cat([start, flat[:, :-1]], dim=1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, h*w, vocab): entry i predicts token i from tokens < i."""
        batch, rows, cols = tokens.shape
        self.check_grid(rows, cols)
        positions = torch.arange(rows * cols, device=tokens.device)
        x = self.embed(self.shifted_inputs(tokens), positions, cols)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))

    def step(self, previous: torch.Tensor, position: int, cols: int, cache: KVCache) -> torch.Tensor:
        """One incremental step: previous tokens (B,) (start token at 0) -> logits (B, vocab)
        for raster `position`, reusing and extending `cache`."""
        positions = torch.tensor([position], device=previous.device)
        x = self.embed(previous[:, None], positions, cols)  # (B, 1, d)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)
        return self.head(self.norm(x))[:, 0]

    @torch.no_grad()
    def sample(self, count: int, rows: int, cols: int, *, generator: torch.Generator | None = None,
               temperature: float = 1.0, top_k: int | None = None, on_row=None) -> torch.Tensor:
        """Draw `count` token grids (count, rows, cols) with the KV cache."""
        self.check_grid(rows, cols)
        device = self.head.weight.device
        cache = self.new_cache()
        previous = torch.full((count,), self.start_token, dtype=torch.long, device=device)
        tokens = torch.empty(count, rows * cols, dtype=torch.long, device=device)
        for position in range(rows * cols):
            logits = self.step(previous, position, cols, cache).float() / max(temperature, 1e-6)
            if top_k is not None and top_k < logits.shape[-1]:
                threshold = logits.topk(top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < threshold, float("-inf"))
            probabilities = logits.softmax(-1)
            previous = torch.multinomial(probabilities.cpu(), 1, generator=generator).squeeze(1).to(device)
            tokens[:, position] = previous
            if on_row is not None and (position + 1) % cols == 0:
                on_row()
        return tokens.view(count, rows, cols)


class GroupPrior(TokenPrior):
    """Predicts a tile's tokens group by group, in the fixed schedule `config.schedule`.

    Two kinds of entries share the blocks. A context entry holds a known token (its embedding
    plus its cell's row and column): the start entry first, then every cell in schedule order.
    A query entry holds only a cell's row and column plus a learned query vector; its output
    predicts that cell's token. Only context entries are keys and values: a context entry of
    group a sees the contexts of groups <= a, a query of group b those of groups < b (and the
    start entry always). So a decoder runs one step per group with a KV cache: the contexts of
    group b-1 and the queries of group b together.
    """

    def __init__(self, config: PriorConfig) -> None:
        super().__init__(config)
        plan(config.schedule, 1, 1)  # refuses a malformed schedule here, not at the first grid
        self.query = nn.Parameter(0.02 * torch.randn(config.d_model))

    def exact(self):
        from .exact import ExactGroupPrior  # exact.py builds on this module

        return ExactGroupPrior(self)

    def _start(self, batch: int) -> torch.Tensor:
        return self.token_embedding.weight[self.start_token].expand(batch, 1, -1)  # (B, 1, d)

    def _queries(self, positions: torch.Tensor, cols: int, batch: int) -> torch.Tensor:
        rows_of, cols_of = torch.div(positions, cols, rounding_mode="floor"), positions % cols
        return (self.row_embedding(rows_of) + self.col_embedding(cols_of) + self.query).expand(batch, -1, -1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, h*w, vocab) in raster order, each from the groups before its own."""
        batch, rows, cols = tokens.shape
        self.check_grid(rows, cols)
        tile = plan(self.config.schedule, rows, cols)
        device = tokens.device
        order = torch.tensor(tile.order).to(device)
        length = rows * cols
        x = torch.cat([self._start(batch), self.embed(tokens.flatten(1)[:, order], order, cols),
                       self._queries(order, cols, batch)], dim=1)  # (B, 1 + 2T, d)
        mask = torch.from_numpy(tile.visibility()).to(device)  # (1 + 2T, 1 + T)
        for block in self.blocks:
            x = block(x, keys=1 + length, mask=mask)
        logits = self.head(self.norm(x[:, 1 + length :]))  # (B, T, vocab), schedule order
        return logits[:, torch.from_numpy(np.argsort(tile.order)).to(device)]

    @torch.no_grad()
    def sample(self, count: int, rows: int, cols: int, *, generator: torch.Generator | None = None,
               temperature: float = 1.0, top_k: int | None = None, on_row=None) -> torch.Tensor:
        """Draw `count` token grids (count, rows, cols), one group per step with the KV cache.
        `on_row` is called once per grid row's worth of tokens drawn."""
        self.check_grid(rows, cols)
        device = self.head.weight.device
        tile = plan(self.config.schedule, rows, cols)
        cache = self.new_cache()
        tokens = torch.empty(count, rows * cols, dtype=torch.long, device=device)
        context = self._start(count)
        drawn_rows = 0
        for group in range(tile.count):
            members = torch.tensor(tile.members(group)).to(device)
            x = torch.cat([context, self._queries(members, cols, count)], dim=1)
            for layer, block in enumerate(self.blocks):
                x = block(x, cache, layer, keys=context.shape[1])
            logits = self.head(self.norm(x[:, context.shape[1] :])).float() / max(temperature, 1e-6)  # (count, m, V)
            if top_k is not None and top_k < logits.shape[-1]:
                threshold = logits.topk(top_k, dim=-1).values[..., -1:]
                logits = logits.masked_fill(logits < threshold, float("-inf"))
            probabilities = logits.softmax(-1).flatten(0, 1).cpu()
            drawn = torch.multinomial(probabilities, 1, generator=generator).view(count, -1).to(device)
            tokens[:, members] = drawn
            context = self.embed(drawn, members, cols)
            if on_row is not None:
                while drawn_rows < int(tile.starts[group + 1]) // cols:
                    drawn_rows += 1
                    on_row()
        return tokens.view(count, rows, cols)


def build_prior(config: PriorConfig) -> TokenPrior:
    """The prior class that `config.schedule` names."""
    return Prior(config) if config.schedule == RASTER else GroupPrior(config)


@torch.no_grad()
def calibrate_int8(prior: TokenPrior, tokens: torch.Tensor, *, batch_size: int = 16) -> TokenPrior:
    """A copy of `prior` in the "int8" arithmetic: each product's weights rounded to int8 per
    output channel, and each product's input step the largest magnitude that input reaches over
    the token grids `tokens` (B, h, w), teacher-forced, with those weights, divided by 127, so
    those grids are never clipped (a post-training quantisation: for p5-10bit-groups' prior,
    calibrated on 256 training frames, level-1 files 0.04% larger over all 1,603 valid frames)."""
    import dataclasses

    from .exact import INT8  # the largest operand of the twin's products

    config = dataclasses.replace(prior.config, arithmetic="int8")
    model = build_prior(config)
    model.load_state_dict({**prior.state_dict(), "int8_steps": model.int8_steps})
    model.eval()
    model.set_int8_weights(model.rounded_int8_weights())
    peaks: dict[str, float] = dict.fromkeys(model.int8_names(), 0.0)
    d = config.d_model

    def record(name: str, value: torch.Tensor) -> None:
        peaks[name] = max(peaks[name], float(value.abs().max()))

    def hook(name: str, output_parts: bool):
        def inputs(_module, args, output):
            record(name, args[0])
            if output_parts:  # q, k and v are the qkv layer's output thirds
                for index, part in enumerate("qkv"):
                    record(name.replace("qkv", part), output[..., index * d : (index + 1) * d])
        return inputs

    handles = []
    for i, block in enumerate(model.blocks):
        for part, module in (("qkv", block.attn.qkv), ("proj", block.attn.proj), ("up", block.up), ("down", block.down)):
            handles.append(module.register_forward_hook(hook(f"{i}.{part}", part == "qkv")))
    handles.append(model.head.register_forward_hook(hook("head", False)))
    try:
        for start in range(0, len(tokens), batch_size):
            model(tokens[start : start + batch_size].long())
    finally:
        for handle in handles:
            handle.remove()
    steps = torch.tensor([max(peaks[name], 1e-6) / INT8 for name in model.int8_names()])
    model.int8_steps.copy_(steps)
    return model
