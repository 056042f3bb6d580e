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

import time

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from accel.core.guidance_input import guidance_weight
from accel.quant.capture import capture_inputs, capture_outputs, output_tensor, to_device
from accel.quant.forward_order import forward_order
from accel.quant.layers import QuantLayer, activation_quantizers

BLOCK_TYPES = ("ResnetBlock2D", "BasicTransformerBlock", "Attention")
MAX_RECON_SAMPLES = 256  # calibration inputs used per block (a seeded random subset beyond this)
BATCH = 32
# AdaRound uses 1e-3 over 10-20k iterations; the CPU budget here is 500 per block, so rounding must
# move faster. Digits W4A8 at 200 iterations (PSNR to the original's samples, 300 samples): 1e-3
# 27.5 dB, 1e-2 28.6 dB, 3e-2 27.4 dB; none 26.7 dB. 4e-5 for step sizes: Q-Diffusion.
ROUNDING_LR, STEP_SIZE_LR = 1e-2, 4e-5
# AdaRound's lambda, against Q-Diffusion's (BRECQ's) reconstruction loss: squared error summed over
# dim 1, averaged over the rest. As a mean over the unit's weights against a mean squared error (the
# regulariser about 1000x weaker on digits' blocks), 54% of W4A8's weights were still undecided
# (h(V) between 0.1 and 0.9) after 500 iterations and fixing them doubled the blocks' loss; with
# this weighting 2.5% (loss 1.10x), and digits' FID ratio 1.03 instead of 1.41 (same CPU, seed 0).
REG_WEIGHT = 0.01
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


def _reconstruct_unit(
    block: nn.Module, captured, iters: int, device, generator: torch.Generator
) -> dict:
    """Learn ``block``'s rounding and activation step sizes on ``captured`` (inputs, targets), then
    fix the rounding; returns how it ended (``_finish``)."""
    layers = [m for m in block.modules() if isinstance(m, QuantLayer)]
    act_quantizers = activation_quantizers(block)
    for layer in layers:
        layer.start_learning_rounding()
    for quantizer in act_quantizers:
        quantizer.scale.requires_grad_(True)
    params = [{"params": [v for layer in layers for v in layer.rounding_logits], "lr": ROUNDING_LR}]
    if act_quantizers:
        params.append({"params": [q.scale for q in act_quantizers], "lr": STEP_SIZE_LR})
    optimizer = torch.optim.Adam(params)
    batch = captured[0]
    for step in range(iters):
        batch = captured[int(torch.randint(len(captured), (1,), generator=generator))]
        loss = _block_loss(block, batch, device)
        progress = step / max(1, iters - 1)
        if progress >= WARMUP:
            loss = loss + REG_WEIGHT * _rounding_regulariser(layers, progress)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for quantizer in act_quantizers:
                quantizer.scale.clamp_(min=1e-8)
    for quantizer in act_quantizers:
        quantizer.scale.requires_grad_(False)
    return _finish(block, layers, batch, device)


def _block_loss(block: nn.Module, batch, device) -> torch.Tensor:
    args, kwargs, target = batch
    output = output_tensor(block(*to_device(args, device), **to_device(kwargs, device)))
    return (output - output_tensor(target).to(device)).pow(2).sum(1).mean()


def _rounding_regulariser(layers: list, progress: float) -> torch.Tensor:
    """AdaRound's f_reg = sum(1 - |2 h(V) - 1|^beta), beta annealed from BETA_START to BETA_END
    after the warm-up, summed over the unit's weights."""
    beta = BETA_END + (BETA_START - BETA_END) * (1 - (progress - WARMUP) / (1 - WARMUP))
    return sum((1 - (2 * h - 1).abs().pow(beta)).sum() for h in _soft_roundings(layers))


def _soft_roundings(layers: list) -> list[torch.Tensor]:
    """h(V) of every rounding being learned in ``layers``: 0 rounds down, 1 up."""
    return [
        layer.weight_quantizers[0].soft_rounding(v)
        for layer in layers
        for v in layer.rounding_logits
    ]


def _finish(block: nn.Module, layers: list, batch, device) -> dict:
    """Fix the rounding. Returns the last batch's loss with the learned soft rounding and with the
    fixed one, and the fraction of weights still undecided (h(V) between 0.1 and 0.9): a rounding
    that stayed soft is settled by which side of 0.5 each weight ended on, which the float order
    of the run can flip."""
    with torch.no_grad():
        soft_loss = _block_loss(block, batch, device).item()
        soft = _soft_roundings(layers)
        undecided = sum(((h > 0.1) & (h < 0.9)).sum().item() for h in soft)
        weights = sum(h.numel() for h in soft)
        for layer in layers:
            layer.finish_learning_rounding()
        hard_loss = _block_loss(block, batch, device).item()
    return {
        "loss": soft_loss,
        "hard_loss": hard_loss,
        "undecided": undecided / max(1, weights),
        "rounded_weights": weights,
    }


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
            inputs = capture_inputs(network, unit, batches, run_batch)
            targets = capture_outputs(fp_network, unit, batches, run_batch)
            captured = [(args, kwargs, target) for (args, kwargs), target in zip(inputs, targets)]
            captured_at = time.perf_counter()
            with torch.enable_grad():
                ended = _reconstruct_unit(network.get_submodule(unit), captured, *learning)
            timings.append(
                {
                    "unit": unit,
                    "block": _is_block(network, unit),
                    "capture_s": captured_at - start,
                    "learn_s": time.perf_counter() - captured_at,
                    **ended,
                }
            )
            bar.set_postfix(block=unit, loss=f"{ended['loss']:.2e}")
    finally:
        for name, p in network.named_parameters():
            p.requires_grad_(requires_grad[name])
    return timings


def reconstruction_times(timed: dict) -> dict:
    """What a reconstruction took and how it ended (``reconstruct_``'s per-unit record): seconds
    capturing each unit's inputs and targets, seconds learning, per block both together; the
    fraction of rounded weights left undecided, and the units' summed loss with the learned soft
    rounding against the fixed one."""
    seconds = timed["seconds"]
    blocks = [t for t in seconds if t["block"]]
    weights = sum(t["rounded_weights"] for t in seconds)
    return {
        "units": len(seconds),
        "blocks": len(blocks),
        "capture_s": sum(t["capture_s"] for t in seconds),
        "learn_s": sum(t["learn_s"] for t in seconds),
        "s_per_block": sum(t["capture_s"] + t["learn_s"] for t in blocks) / max(1, len(blocks)),
        "undecided": sum(t["undecided"] * t["rounded_weights"] for t in seconds) / max(1, weights),
        "soft_loss": sum(t["loss"] for t in seconds),
        "hard_loss": sum(t["hard_loss"] for t in seconds),
    }


def reconstruction_estimate(timed: dict, timed_iters: int, iters: int) -> dict:
    """A whole reconstruction's time at ``iters`` per unit from ``reconstruct_``'s first units
    timed at ``timed_iters``: every unit's captures at the timed units' mean (a lower bound: a
    capture's passes stop at its unit, so a later unit's cost more, up to two passes of the whole
    network over the calibration subset); the timed units learn as measured, each other unit at
    the timed blocks' mean time per iteration (in a UNet the first block is a highest-resolution
    ResNet block; its attention blocks there may cost more)."""
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
