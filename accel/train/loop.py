"""The one training loop: AdamW, warm-up and cosine decay, gradient clipping, EMA, checkpoints,
resume, tqdm.

Built on ``accelerate``, so the same call trains on a CPU, one GPU, or several processes under
``accelerate launch`` (DDP: gradients are averaged, every process ends with the same weights). Each
process draws its batch from a generator seeded by (seed, process, step): processes see different
data, and a resumed run draws exactly the batches the interrupted one would have, with no generator
state to save.

A checkpoint (safetensors + JSON, written atomically by the main process) holds the network, its
EMA, the optimizer, the step, the loss curve and ``run``: what identifies the run. Resuming from a
checkpoint of another run is refused.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from accel.core.checkpoint import (
    load_checkpoint,
    load_optimizer_state,
    optimizer_state,
    save_checkpoint,
)
from accel.core.processes import current_processes
from accel.train.config import TrainConfig
from accel.train.runs import check_same_run
from accel.train.tasks import Forward

CHECKPOINT = "checkpoint"


@dataclass
class TrainResult:
    network: nn.Module  # the EMA weights (or the trained ones when ema_decay is 0), unwrapped
    losses: list[float]  # per step, averaged over processes
    elapsed_s: float
    processes: int
    resumed_at: int  # the step training resumed from (0: a fresh start)


def step_generator(seed: int, process: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed << 40) + (process << 24) + step)


def ema_decay(target: float, step: int) -> float:
    """EMA decay with warm-up, (1 + step) / (10 + step) capped at ``target`` (diffusers'
    ``EMAModel``): a fixed 0.999 would keep 37% of the starting weights after 1,000 steps, which for
    a freshly pruned network are the broken ones."""
    return min(target, (1 + step) / (10 + step))


def checkpoint_state(work_dir: Path) -> dict | None:
    """The JSON state of the checkpoint in ``work_dir`` (None if there is none)."""
    folder = Path(work_dir) / CHECKPOINT
    return load_checkpoint(folder)[1] if folder.exists() else None


class _Run:
    def __init__(self, network: nn.Module, config: TrainConfig, work_dir: Path, run: dict):
        from accelerate import Accelerator

        self.config, self.run, self.folder = config, run, Path(work_dir) / CHECKPOINT
        on_cuda = next(network.parameters()).device.type == "cuda"
        self.accelerator = Accelerator(cpu=not on_cuda)
        network.to(self.accelerator.device).train()
        self.ema = copy.deepcopy(network).requires_grad_(False) if config.ema_decay > 0 else None
        optimizer = torch.optim.AdamW(
            network.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.network, self.optimizer = self.accelerator.prepare(network, optimizer)
        self.step, self.losses, self.elapsed_s, self.resumed_at = 0, [], 0.0, 0

    @property
    def plain(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.network)

    def restore(self, task) -> None:
        tensors, state = load_checkpoint(self.folder)
        check_same_run(state, self.run, self.folder)
        for prefix, target in (
            ("network", self.plain),
            ("ema", self.ema),
            ("task", _stateful(task)),
        ):
            if target is not None:
                target.load_state_dict(
                    {
                        k[len(prefix) + 1 :]: v
                        for k, v in tensors.items()
                        if k.startswith(prefix + ".")
                    }
                )
        load_optimizer_state(self.optimizer, "optimizer", tensors, state["optimizer"])
        self.step, self.losses, self.elapsed_s = state["step"], state["losses"], state["elapsed_s"]
        self.resumed_at = self.step

    def save(self, task) -> None:
        if current_processes().is_main:
            optimizer_tensors, optimizer_json = optimizer_state(self.optimizer, "optimizer")
            tensors = {}
            for prefix, source in (
                ("network", self.plain),
                ("ema", self.ema),
                ("task", _stateful(task)),
            ):
                if source is not None:
                    tensors.update({f"{prefix}.{k}": v for k, v in source.state_dict().items()})
            state = dict(
                run=self.run,
                config=self.config.to_dict(),
                optimizer=optimizer_json,
                step=self.step,
                losses=self.losses,
                elapsed_s=self.elapsed_s,
            )
            save_checkpoint(self.folder, {**tensors, **optimizer_tensors}, state)
        self.accelerator.wait_for_everyone()

    def train_step(self, task, forward: Forward) -> float:
        config, accelerator = self.config, self.accelerator
        generator = step_generator(config.seed, accelerator.process_index, self.step)
        loss = task.loss(forward, config.batch_size, generator, accelerator.device)
        for group in self.optimizer.param_groups:
            group["lr"] = config.learning_rate(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if config.grad_clip > 0:
            accelerator.clip_grad_norm_(self.network.parameters(), config.grad_clip)
        self.optimizer.step()
        # e.g. consistency distillation's target network follows the student
        if hasattr(task, "after_step"):
            task.after_step(self.plain)
        if self.ema is not None:
            decay = ema_decay(config.ema_decay, self.step)
            with torch.no_grad():
                for ema_p, p in zip(self.ema.parameters(), self.plain.parameters()):
                    ema_p.lerp_(p, 1.0 - decay)
        return accelerator.reduce(loss.detach(), "mean").item()


def train(
    network: nn.Module,
    task,
    config: TrainConfig,
    work_dir: str | Path,
    *,
    run: dict,
    forward_of: Callable[[nn.Module], Forward],
    desc: str = "train",
    progress: bool = True,
) -> TrainResult:
    """Train ``network`` on ``task`` (its ``loss(forward, batch_size, generator, device)``) for
    ``config.steps`` steps. A task may also have ``after_step(network)`` (run after each optimizer
    step) and ``state_dict`` / ``load_state_dict`` (tensors checkpointed with the network);
    ``forward_of(module)`` is eps(x_t, t, cond) through ``module`` (the prepared, possibly
    DDP-wrapped network). A checkpoint in ``work_dir`` is resumed if it belongs to ``run`` and
    refused otherwise."""
    state = _Run(network, config, work_dir, run)
    if state.folder.exists():
        state.restore(task)
    if hasattr(task, "to"):
        task.to(state.accelerator.device)
    forward = forward_of(state.network)
    show = progress and current_processes().is_main
    with tqdm(
        total=config.steps, initial=state.step, desc=desc, unit="step", disable=not show
    ) as bar:
        while state.step < config.steps:
            start = time.perf_counter()
            state.losses.append(state.train_step(task, forward))
            state.step += 1
            state.elapsed_s += time.perf_counter() - start
            bar.update(1)
            if state.step % 50 == 0:
                bar.set_postfix(loss=f"{sum(state.losses[-50:]) / 50:.4f}")
            if state.step % config.checkpoint_every == 0 and state.step < config.steps:
                state.save(task)
    result = state.ema if state.ema is not None else state.plain
    # an ordinary network again (the EMA copy was frozen): it may be trained further
    result.requires_grad_(True)
    return TrainResult(
        result.eval(),
        state.losses,
        state.elapsed_s,
        state.accelerator.num_processes,
        state.resumed_at,
    )


def _stateful(task):
    """The task itself where it has weights of its own to checkpoint (a target network), else
    None."""
    return task if hasattr(task, "state_dict") else None


def loss_curve(losses: list[float], points: int = 10) -> list[float]:
    """The mean loss over each tenth (``points``-th) of training: a compact record of the run."""
    size = max(1, len(losses) // points)
    return [
        round(sum(losses[i : i + size]) / len(losses[i : i + size]), 5)
        for i in range(0, len(losses), size)
    ]
