"""Patch auto-encoder with a BSQ bottleneck: images <-> grids of integer tokens.

Every heavy layer runs on the latent grid (one cell per p×p patch), never at full resolution:
a 3×3 convolution on the 30×20 grid of a 150×100 frame costs 1/25 of one on the pixels.

Images are float tensors (B, 3, H, W) in [0, 1]; tokens are int64 tensors (B, h, w) with
h = ceil(H / p), w = ceil(W / p).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .bsq import BSQ
from .modelfile import ModelFile
from .patches import pad_to_patches, patch_vectors


@dataclass(frozen=True, kw_only=True)
class TokenizerConfig:
    """The network's shape: what a decoder needs, and all a model id hashes. The defaults are
    the shipped recipe's; how a model is trained is `objectives.TokenizerLoss`."""

    patch_size: int = 5
    bits: int = 10
    encoder_channels: int = 96
    encoder_blocks: int = 2
    decoder_channels: int = 160
    decoder_blocks: int = 4
    prototypes: bool = True  # the encoder also sees each patch's soft assignment to 2**bits prototypes


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.gelu(self.conv1(F.gelu(x))))


class PatchPrototypes(nn.Module):
    """Each patch's soft assignment to learned prototype patches, projected to the encoder's width.

    k-means on patches alone reconstructs these frames far better than the partition a
    straight-through encoder finds from scratch (see teacher.py). With the prototypes
    initialised to k-means centroids numbered as BSQ codes, the encoder can learn to give each
    patch its cell's code quickly, and its convolutions can still move a patch to another code
    when the neighbours say the decoder would do better.
    """

    def __init__(self, count: int, patch_size: int, channels: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.prototypes = nn.Parameter(torch.rand(count, 3 * patch_size * patch_size))  # see initialise()
        self.log_temperature = nn.Parameter(torch.tensor(math.log(0.05)))
        self.project = nn.Conv2d(count, channels, 1, bias=False)

    @torch.no_grad()
    def initialise(self, centroids: torch.Tensor) -> None:
        self.prototypes.copy_(centroids)

    def forward(self, padded: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1], H and W multiples of p -> (B, channels, H/p, W/p)."""
        patches = patch_vectors(padded, self.patch_size)  # (B, h, w, 3*p*p), laid out as the k-means centroids
        distances = (patches.pow(2).sum(-1, keepdim=True) - 2 * patches @ self.prototypes.t()
                     + self.prototypes.pow(2).sum(-1))  # (B, h, w, count)
        weights = torch.softmax(-distances / self.log_temperature.exp(), dim=-1)
        return self.project(weights.permute(0, 3, 1, 2))


class Tokenizer(nn.Module, ModelFile):
    kind = "tokenizer"
    config_class = TokenizerConfig
    # The modules that turn pixels into tokens (by attribute name): keep them and their batch-norm
    # statistics as they are, and every image keeps its tokens.
    ENCODER_SIDE = ("patchify", "prototypes", "encoder", "to_latent", "quantizer")
    ENCODER_ONLY = ENCODER_SIDE  # what a decode-only file leaves out (decoding needs from_latent on)
    ENCODER_FIELDS = ("patch_size", "bits", "encoder_channels", "encoder_blocks", "prototypes")

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.config = config
        p, ce, cd = config.patch_size, config.encoder_channels, config.decoder_channels
        self.patchify = nn.Conv2d(3, ce, p, stride=p)
        self.prototypes = PatchPrototypes(2**config.bits, p, ce) if config.prototypes else None
        self.encoder = nn.Sequential(*[ResBlock(ce) for _ in range(config.encoder_blocks)])
        # Batch-normalising the latents keeps every bit in use: a bit whose sign never
        # changes carries nothing, the decoder learns to ignore it, and it never recovers.
        self.to_latent = nn.Sequential(nn.Conv2d(ce, config.bits, 1, bias=False),
                                       nn.BatchNorm2d(config.bits, affine=False))
        self.quantizer = BSQ(bits=config.bits)
        self.from_latent = nn.Conv2d(config.bits, cd, 1)
        self.decoder = nn.Sequential(*[ResBlock(cd) for _ in range(config.decoder_blocks)])
        self.to_pixels = nn.Conv2d(cd, 3 * p * p, 3, padding=1)
        self.unpatchify = nn.PixelShuffle(p)

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def grid_radius(self) -> int:
        """How many grid cells away a token (encoder) or a patch (decoder) can see."""
        return 2 * max(self.config.encoder_blocks, self.config.decoder_blocks) + 1

    def grid_shape(self, height: int, width: int) -> tuple[int, int]:
        p = self.config.patch_size
        return math.ceil(height / p), math.ceil(width / p)

    def encode(self, images: torch.Tensor, teacher_bits: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(B, 3, H, W) in [0, 1] -> (codes (B, bits, h, w), BSQ's auxiliary losses).

        With `teacher_bits` (B, h, w, bits) of 0/1, the losses include "teacher": the binary
        cross-entropy of the latents' signs against those bits (see teacher.py).
        """
        latents = self._latents(images)
        codes, losses = self.quantizer(latents)
        if teacher_bits is not None:  # batch-normalised latents: a logit scale of 3 makes ±1 confident
            losses["teacher"] = F.binary_cross_entropy_with_logits(3 * latents.float(), teacher_bits)
        return codes.permute(0, 3, 1, 2), losses

    def _latents(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> the latents (B, h, w, bits) that BSQ quantizes."""
        self.check_encodes()
        padded = pad_to_patches(images, self.config.patch_size)
        x = self.patchify(padded * 2 - 1)  # (B, ce, h, w)
        if self.prototypes is not None:
            x = x + self.prototypes(padded)
        return self.to_latent(self.encoder(x)).permute(0, 2, 3, 1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, bits, h, w) codes -> (B, 3, h*p, w*p) images, unclamped, about [0, 1]."""
        x = self.decoder(self.from_latent(codes * math.sqrt(self.config.bits)))
        return self.unpatchify(self.to_pixels(x)) * 0.5 + 0.5

    def forward(self, images: torch.Tensor, teacher_bits: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        codes, losses = self.encode(images, teacher_bits)
        height, width = images.shape[-2:]
        return self.decode(codes)[..., :height, :width], losses

    @torch.no_grad()
    def encode_index(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float in [0, 1] -> tokens (B, ceil(H/p), ceil(W/p)) int64."""
        codes, _ = self.encode(images)
        return self.quantizer.codes_to_index(codes.permute(0, 2, 3, 1))

    @torch.no_grad()
    def encode_margins(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) float in [0, 1] -> (tokens, as `encode_index`'s; margins (B, h, w, bits)
        float32): each bit's |coordinate| on the unit sphere, so flipping bit i of a token adds
        4 * margin_i / sqrt(bits) to its squared distance from the latent (what rdo.py weighs)."""
        latents = self._latents(images)
        codes, _ = self.quantizer(latents)
        return self.quantizer.codes_to_index(codes), F.normalize(latents.float(), dim=-1).abs()

    @torch.no_grad()
    def decode_index(self, tokens: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Tokens (B, h, w) -> images (B, 3, H, W) float in [0, 1].

        `size` = (H, W) crops the padded reconstruction back to the original image size.
        """
        codes = self.quantizer.index_to_codes(tokens).permute(0, 3, 1, 2)
        images = self.decode(codes).clamp(0, 1)
        if size is not None:
            images = images[..., : size[0], : size[1]]
        return images
