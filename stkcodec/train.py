"""One training loop for every stkc model.

The model and its objective are parameters (see `objectives.py`); the loop owns the rest:
optimiser and schedule, checkpoints every few minutes and exact resume, the model with the best
validation so far (`best.pt` beside the checkpoint), progress, metrics
as JSON lines (and TensorBoard events when `tensorboard` is installed), and
DistributedDataParallel when started by `torchrun`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import atomic_save, model_payload, read_checkpoint, split_config
from .errors import ModelMismatchError, Option, StkcError
from .outputs import check_writable, make_writable_folder
from .progress import make_progress


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How a run trains (not what): kept in each checkpoint's recipe, so `--resume` alone continues."""

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
    frozen: tuple[str, ...] = ()  # modules kept as they are (no gradient, batch-norm statistics fixed)
    resume: str | None = None
    quiet: bool = False


# What a run's recipe does not carry over to the run that resumes it.
NOT_RESUMED = ("resume", "quiet")


def settle(config_class: type, saved: Mapping[str, Any] | None, given: Mapping[str, Any], *,
           fixed: bool = False, what: str = "") -> tuple[Any, list[str]]:
    """A config from a resumed run's saved one (None: a new run, the class's defaults) and the
    options given on the command line, which override it. Returns (config, the fields that
    changed). With `fixed` (a model's shape) a change is refused."""
    names = {f.name for f in dataclasses.fields(config_class)}
    base = {k: v for k, v in (saved or {}).items() if k in names}
    given = {k: v for k, v in given.items() if k in names}
    changed = sorted(k for k, v in given.items() if saved is not None and k in base and base[k] != v)
    if fixed and changed:
        raise ModelMismatchError(f"{what}: its model config differs from the one asked for ({', '.join(changed)})")
    merged = {**base, **given}
    if "frozen" in merged:
        merged["frozen"] = tuple(merged["frozen"])
    return config_class(**merged), changed


@dataclass(frozen=True)
class Resumed:
    """What a checkpoint (or model file) to resume says: the model's shape, its loss settings,
    the run's options and where its data came from. Given options override all but the shape."""

    path: str
    state: dict
    architecture: dict
    loss: dict | None
    run: dict

    @classmethod
    def read(cls, path: str, kind: str) -> "Resumed":
        state = read_checkpoint(path, kind=kind)
        architecture, legacy_recipe = split_config(kind, state["config"])
        recipe = (state.get("provenance") or {}).get("recipe") or {}
        run = {k: v for k, v in (recipe.get("run") or {}).items() if k not in NOT_RESUMED}
        return cls(str(path), state, architecture, recipe.get("loss") or legacy_recipe or None, run)

    def data(self, split: str, key: str) -> Any:
        """What the provenance says of a split ("train", "valid"): its folder, tokens file..."""
        return ((self.state.get("provenance") or {}).get(split) or {}).get(key)


def check_output(path: str | Path, *, force: bool) -> None:
    """Refuse, before any training, an output that exists (without `force`) or cannot be written."""
    check_writable(Path(path), force=force, make_folder=True)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise StkcError(Option("device", "cuda"), ": no CUDA device here")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise StkcError(Option("device", "mps"), ": no MPS device here")
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


def make_optimizer(parameters: list[torch.Tensor], config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and kernels only (nanoGPT's configure_optimizers):
    norms' gains, biases and temperatures would be pulled towards 0 (or 1) for nothing."""
    groups = [{"params": [p for p in parameters if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in parameters if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, betas=(0.9, 0.99))


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
    """metrics.jsonl in the run folder (and TensorBoard events when installed). A resumed run
    appends to its run's file, after dropping the lines past the step it resumes from."""

    def __init__(self, run_dir: Path, enabled: bool, *, resumed_step: int | None = None) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self.board = None
        if not enabled:
            return
        if resumed_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resumed_step]
            self.path.write_text("".join(line + "\n" for line in kept))
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


class StopRequest:
    """SIGINT (Ctrl-C) or SIGTERM while training: the loop finishes its step, saves a checkpoint
    and stops. A second signal stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            self._previous = {number: signal.signal(number, self._handle) for number in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = number


def clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def progress_note(step: int, elapsed_s: float, config: TrainConfig) -> str:
    """Where a run stands: its step, and for a run by minutes, elapsed and remaining time."""
    if not config.minutes:
        return f"step {step}"
    total = config.minutes * 60
    return f"step {step}, {clock(elapsed_s)} elapsed, {clock(total - elapsed_s)} left"


def train(model: nn.Module, objective, train_data, valid_data, config: TrainConfig, *, state: dict | None = None,
          provenance: Mapping[str, Any] | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Train `model` on `objective` until `config.steps` or `config.minutes` runs out.

    `state` is the checkpoint `config.resume` names (read here when not given); a checkpoint
    resumes in its own run folder. `provenance` adds to what the files record. Returns the
    final model payload (also written to `config.output` by the main process). SIGINT or SIGTERM
    saves a checkpoint, says where, and raises KeyboardInterrupt.
    """
    log = log or logging.getLogger(__name__).info  # the CLI passes its own; a library user gets logging
    if not config.steps and not config.minutes:
        raise StkcError("say how long to train: ", Option("steps"), " or ", Option("minutes"))
    device = pick_device(config.device)
    dist = Distributed(device)
    torch.set_flush_denormal(True)  # denormal weights and gradients slow CPU training several-fold
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed * 1000 + dist.rank)
    model.to(device)
    for name in config.frozen:  # kept as they are: no gradient, and eval mode below
        model.get_submodule(name).requires_grad_(False)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trained, config)
    step, elapsed_s, metrics, best_score = 0, 0.0, {}, -math.inf
    objective_config = getattr(objective, "config", None)
    recipe = {"run": {k: v for k, v in dataclasses.asdict(config).items() if k not in NOT_RESUMED},
              "loss": dataclasses.asdict(objective_config) if objective_config is not None else None}
    provenance = {"train": train_data.describe(), "valid": valid_data.describe() if valid_data else None,
                  **(provenance or {}), "recipe": recipe}

    if config.resume and state is None:
        state = read_checkpoint(config.resume, kind=model.kind)
    resumed_checkpoint = state is not None and "optimizer" in state  # not just a model file
    if state is not None:
        architecture, _ = split_config(model.kind, state["config"])
        if architecture != dataclasses.asdict(model.config):
            raise ModelMismatchError(f"{config.resume}: its model config differs from the model's")
        model.load_state_dict(state["state_dict"])
        if resumed_checkpoint:
            if len(state["optimizer"]["param_groups"]) != len(optimizer.param_groups):
                # a run started before decay was split by shape goes on as it began: one group
                optimizer = torch.optim.AdamW(trained, lr=config.lr, weight_decay=config.weight_decay,
                                              betas=(0.9, 0.99))
            optimizer.load_state_dict(state["optimizer"])
            rng = state["rng"]
            generator.set_state(rng[dist.rank] if dist.rank < len(rng) else rng[0])
            best_score = float(state.get("best_score", -math.inf))
        step, elapsed_s = int(state.get("step", 0)), float(state.get("elapsed_s", 0.0))
        metrics = dict(state.get("metrics", {}))
        log(f"resuming {config.resume} at step {step}")

    if resumed_checkpoint:  # the same run goes on: its folder, its metrics.jsonl
        run_dir = Path(config.resume).parent
    else:
        run_dir = Path(config.checkpoint_dir) / f"{datetime.now():%Y%m%d-%H%M%S}-{model.kind}"
    if dist.main:
        make_writable_folder(run_dir)
    metrics_log = MetricsLog(run_dir, dist.main, resumed_step=step if resumed_checkpoint else None)
    net = dist.wrap(model, device)

    def gather_rng() -> list[torch.Tensor]:
        mine = generator.get_state()
        if not dist.enabled:
            return [mine]
        states = [torch.empty_like(mine) for _ in range(dist.world)]
        torch.distributed.all_gather_object(states, mine)
        return states

    def set_mode(training: bool) -> None:
        model.train(training)
        for name in config.frozen:
            model.get_submodule(name).eval()

    def evaluate() -> dict:
        if valid_data is None:
            return {}
        set_mode(False)
        with torch.no_grad():
            result = objective.evaluate(model, valid_data, device=device, limit=config.valid_limit)
        set_mode(True)
        return result

    def save(final: bool) -> Path:
        nonlocal best_score
        rng = gather_rng()
        checkpoint = run_dir / "checkpoint.pt"
        if not dist.main:
            return checkpoint
        record = {"step": step, "metrics": metrics, "provenance": provenance}
        name, sign = getattr(objective, "best", (None, 1))
        if name in metrics and sign * metrics[name] > best_score:  # the best validation so far, kept apart
            best_score = sign * metrics[name]
            atomic_save(model_payload(model, half=True, **record), run_dir / "best.pt")
        objective_state = objective.state_dict() if hasattr(objective, "state_dict") else None
        atomic_save({**model_payload(model, **record), "optimizer": optimizer.state_dict(), "rng": rng,
                     "elapsed_s": elapsed_s, "best_score": best_score,
                     **({"objective": objective_state} if objective_state is not None else {})}, checkpoint)
        if final:  # the model file: float16 weights, no training state
            atomic_save(model_payload(model, half=True, **record), config.output)
        return checkpoint

    def stop_requested() -> bool:
        asked = stop.received is not None
        if not dist.enabled:
            return asked
        flag = torch.tensor([float(asked)], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    progress = make_progress(disable=config.quiet or not dist.main)
    with StopRequest() as stop, progress:
        def track(description: str, total: int):
            task = progress.add_task(description, total=total, info="")
            return lambda: progress.advance(task)

        if hasattr(objective, "prepare"):
            objective.prepare(model, train_data, saved=state.get("objective") if resumed_checkpoint else None,
                              resumed=state is not None, frozen=config.frozen,
                              generator=torch.Generator().manual_seed(config.seed), log=log, track=track)
        set_mode(True)
        start = time.monotonic() - elapsed_s
        last_save = last_shown = time.monotonic()
        images_seen, window_start, shown = 0, time.monotonic(), {}
        by_time = not config.steps  # a run by minutes alone: the bar counts seconds
        task = progress.add_task(f"train {model.kind}",
                                 total=config.minutes * 60 if by_time else config.steps,
                                 completed=elapsed_s if by_time else step, info="")
        while True:
            elapsed_s = time.monotonic() - start
            if (config.steps and step >= config.steps) or (config.minutes and elapsed_s >= config.minutes * 60):
                break
            if stop_requested():
                metrics_log.write(step, "interrupted", {"elapsed_s": round(elapsed_s, 1)})
                checkpoint = save(final=False)
                metrics_log.close()
                if dist.main:
                    log(f"interrupted at step {step}: checkpoint {checkpoint} "
                        f"(`stkc train {model.kind} --resume {checkpoint}` continues)")
                raise KeyboardInterrupt
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
                shown["img/s"] = round(rate, 1)
            if step % 10 == 0 or time.monotonic() - last_shown >= 1.0:
                last_shown = time.monotonic()
                elapsed_s = last_shown - start
                info = ", ".join([progress_note(step, elapsed_s, config), *(f"{k} {v:.3f}" for k, v in shown.items())])
                progress.update(task, completed=min(elapsed_s, config.minutes * 60) if by_time else step, info=info)
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
