"""What each model is trained to do: its loss on a batch and its validation metrics."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .metrics import psnr_db, psnr_from_mse, quantize_8bit


def _ramp(start: float, final: float, steps: int, step: int) -> float:
    """Linear from `start` at step 0 to `final` at `steps`, then constant."""
    done = min(1.0, step / steps) if steps else 1.0
    return start + (final - start) * done


@dataclass(frozen=True, kw_only=True)
class TokenizerLoss:
    """The tokenizer's training recipe: the weights of its loss terms and how they move.

    The defaults are the shipped models' recipe (README, models/README.md); `stkc train
    tokenizer` shows them in -h. A checkpoint keeps these beside the model (provenance
    "recipe"), never in the model's config: they do not change what a decoder needs.
    """

    commitment_weight: float = 0.25  # BSQ's commitment term: latent to its code
    entropy_weight: float = 0.01  # BSQ's entropy term at step 0: keeps the codebook in use
    entropy_weight_final: float = 0.01  # ...from entropy_decay_steps on
    entropy_decay_steps: int = 600
    teacher_weight: float = 1.0  # the k-means teacher's pull at step 0 (teacher.py); 0: no teacher
    teacher_weight_final: float = 0.0  # ...from teacher_decay_steps on
    teacher_decay_steps: int = 1500  # 0: teacher_weight throughout


class TokenizerObjective:
    """Mean squared error of the reconstruction (what PSNR measures) + BSQ's auxiliary terms,
    and while its weight is above zero, the k-means teacher's (see teacher.py).

    The entropy term's weight falls linearly from `entropy_weight` to `entropy_weight_final`
    over `entropy_decay_steps`: strong at first, when the codes would otherwise collapse onto a
    few dozen, weak later, when a strong one trades reconstruction for a flatter code histogram.
    The teacher's weight moves the same way over `teacher_decay_steps` (0: it stays at
    `teacher_weight`).
    """

    best = ("valid_psnr_db", 1)  # the validation figure that picks best.pt, and its sign (higher is better)

    def __init__(self, config: TokenizerLoss = TokenizerLoss(), *, patch_size: int = 5, bits: int = 10) -> None:
        self.config = config
        self.patch_size, self.bits = patch_size, bits
        self.teacher = None  # a PatchTeacher, from prepare() when a teacher weight is above zero

    def entropy_weight(self, step: int) -> float:
        c = self.config
        return _ramp(c.entropy_weight, c.entropy_weight_final, c.entropy_decay_steps, step)

    def teacher_weight(self, step: int) -> float:
        c = self.config
        if not c.teacher_decay_steps:  # no ramp asked for: the starting weight throughout
            return c.teacher_weight
        return _ramp(c.teacher_weight, c.teacher_weight_final, c.teacher_decay_steps, step)

    def prepare(self, model: nn.Module, train_data, *, saved: dict | None, resumed: bool, frozen: Collection[str] = (),
                generator: torch.Generator, log: Callable[[str], None] | None = None, track=None) -> None:
        """Fit the k-means teacher on training crops (or take the one a resumed run saved), and
        start a new model's patch prototypes at its centroids. A frozen encoder (its module
        names in `frozen`) is kept as it is: nothing to teach it. `track(description, total)`
        gives a function that advances a progress bar by one."""
        encoder_frozen = "encoder" in frozen
        wants_teacher = max(self.config.teacher_weight, self.config.teacher_weight_final) > 0 and not encoder_frozen
        fresh_prototypes = model.prototypes is not None and not resumed and not encoder_frozen
        if not (wants_teacher or fresh_prototypes):
            return
        from .teacher import PatchTeacher

        if saved:
            teacher = PatchTeacher.from_state_dict(saved)
        else:
            (log or logging.getLogger(__name__).info)(f"fitting k-means ({2 ** self.bits} centroids of {self.patch_size}x{self.patch_size} patches)")
            iterations = 20
            advance = track("k-means", iterations) if track is not None else None
            teacher = PatchTeacher.fit(lambda n: train_data.sample(n, generator), patch_size=self.patch_size,
                                       bits=self.bits, iterations=iterations, generator=generator,
                                       on_iteration=advance)
        if fresh_prototypes:
            model.prototypes.initialise(teacher.centroids)
        if wants_teacher:
            self.teacher = teacher

    def state_dict(self) -> dict | None:
        """Training state to checkpoint: the teacher, so that a resumed run keeps the same one."""
        return self.teacher.state_dict() if self.teacher is not None else None

    def loss(self, model: nn.Module, images: torch.Tensor, step: int = 0) -> tuple[torch.Tensor, dict]:
        teacher_weight = self.teacher_weight(step) if self.teacher is not None else 0.0
        teacher_bits = self.teacher.bits(images) if teacher_weight > 0 else None
        reconstruction, aux = model(images, teacher_bits)
        mse = F.mse_loss(reconstruction, images)
        weights = {"commitment": self.config.commitment_weight, "entropy": self.entropy_weight(step), "teacher": teacher_weight}
        loss = mse + sum(weights.get(name, 0.0) * value for name, value in aux.items())
        return loss, {"loss": loss.detach(), "psnr": psnr_from_mse(mse.detach()),
                      **{name: value.detach() for name, value in aux.items()}}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data, *, device: torch.device, limit: int | None) -> dict:
        values, tokens = [], []
        for images in data.batches(64, limit=limit):
            images = images.to(device)
            grid = model.encode_index(images)
            tokens.append(grid.flatten().cpu())
            decoded = model.decode_index(grid, size=images.shape[-2:])
            values.append(psnr_db(images, quantize_8bit(decoded)).cpu())
        counts = torch.bincount(torch.cat(tokens), minlength=model.codebook_size).double()
        frequencies = counts[counts > 0] / counts.sum()
        return {"valid_psnr_db": float(torch.cat(values).mean()),
                "valid_codes_used": int((counts > 0).sum()),
                "valid_code_entropy_bits": float(-(frequencies * frequencies.log2()).sum())}


class PriorObjective:
    """Cross-entropy of each token given the ones before it (its cost in nats)."""

    best = ("valid_bits_per_token", -1)  # the validation figure that picks best.pt, and its sign (lower is better)
    config = None  # no loss settings

    def prepare(self, model: nn.Module, train_data, **_) -> None:
        """Nothing to prepare."""

    def state_dict(self) -> None:
        return None

    def loss(self, model: nn.Module, tokens: torch.Tensor, step: int = 0) -> tuple[torch.Tensor, dict]:
        logits = model(tokens)  # (B, h*w, vocab)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens.flatten())
        return loss, {"loss": loss.detach(), "bits_per_token": loss.detach() / math.log(2)}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data, *, device: torch.device, limit: int | None) -> dict:
        total_nats, images, tokens_seen = 0.0, 0, 0
        for tokens in data.batches(32, limit=limit):
            tokens = tokens.to(device)
            logits = model(tokens)
            total_nats += float(F.cross_entropy(logits.flatten(0, 1).float(), tokens.flatten(), reduction="sum"))
            images += len(tokens)
            tokens_seen += tokens.numel()
        bits = total_nats / math.log(2)
        return {"valid_bits_per_image": bits / images, "valid_bits_per_token": bits / tokens_seen}


@dataclass(frozen=True, kw_only=True)
class EnhancerLoss:
    """The enhancement layer's recipe: one rate-distortion trade-off per level.

    Each image of a batch draws a level; its loss is bits per pixel + λ·255²·MSE with that
    level's λ (CompressAI's convention), so one network learns every level through its gains.
    """

    lambdas: tuple[float, ...] = (0.001, 0.0017, 0.0029, 0.005, 0.0085)


class EnhancerObjective:
    """Rate (the entropy model's bits, rounding replaced by noise) + λ·distortion per level."""

    best = ("valid_loss", -1)

    def __init__(self, config: EnhancerLoss = EnhancerLoss(), *, adopted: bool = False) -> None:
        """`adopted`: the model's gains come from a trained model (`Enhancer.adopt`), kept as they are."""
        self.config = config
        self.adopted = adopted
        self.lambdas = torch.tensor(config.lambdas, dtype=torch.float32)

    def state_dict(self) -> None:
        return None

    def prepare(self, model: nn.Module, train_data, *, saved: dict | None, resumed: bool, **_) -> None:
        if len(self.config.lambdas) != model.config.levels:
            raise ValueError(f"{len(self.config.lambdas)} lambdas for a model of {model.config.levels} levels")
        if model.config.token_values and getattr(train_data, "tokens", None) is None:
            raise ValueError("this enhancement model reads the base tokens: the pairs have none (build them again)")
        if not resumed and not self.adopted:
            model.initialise_gains(list(self.config.lambdas))

    def _terms(self, model: nn.Module, batch, level: torch.Tensor, training: bool):
        x, x0 = batch.pairs[:, :3], batch.pairs[:, 3:]
        enhanced, bits = model(x, x0, level, training=training, tokens=batch.tokens)
        bpp = bits / (x.shape[-2] * x.shape[-1])
        mse = (enhanced - x).pow(2).mean((1, 2, 3))
        return bpp, mse, bpp + self.lambdas.to(x.device)[level] * 255**2 * mse

    def loss(self, model: nn.Module, batch, step: int = 0) -> tuple[torch.Tensor, dict]:
        """`batch`: a `data.PairBatch` (images, their base reconstructions and tokens)."""
        level = torch.randint(len(self.config.lambdas), (len(batch),), device=batch.pairs.device)
        bpp, mse, per_image = self._terms(model, batch, level, True)
        loss = per_image.mean()
        return loss, {"loss": loss.detach(), "bpp": bpp.mean().detach(), "psnr": psnr_from_mse(mse.mean().detach())}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data, *, device: torch.device, limit: int | None) -> dict:
        """Per level: bits per pixel and PSNR (8-bit output) of whole frames, rounded as a coder rounds."""
        out, losses = {}, []
        for level in range(len(self.config.lambdas)):
            bpp, psnr, loss = [], [], []
            for batch in data.batches(32, limit=limit):
                batch = batch.to(device)
                pairs = batch.pairs
                levels = torch.full((len(pairs),), level, device=device)
                enhanced, bits = model(pairs[:, :3], pairs[:, 3:], levels, training=False, tokens=batch.tokens)
                rate = bits / (pairs.shape[-2] * pairs.shape[-1])
                quantised = quantize_8bit(enhanced)
                bpp.append(rate.cpu())
                psnr.append(psnr_db(pairs[:, :3], quantised).cpu())
                mse = (quantised - pairs[:, :3]).pow(2).mean((1, 2, 3))
                loss.append((rate + self.config.lambdas[level] * 255**2 * mse).cpu())
            out[f"valid_bpp_{level + 2}"] = float(torch.cat(bpp).mean())
            out[f"valid_psnr_{level + 2}"] = float(torch.cat(psnr).mean())
            losses.append(float(torch.cat(loss).mean()))
        out["valid_loss"] = sum(losses) / len(losses)
        return out
