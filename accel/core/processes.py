"""The processes a command runs as: this one alone, or several under ``accelerate launch`` /
``torch.distributed.run`` (one process group: gloo on the CPU, nccl on GPUs). A single process never
starts torch.distributed."""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

from accel.core.errors import AccelError

T = TypeVar("T")
_ALONE = contextvars.ContextVar("accel_alone", default=False)


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    count: int = 1

    @property
    def is_main(self) -> bool:
        """The process that writes results and prints them."""
        return self.rank == 0

    def gather_strided(self, share: list) -> list:
        """On every process, the whole list of which each process holds ``whole[rank::count]``."""
        if self.count == 1:
            return share
        shares = [None] * self.count
        torch.distributed.all_gather_object(shares, share)
        whole = [None] * sum(len(part) for part in shares)
        for rank, part in enumerate(shares):
            whole[rank :: self.count] = part
        return whole

    def on_main(self, work: Callable[[], T]) -> T:
        """``work()`` done by the main process alone; every process gets its result, or raises its
        AccelError. Returning is a meeting point: no process goes on before the main one is done."""
        if self.count == 1:
            return work()
        outcome: list = [None]
        if self.is_main:
            try:
                outcome = [("done", work())]
            except AccelError as error:
                outcome = [("error", str(error))]
        torch.distributed.broadcast_object_list(outcome, src=0)
        kind, value = outcome[0]
        if kind == "error":
            raise AccelError(value)
        return value

    def own_device(self, device: torch.device) -> torch.device:
        """``cuda`` without an index as this process's own GPU (LOCAL_RANK, as launchers number
        them), so that the processes do not all share GPU 0; any other device as given."""
        if self.count > 1 and device.type == "cuda" and device.index is None:
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return device


SINGLE = Processes()


@contextlib.contextmanager
def alone():
    """Inside, ``current_processes()`` is this process alone: work the main process does for
    everyone."""
    token = _ALONE.set(True)
    try:
        yield
    finally:
        _ALONE.reset(token)


def current_processes() -> Processes:
    """This run's processes: those of the process group, started here (through accelerate) when a
    launcher set WORLD_SIZE above 1 and nobody has yet; else this process alone (also inside
    ``alone()``)."""
    distributed = torch.distributed
    if _ALONE.get():
        return SINGLE
    if not (distributed.is_available() and distributed.is_initialized()):
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return SINGLE
        from accelerate import PartialState

        # Joins the launcher's process group: gloo on the CPU, nccl where there are GPUs. As the
        # training loop's Accelerator will ask: a state made for CUDA first leaves a later
        # Accelerator(cpu=True) one process.
        PartialState(cpu=not torch.cuda.is_available())
    return Processes(distributed.get_rank(), distributed.get_world_size())
