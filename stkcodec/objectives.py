"""What each model is trained to do: its loss on a batch and its validation metrics."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .metrics import psnr_db, quantize_8bit


def _ramp(start: float, final: float, steps: int, step: int) -> float:
    """Linear from `start` at step 0 to `final` at `steps`, then constant."""
    done = min(1.0, step / steps) if steps else 1.0
    return start + (final - start) * done


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

    def __init__(self, *, commitment_weight: float, entropy_weight: float, entropy_weight_final: float | None = None,
                 entropy_decay_steps: int = 0, teacher_weight: float = 0.0, teacher_weight_final: float = 0.0,
                 teacher_decay_steps: int = 0, patch_size: int = 5, bits: int = 10) -> None:
        self.commitment_weight = commitment_weight
        self.entropy_weights = (entropy_weight, entropy_weight if entropy_weight_final is None else entropy_weight_final)
        self.entropy_decay_steps = entropy_decay_steps
        self.teacher_weights = (teacher_weight, teacher_weight_final)
        self.teacher_decay_steps = teacher_decay_steps
        self.patch_size, self.bits = patch_size, bits
        self.teacher = None  # a PatchTeacher, from prepare() when a teacher weight is above zero

    @classmethod
    def from_config(cls, config) -> "TokenizerObjective":
        return cls(commitment_weight=config.commitment_weight, entropy_weight=config.entropy_weight,
                   entropy_weight_final=config.entropy_weight_final, entropy_decay_steps=config.entropy_decay_steps,
                   teacher_weight=config.teacher_weight, teacher_weight_final=config.teacher_weight_final,
                   teacher_decay_steps=config.teacher_decay_steps, patch_size=config.patch_size, bits=config.bits)

    def entropy_weight(self, step: int) -> float:
        return _ramp(*self.entropy_weights, self.entropy_decay_steps, step)

    def teacher_weight(self, step: int) -> float:
        if not self.teacher_decay_steps:  # no ramp asked for: the starting weight throughout
            return self.teacher_weights[0]
        return _ramp(*self.teacher_weights, self.teacher_decay_steps, step)

    def prepare(self, model: nn.Module, train_data, *, saved: dict | None, resumed: bool, generator: torch.Generator,
                log=print) -> None:
        """Fit the k-means teacher on training crops (or take the one a resumed run saved), and
        start a new model's patch prototypes at its centroids."""
        frozen = getattr(model, "encoder_frozen", False)  # its encoder is kept as it is: nothing to teach
        wants_teacher = max(self.teacher_weights) > 0 and not frozen
        fresh_prototypes = getattr(model, "prototypes", None) is not None and not resumed and not frozen
        if not (wants_teacher or fresh_prototypes):
            return
        from .teacher import PatchTeacher

        if saved:
            teacher = PatchTeacher.from_state_dict(saved)
        else:
            log(f"fitting k-means ({2 ** self.bits} centroids of {self.patch_size}x{self.patch_size} patches)")
            teacher = PatchTeacher.fit(lambda n: train_data.sample(n, generator), patch_size=self.patch_size,
                                       bits=self.bits, generator=generator)
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
        weights = {"commitment": self.commitment_weight, "entropy": self.entropy_weight(step), "teacher": teacher_weight}
        loss = mse + sum(weights.get(name, 0.0) * value for name, value in aux.items())
        return loss, {"loss": loss.detach(), "psnr": -10 * torch.log10(mse.detach()),
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
