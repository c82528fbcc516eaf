"""One training loop for every stkc model.

The model and its objective are parameters (see `objectives.py`); the loop owns the rest:
optimiser and schedule, checkpoints every few minutes and exact resume, the model with the best
validation so far (`best.pt` beside the checkpoint), progress, metrics
as JSON lines (and TensorBoard events when `tensorboard` is installed), and
DistributedDataParallel when started by `torchrun`.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
from torch import nn

from .checkpoint import atomic_save, model_payload, read_checkpoint
from .errors import ModelMismatchError, StkcError
from .progress import make_progress


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    steps: int | None = None
    minutes: float | None = None
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    seed: int = 0
    device: str = "auto"
    output: str = "model.pt"
    checkpoint_dir: str = "checkpoints"
    checkpoint_minutes: float = 3.0
    valid_limit: int | None = 256
    resume: str | None = None
    quiet: bool = False


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise StkcError("--device cuda: no CUDA device here")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise StkcError("--device mps: no MPS device here")
    return torch.device(name)


class Distributed:
    """rank/world from torchrun's environment; a no-op in a single process."""

    def __init__(self, device: torch.device) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.enabled = self.world > 1
        if self.enabled and not torch.distributed.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend=backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        if not self.enabled:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def mean(self, value: float, device: torch.device) -> float:
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(tensor)
        return float(tensor) / self.world

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def learning_rate(config: TrainConfig, step: int, elapsed_s: float) -> float:
    """Linear warm-up, then cosine decay to 10% over the run (by steps or by minutes)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    fractions = []
    if config.steps:
        fractions.append(step / config.steps)
    if config.minutes:
        fractions.append(elapsed_s / (config.minutes * 60))
    done = min(1.0, max(fractions, default=0.0))
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * done)))


class MetricsLog:
    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self.board = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.board = SummaryWriter(str(run_dir))
            except ImportError:
                pass

    def write(self, step: int, split: str, metrics: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as file:
            file.write(json.dumps({"step": step, "split": split, "time": time.time(), **metrics}) + "\n")
        if self.board is not None:
            for name, value in metrics.items():
                self.board.add_scalar(f"{split}/{name}", value, step)

    def close(self) -> None:
        if self.board is not None:
            self.board.close()


def train(model: nn.Module, objective, train_data, valid_data, config: TrainConfig, *, log=print) -> dict:
    """Train `model` on `objective` until `config.steps` or `config.minutes` runs out.

    Returns the final model payload (also written to `config.output` by the main process).
    """
    if not config.steps and not config.minutes:
        raise StkcError("say how long to train: --steps N or --minutes M")
    device = pick_device(config.device)
    dist = Distributed(device)
    torch.set_flush_denormal(True)  # denormal weights and gradients slow CPU training several-fold
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed * 1000 + dist.rank)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.99))
    step, elapsed_s, metrics = 0, 0.0, {}
    provenance = {"train": train_data.describe(), "valid": valid_data.describe() if valid_data else None}

    if config.resume:
        state = read_checkpoint(config.resume, kind=model.kind)
        saved, asked = state["config"], model_payload(model)["config"]
        changed = sorted(key for key in saved.keys() | asked.keys() if saved.get(key) != asked.get(key))
        if set(changed) - set(getattr(model, "loss_fields", ())):
            raise ModelMismatchError(f"{config.resume}: its model config differs from the one asked for "
                                     f"({', '.join(changed)})")
        if changed:
            log("resuming with other loss weights: " + ", ".join(f"{k} {saved[k]} -> {asked[k]}" for k in changed))
        model.load_state_dict(state["state_dict"])
        if "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
            rng = state["rng"]
            generator.set_state(rng[dist.rank] if dist.rank < len(rng) else rng[0])
        step, elapsed_s = int(state.get("step", 0)), float(state.get("elapsed_s", 0.0))
        metrics = dict(state.get("metrics", {}))
        log(f"resuming {config.resume} at step {step}")
    if hasattr(objective, "prepare"):
        objective.prepare(model, train_data, saved=state.get("objective") if config.resume else None,
                          resumed=bool(config.resume), generator=torch.Generator().manual_seed(config.seed), log=log)
    if hasattr(model, "training_provenance"):
        provenance.update(model.training_provenance(state if config.resume else None))

    run_dir = Path(config.checkpoint_dir) / f"{datetime.now():%Y%m%d-%H%M%S}-{model.kind}"
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    metrics_log = MetricsLog(run_dir, dist.main)
    net = dist.wrap(model, device)

    def gather_rng() -> list[torch.Tensor]:
        state = generator.get_state()
        if not dist.enabled:
            return [state]
        states = [torch.empty_like(state) for _ in range(dist.world)]
        torch.distributed.all_gather_object(states, state)
        return states

    def evaluate() -> dict:
        if valid_data is None:
            return {}
        model.eval()
        with torch.no_grad():
            result = objective.evaluate(model, valid_data, device=device, limit=config.valid_limit)
        model.train()
        return result

    best_score = -math.inf

    def save(final: bool) -> None:
        nonlocal best_score
        rng = gather_rng()
        if not dist.main:
            return
        name, sign = getattr(objective, "best", (None, 1))
        if name in metrics and sign * metrics[name] > best_score:  # the best validation so far, kept apart
            best_score = sign * metrics[name]
            atomic_save(model_payload(model, half=True, step=step, metrics=metrics, provenance=provenance),
                        run_dir / "best.pt")
        payload = model_payload(model, step=step, metrics=metrics, provenance=provenance)
        objective_state = objective.state_dict() if hasattr(objective, "state_dict") else None
        atomic_save({**payload, "optimizer": optimizer.state_dict(), "rng": rng, "elapsed_s": elapsed_s,
                     **({"objective": objective_state} if objective_state is not None else {})},
                    run_dir / "checkpoint.pt")
        if final:  # the model file: float16 weights, no training state
            atomic_save(model_payload(model, half=True, step=step, metrics=metrics, provenance=provenance),
                        config.output)

    model.train()
    start = time.monotonic() - elapsed_s
    last_save = time.monotonic()
    images_seen, window_start = 0, time.monotonic()
    progress = make_progress(disable=config.quiet or not dist.main)
    total = config.steps or None
    with progress:
        task = progress.add_task(f"train {model.kind}", total=total, completed=step, info="")
        while True:
            elapsed_s = time.monotonic() - start
            if (config.steps and step >= config.steps) or (config.minutes and elapsed_s >= config.minutes * 60):
                break
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step, elapsed_s)
            batch = train_data.sample(config.batch_size, generator, rank=dist.rank, world=dist.world).to(device)
            loss, batch_metrics = objective.loss(net, batch, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            images_seen += len(batch)
            if step % 10 == 0:
                rate = images_seen * dist.world / max(1e-9, time.monotonic() - window_start)
                images_seen, window_start = 0, time.monotonic()
                shown = {k: round(float(v), 4) for k, v in batch_metrics.items()}
                metrics_log.write(step, "train", {**shown, "images_per_s": round(rate, 2), "lr": optimizer.param_groups[0]["lr"]})
                info = " ".join(f"{k} {v:.3f}" for k, v in shown.items())
                progress.update(task, completed=step, info=f"{info} {rate:.1f} img/s")
            if time.monotonic() - last_save >= config.checkpoint_minutes * 60:
                metrics = {**metrics, **evaluate()}
                metrics_log.write(step, "valid", metrics)
                save(final=False)
                last_save = time.monotonic()
    elapsed_s = time.monotonic() - start
    metrics = {**metrics, **evaluate(), "train_minutes": round(elapsed_s / 60, 2)}
    metrics_log.write(step, "valid", metrics)
    save(final=True)
    metrics_log.close()
    dist.close()
    if dist.main:
        log(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()) + f" -> {config.output}")
    return model_payload(model, half=True, step=step, metrics=metrics, provenance=provenance)
