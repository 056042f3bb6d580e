"""What block reconstruction and GPTQ learn from: a unit's inputs in the quantized network and its
outputs in the float one, captured per calibration batch by hooks that end the forward pass at the
unit."""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn


def to_device(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    return value


class _UnitReached(Exception):
    """Ends a capture's forward pass at the unit: what comes after it is not needed."""


def end_forward() -> None:
    """Called by a hook of ``run_until_unit``: the pass has what it came for."""
    raise _UnitReached


def _stop(captured: list, value) -> None:
    captured.append(value)
    end_forward()


@torch.no_grad()
def run_until_unit(network: nn.Module, handle, batches, run_batch) -> None:
    """Run every calibration batch through ``network`` up to the hooked unit, then remove the hook
    ``handle``. Stopping there halves a capture's cost on average (a pass over the whole network
    per unit was most of a reconstruction's time outside the learning)."""
    try:
        for batch in batches:
            with contextlib.suppress(_UnitReached):
                run_batch(network, batch)
    finally:
        handle.remove()


def capture_inputs(network: nn.Module, unit: str, batches, run_batch) -> list[tuple]:
    """The (args, kwargs) that ``unit`` receives in ``network``, per calibration batch."""
    captured = []

    def hook(module, args, kwargs):
        _stop(captured, (to_device(args, "cpu"), to_device(kwargs, "cpu")))

    run_until_unit(
        network,
        network.get_submodule(unit).register_forward_pre_hook(hook, with_kwargs=True),
        batches,
        run_batch,
    )
    return captured


def capture_outputs(network: nn.Module, unit: str, batches, run_batch) -> list:
    """The output of ``unit`` in ``network``, per calibration batch."""
    captured = []
    hook = lambda m, args, output: _stop(captured, to_device(output, "cpu"))  # noqa: E731
    run_until_unit(
        network, network.get_submodule(unit).register_forward_hook(hook), batches, run_batch
    )
    return captured


def output_tensor(output):
    return output[0] if isinstance(output, (tuple, list)) else output
