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
from typing import Any, Protocol

import torch
from torch import nn

from .checkpoint import atomic_save, model_payload, read_checkpoint
from .modelfile import split_config
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
            # every rank past its last collective first: a gloo rank that tears its group down
            # while the other still writes the model file can abort ("terminate called")
            torch.distributed.barrier()
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


class Objective(Protocol):
    """What `train` asks of a training objective (objectives.py holds the three kinds')."""

    config: Any  # its loss settings (a dataclass, kept in the recipe), or None
    best: tuple[str, int]  # the validation figure that picks best.pt, and its sign (1: higher is better)

    def prepare(self, model: nn.Module, train_data, *, saved: dict | None, resumed: bool,
                frozen: tuple[str, ...], generator: torch.Generator, log: Callable[[str], None],
                track: Callable[[str, int], Callable[[], None]]) -> None: ...

    def loss(self, model: nn.Module, batch, step: int) -> tuple[torch.Tensor, dict]: ...

    def evaluate(self, model: nn.Module, data, *, device: torch.device, limit: int | None) -> dict: ...

    def state_dict(self) -> dict | None: ...


class _Run:
    """One training run's state: the model and its optimiser, where the run stands, and where
    it writes. `restore`, `step` and `save` are its parts; `train` drives them."""

    def __init__(self, model: nn.Module, objective: Objective, config: TrainConfig, provenance: dict,
                 device: torch.device, dist: Distributed) -> None:
        self.model, self.objective, self.config, self.provenance = model, objective, config, provenance
        self.device, self.dist = device, dist
        self.generator = torch.Generator().manual_seed(config.seed * 1000 + dist.rank)
        self.trained = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.trained, config)
        self.step_count, self.elapsed_s, self.metrics, self.best_score = 0, 0.0, {}, -math.inf
        self.run_dir: Path | None = None

    def restore(self, state: dict, log: Callable[[str], None]) -> bool:
        """Weights from a checkpoint or model file, and from a checkpoint the optimiser, the batch
        generator and the best score too. Returns whether it was a checkpoint (the run goes on)."""
        model, config = self.model, self.config
        architecture, _ = split_config(model.kind, state["config"])
        if architecture != dataclasses.asdict(model.config):
            raise ModelMismatchError(f"{config.resume}: its model config differs from the model's")
        model.load_state_dict(state["state_dict"])
        checkpoint = "optimizer" in state  # not just a model file
        if checkpoint:
            if len(state["optimizer"]["param_groups"]) != len(self.optimizer.param_groups):
                # a run started before decay was split by shape goes on as it began: one group
                self.optimizer = torch.optim.AdamW(self.trained, lr=config.lr, weight_decay=config.weight_decay,
                                                   betas=(0.9, 0.99))
            self.optimizer.load_state_dict(state["optimizer"])
            rng = state["rng"]
            self.generator.set_state(rng[self.dist.rank] if self.dist.rank < len(rng) else rng[0])
            self.best_score = float(state.get("best_score", -math.inf))
        self.step_count, self.elapsed_s = int(state.get("step", 0)), float(state.get("elapsed_s", 0.0))
        self.metrics = dict(state.get("metrics", {}))
        log(f"resuming {config.resume} at step {self.step_count}")
        return checkpoint

    def set_mode(self, training: bool) -> None:
        self.model.train(training)
        for name in self.config.frozen:
            self.model.get_submodule(name).eval()

    def evaluate(self, valid_data) -> dict:
        if valid_data is None:
            return {}
        self.set_mode(False)
        with torch.no_grad():
            result = self.objective.evaluate(self.model, valid_data, device=self.device, limit=self.config.valid_limit)
        self.set_mode(True)
        return result

    def step(self, net: nn.Module, batch) -> dict:
        """One optimiser step on `batch`, at the learning rate of where the run stands: its metrics."""
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.config, self.step_count, self.elapsed_s)
        loss, batch_metrics = self.objective.loss(net, batch, self.step_count)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.step_count += 1
        return batch_metrics

    def _gather_rng(self) -> list[torch.Tensor]:
        mine = self.generator.get_state()
        if not self.dist.enabled:
            return [mine]
        states = [torch.empty_like(mine) for _ in range(self.dist.world)]
        torch.distributed.all_gather_object(states, mine)
        return states

    def save(self, *, final: bool) -> Path:
        """checkpoint.pt (and best.pt when validation improved; with `final`, the model file)."""
        rng = self._gather_rng()
        checkpoint = self.run_dir / "checkpoint.pt"
        if not self.dist.main:
            return checkpoint
        model = self.model
        record = {"step": self.step_count, "metrics": self.metrics, "provenance": self.provenance}
        name, sign = self.objective.best
        if name in self.metrics and sign * self.metrics[name] > self.best_score:  # the best validation so far, kept apart
            self.best_score = sign * self.metrics[name]
            atomic_save(model_payload(model, half=True, **record), self.run_dir / "best.pt")
        objective_state = self.objective.state_dict()
        atomic_save({**model_payload(model, **record), "optimizer": self.optimizer.state_dict(), "rng": rng,
                     "elapsed_s": self.elapsed_s, "best_score": self.best_score,
                     **({"objective": objective_state} if objective_state is not None else {})}, checkpoint)
        if final:  # the model file: float16 weights, no training state
            atomic_save(model_payload(model, half=True, **record), self.config.output)
        return checkpoint

    def agree(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag true where any process's is: the ranks' clocks and signals differ, and a
        rank that saved (a collective) or stopped while another stepped would hang both."""
        if not self.dist.enabled:
            return flags
        tensor = torch.tensor([float(flag) for flag in flags], device=self.device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return tuple(bool(value) for value in tensor.tolist())


def train(model: nn.Module, objective: Objective, train_data, valid_data, config: TrainConfig, *,
          state: dict | None = None, provenance: Mapping[str, Any] | None = None,
          log: Callable[[str], None] | None = None) -> dict:
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
    model.to(device)
    for name in config.frozen:  # kept as they are: no gradient, and eval mode below
        model.get_submodule(name).requires_grad_(False)
    recipe = {"run": {k: v for k, v in dataclasses.asdict(config).items() if k not in NOT_RESUMED},
              "loss": dataclasses.asdict(objective.config) if objective.config is not None else None}
    run = _Run(model, objective, config, {"train": train_data.describe(),
                                          "valid": valid_data.describe() if valid_data else None,
                                          **(provenance or {}), "recipe": recipe}, device, dist)
    if config.resume and state is None:
        state = read_checkpoint(config.resume, kind=model.kind)
    resumed_checkpoint = run.restore(state, log) if state is not None else False
    if resumed_checkpoint:  # the same run goes on: its folder, its metrics.jsonl
        run.run_dir = Path(config.resume).parent
    else:
        run.run_dir = Path(config.checkpoint_dir) / f"{datetime.now():%Y%m%d-%H%M%S}-{model.kind}"
    if dist.main:
        make_writable_folder(run.run_dir)
    metrics_log = MetricsLog(run.run_dir, dist.main, resumed_step=run.step_count if resumed_checkpoint else None)
    net = dist.wrap(model, device)

    progress = make_progress(disable=config.quiet or not dist.main)
    with StopRequest() as stop, progress:
        def track(description: str, total: int):
            task = progress.add_task(description, total=total, info="")
            return lambda: progress.advance(task)

        objective.prepare(model, train_data, saved=state.get("objective") if resumed_checkpoint else None,
                          resumed=state is not None, frozen=config.frozen,
                          generator=torch.Generator().manual_seed(config.seed), log=log, track=track)
        run.set_mode(True)
        start = time.monotonic() - run.elapsed_s
        last_save = last_shown = time.monotonic()
        images_seen, window_start, shown = 0, time.monotonic(), {}
        by_time = not config.steps  # a run by minutes alone: the bar counts seconds
        task = progress.add_task(f"train {model.kind}",
                                 total=config.minutes * 60 if by_time else config.steps,
                                 completed=run.elapsed_s if by_time else run.step_count, info="",
                                 unit="s" if by_time else "")
        while True:
            run.elapsed_s = time.monotonic() - start
            # one collective a step decides, for every rank at once, whether to stop, end or save
            stopped, ended, save_due = run.agree(
                stop.received is not None,
                bool((config.steps and run.step_count >= config.steps)
                     or (config.minutes and run.elapsed_s >= config.minutes * 60)),
                time.monotonic() - last_save >= config.checkpoint_minutes * 60)
            if ended:
                break
            if stopped:
                metrics_log.write(run.step_count, "interrupted", {"elapsed_s": round(run.elapsed_s, 1)})
                checkpoint = run.save(final=False)
                metrics_log.close()
                if dist.main:
                    log(f"interrupted at step {run.step_count}: checkpoint {checkpoint} "
                        f"(`stkc train {model.kind} --resume {checkpoint}` continues)")
                raise KeyboardInterrupt
            batch = train_data.sample(config.batch_size, run.generator, rank=dist.rank, world=dist.world).to(device)
            batch_metrics = run.step(net, batch)
            images_seen += len(batch)
            if run.step_count % 10 == 0:
                rate = images_seen * dist.world / max(1e-9, time.monotonic() - window_start)
                images_seen, window_start = 0, time.monotonic()
                shown = {k: round(float(v), 4) for k, v in batch_metrics.items()}
                metrics_log.write(run.step_count, "train", {**shown, "images_per_s": round(rate, 2),
                                                            "lr": run.optimizer.param_groups[0]["lr"]})
                shown["img/s"] = round(rate, 1)
            if run.step_count % 10 == 0 or time.monotonic() - last_shown >= 1.0:
                last_shown = time.monotonic()
                run.elapsed_s = last_shown - start
                info = ", ".join([progress_note(run.step_count, run.elapsed_s, config),
                                  *(f"{k} {v:.3f}" for k, v in shown.items())])
                progress.update(task, completed=min(run.elapsed_s, config.minutes * 60) if by_time else run.step_count,
                                info=info)
            if save_due:
                run.metrics = {**run.metrics, **run.evaluate(valid_data)}
                metrics_log.write(run.step_count, "valid", run.metrics)
                run.save(final=False)
                last_save = time.monotonic()
    run.elapsed_s = time.monotonic() - start
    run.metrics = {**run.metrics, **run.evaluate(valid_data), "train_minutes": round(run.elapsed_s / 60, 2)}
    metrics_log.write(run.step_count, "valid", run.metrics)
    run.save(final=True)
    metrics_log.close()
    dist.close()
    if dist.main:
        log(f"step {run.step_count}: " + ", ".join(f"{k} {v:.4g}" for k, v in run.metrics.items())
            + f" -> {config.output}")
    return model_payload(model, half=True, step=run.step_count, metrics=run.metrics, provenance=run.provenance)
