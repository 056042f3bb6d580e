"""Block-wise reconstruction (BRECQ, Li et al. 2021) with learned rounding (AdaRound) and learned
activation step sizes (LSQ), on the calibration set.

Blocks are the units whose output error matters together: ResNet blocks, transformer blocks, and
attention modules outside transformer blocks; quantized layers in none of these are reconstructed
one by one. For each block, in forward order, the quantized network (earlier blocks already
reconstructed) gives the block's inputs and the full-precision copy gives the target outputs, as
Q-Diffusion does, so each block also learns to undo the error that reaches it from upstream. The
quantized block learns its weights' rounding (up or down per weight, regularised toward a firm
choice) and its activation scales to reproduce the target, then the rounding is fixed.
"""

from __future__ import annotations

import contextlib
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from accel.core.guidance_input import guidance_weight
from accel.quant.forward_order import forward_order
from accel.quant.layers import QuantAttnProcessor, QuantLayer

BLOCK_TYPES = ("ResnetBlock2D", "BasicTransformerBlock", "Attention")
MAX_RECON_SAMPLES = 256  # calibration inputs used per block (a seeded random subset beyond this)
BATCH = 32
# AdaRound uses 1e-3 over 10-20k iterations; the CPU budget here is 500 per block, so rounding must
# move faster. Digits W4A8 at 200 iterations (PSNR to the original's samples, 300 samples): 1e-3
# 27.5 dB, 1e-2 28.6 dB, 3e-2 27.4 dB; none 26.7 dB. 4e-5 for step sizes: Q-Diffusion.
ROUNDING_LR, STEP_SIZE_LR = 1e-2, 4e-5
REG_WEIGHT = 0.01  # AdaRound's lambda
WARMUP = 0.2  # fraction of iterations without the rounding regulariser
BETA_START, BETA_END = 20.0, 2.0  # annealed sharpness of the regulariser


def _blocks(network: nn.Module) -> list[str]:
    """Reconstruction units in forward order: block modules, then stray quantized layers."""
    names = [
        name for name, module in network.named_modules() if type(module).__name__ in BLOCK_TYPES
    ]
    outermost = [
        n for n in names if not any(n.startswith(other + ".") for other in names if other != n)
    ]
    units = [
        n
        for n in outermost
        if any(isinstance(m, QuantLayer) for m in network.get_submodule(n).modules())
    ]
    covered = tuple(unit + "." for unit in units)
    units += [
        n
        for n, m in network.named_modules()
        if isinstance(m, QuantLayer) and not n.startswith(covered)
    ]
    return units


def _to(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to(v, device) for v in value)
    return value


class _UnitReached(Exception):
    """Ends a capture's forward pass at the unit: what comes after it is not needed."""


def _stop(captured: list, value) -> None:
    captured.append(value)
    raise _UnitReached


@torch.no_grad()
def _run_hooked(network: nn.Module, handle, batches, run_batch) -> None:
    """Run every calibration batch through ``network`` up to the hooked unit, then remove the hook
    ``handle``. Stopping there halves a capture's cost on average (a pass over the whole network
    per unit was most of a reconstruction's time outside the learning)."""
    try:
        for batch in batches:
            with contextlib.suppress(_UnitReached):
                run_batch(network, batch)
    finally:
        handle.remove()


def _capture_inputs(network: nn.Module, unit: str, batches, run_batch) -> list[tuple]:
    """The (args, kwargs) that ``unit`` receives in ``network``, per calibration batch."""
    captured = []
    hook = lambda m, args, kwargs: _stop(captured, (_to(args, "cpu"), _to(kwargs, "cpu")))  # noqa: E731
    _run_hooked(
        network,
        network.get_submodule(unit).register_forward_pre_hook(hook, with_kwargs=True),
        batches,
        run_batch,
    )
    return captured


def _capture_outputs(network: nn.Module, unit: str, batches, run_batch) -> list:
    """The output of ``unit`` in ``network``, per calibration batch."""
    captured = []
    hook = lambda m, args, output: _stop(captured, _to(output, "cpu"))  # noqa: E731
    _run_hooked(
        network, network.get_submodule(unit).register_forward_hook(hook), batches, run_batch
    )
    return captured


def _output_tensor(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def _reconstruct_unit(
    block: nn.Module, captured, iters: int, device, generator: torch.Generator
) -> float:
    layers = [m for m in block.modules() if isinstance(m, QuantLayer)]
    act_quantizers = [
        q
        for m in block.modules()
        for q in (
            (m.input_quantizers or [])
            if isinstance(m, QuantLayer)
            else m.quantizers()
            if isinstance(m, QuantAttnProcessor)
            else []
        )
    ]
    for layer in layers:
        layer.start_learning_rounding()
    for quantizer in act_quantizers:
        quantizer.scale.requires_grad_(True)
    params = [{"params": [v for layer in layers for v in layer.rounding_logits], "lr": ROUNDING_LR}]
    if act_quantizers:
        params.append({"params": [q.scale for q in act_quantizers], "lr": STEP_SIZE_LR})
    optimizer = torch.optim.Adam(params)
    loss = torch.zeros(())
    for step in range(iters):
        args, kwargs, target = captured[
            int(torch.randint(len(captured), (1,), generator=generator))
        ]
        output = _output_tensor(block(*_to(args, device), **_to(kwargs, device)))
        loss = F.mse_loss(output, _output_tensor(target).to(device))
        progress = step / max(1, iters - 1)
        if progress >= WARMUP:
            beta = BETA_END + (BETA_START - BETA_END) * (1 - (progress - WARMUP) / (1 - WARMUP))
            regulariser = sum(
                (1 - (2 * layer.weight_quantizers[0].soft_rounding(v) - 1).abs().pow(beta)).sum()
                for layer in layers
                for v in layer.rounding_logits
            )
            loss = loss + REG_WEIGHT * regulariser / max(
                1, sum(v.numel() for unit in layers for v in unit.rounding_logits)
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for quantizer in act_quantizers:
                quantizer.scale.clamp_(min=1e-8)
    for layer in layers:
        layer.finish_learning_rounding()
    for quantizer in act_quantizers:
        quantizer.scale.requires_grad_(False)
    return loss.item()


def reconstruct_(
    denoiser,
    calib,
    fp_network: nn.Module,
    iters: int,
    seed: int = 0,
    progress: bool = True,
    max_blocks: int | None = None,
) -> dict:
    """Reconstruct every unit of ``denoiser`` (already quantized and calibrated) against
    ``fp_network``, or those up to its ``max_blocks``-th block (to time a reconstruction too long
    to run: ``reconstruction_estimate``); returns the units and each reconstructed one's seconds."""
    network = denoiser.module
    device = denoiser.device
    generator = torch.Generator().manual_seed(seed)
    count = min(len(calib), MAX_RECON_SAMPLES)
    chosen = torch.randperm(len(calib), generator=generator)[:count]
    batches = [
        (calib.x[i], calib.t[i], None if calib.cond is None else calib.cond[i])
        for i in chosen.split(BATCH)
    ]

    def run_batch(module, batch):
        x, t, cond = batch
        denoiser.module, saved = module, denoiser.module
        try:
            denoiser(x.to(device), t.to(device), denoiser.to_model(cond))
        finally:
            denoiser.module = saved

    # a guidance-distilled student's blocks are run alone below: at the weight its calibration
    # trajectories were sampled at (its sampler's)
    weight = denoiser.sampling.guidance
    with guidance_weight(network, weight), guidance_weight(fp_network, weight):
        units = forward_order(network, _blocks(network), lambda m: run_batch(m, batches[0]))
        timings = _reconstruct_units(
            network,
            fp_network,
            _up_to_block(network, units, max_blocks),
            (batches, run_batch),
            (iters, device, generator),
            progress,
        )
    return {"units": units, "seconds": timings}


def _is_block(network: nn.Module, unit: str) -> bool:
    return type(network.get_submodule(unit)).__name__ in BLOCK_TYPES


def _up_to_block(network: nn.Module, units: list[str], max_blocks: int | None) -> list[str]:
    """``units`` up to and including the ``max_blocks``-th block (all of them for None)."""
    if max_blocks is None:
        return units
    blocks = [i for i, unit in enumerate(units) if _is_block(network, unit)]
    return units if len(blocks) <= max_blocks else units[: blocks[max_blocks - 1] + 1]


def _reconstruct_units(network, fp_network, units, data, learning, progress) -> list[dict]:
    """Each unit in forward order: its inputs from the quantized network, its targets from the
    float one, then its rounding and activation scales learned; the seconds each part took."""
    batches, run_batch = data
    requires_grad = {name: p.requires_grad for name, p in network.named_parameters()}
    network.requires_grad_(False)
    timings = []
    try:
        bar = tqdm(units, desc="reconstruct", unit="block", disable=not progress)
        for unit in bar:
            start = time.perf_counter()
            inputs = _capture_inputs(network, unit, batches, run_batch)
            targets = _capture_outputs(fp_network, unit, batches, run_batch)
            captured = [(args, kwargs, target) for (args, kwargs), target in zip(inputs, targets)]
            captured_at = time.perf_counter()
            with torch.enable_grad():
                loss = _reconstruct_unit(network.get_submodule(unit), captured, *learning)
            timings.append(
                {
                    "unit": unit,
                    "block": _is_block(network, unit),
                    "capture_s": captured_at - start,
                    "learn_s": time.perf_counter() - captured_at,
                }
            )
            bar.set_postfix(block=unit, loss=f"{loss:.2e}")
    finally:
        for name, p in network.named_parameters():
            p.requires_grad_(requires_grad[name])
    return timings


def reconstruction_times(timed: dict) -> dict:
    """What a reconstruction took (``reconstruct_``'s timings): seconds capturing each unit's
    inputs and targets, seconds learning, and per block, both together."""
    seconds = timed["seconds"]
    blocks = [t for t in seconds if t["block"]]
    return {
        "units": len(seconds),
        "blocks": len(blocks),
        "capture_s": sum(t["capture_s"] for t in seconds),
        "learn_s": sum(t["learn_s"] for t in seconds),
        "s_per_block": sum(t["capture_s"] + t["learn_s"] for t in blocks) / max(1, len(blocks)),
    }


def reconstruction_estimate(timed: dict, timed_iters: int, iters: int) -> dict:
    """A whole reconstruction's time at ``iters`` per unit from ``reconstruct_``'s first units
    timed at ``timed_iters``: every unit's captures cost the same (two passes of the whole network
    over the calibration subset); the timed units learn as measured, each other unit at the timed
    blocks' mean time per iteration (in a UNet the first block is a highest-resolution ResNet
    block; its attention blocks there may cost more)."""
    seconds = timed["seconds"]
    blocks = [t for t in seconds if t["block"]] or seconds
    capture_s = sum(t["capture_s"] for t in seconds) / len(seconds)
    block_iteration_s = sum(t["learn_s"] for t in blocks) / len(blocks) / timed_iters
    untimed = len(timed["units"]) - len(seconds)
    learn_s = sum(t["learn_s"] for t in seconds) * iters / timed_iters
    return {
        "units": len(timed["units"]),
        "units_timed": len(seconds),
        "capture_s_per_unit": capture_s,
        "block_iteration_s": block_iteration_s,
        "iters": iters,
        "estimated_s": len(timed["units"]) * capture_s
        + learn_s
        + untimed * iters * block_iteration_s,
    }
