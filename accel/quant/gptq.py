"""GPTQ weight rounding (Frantar et al. 2023, OPTQ): each layer's weights are rounded one input
column at a time, and the error each column's rounding adds to the layer's output on the
calibration set is pushed onto the columns not yet rounded.

For a layer with inputs X (columns of the unfolded input: channels x kernel positions) the output
error of a weight change is (W - Q) H (W - Q)^T with H = X X^T. Rounding column i to q_i leaves the
error e = (w_i - q_i) / [H^-1]_ii, which the remaining columns absorb as w_j -= e [H^-1]_ij (the
optimal brain surgeon update); with the upper Cholesky factor of H^-1 this is one pass over the
columns. Columns go in decreasing order of H's diagonal ("act order": the inputs with the most
energy first, while the others can still compensate). The step sizes stay the ones the quantizer
fitted (MSE per output channel), so the codes, the export and the artifact are as with rounding to
nearest; only which way each weight rounds changes, and the result is on the quantizer's grid.

Layers are rounded in forward order, each from the inputs the network gives it with every earlier
layer already rounded (as Q-Diffusion feeds its reconstruction), one calibration pass per layer
that stops at the layer (capture.py). H is accumulated and inverted in float64.

Measured on ``digits`` W4A8 (2,000 samples, DDIM 50, 2-core AMD EPYC, bias correction after;
``python -m bench.spread``): FID ratio 1.16 at seed 0 and 1.33 at seed 1, PSNR to the original's
samples 30.9 and 31.4 dB, identical with 1 and 2 torch threads, in 80 s (1 thread) or 45-50 s (2),
calibration included (on a 2-core Intel Xeon: 1.13 and 1.19, another model: the column-by-column
rounding carries a flip on, and a 1-bit change to half the calibration inputs changes 17% of the
codes, the per-step error 3%); AdaRound block reconstruction (500 iterations per block) gave
1.03-1.37 at seed 0 (30.6-31.7 dB; three runs, 1 and 2 threads) and 1.38 / 31.8 dB at seed 1, in
8.4-9.2 minutes with 1 thread. Rounding to nearest: PSNR 26.5 dB (300 samples). Choices measured at
300 samples (seed 0; an estimate only, PSNR at 300 samples differed from 2,000's by up to 3 dB): act
order +1.7 dB, forward order with rounded inputs +0.3 dB.
On ``digits-dit`` (1,000 samples, guidance 1.5, seed 0) AdaRound stays closer: FID ratio 1.63 at
37.6 dB against GPTQ's 2.01 at 36.7 dB, per-step relative eps error 0.0124 against 0.0138; the
reconstruction started from GPTQ's compensated weights (``compensated``, rounding "gptq-adaround")
is closest, 1.62 at 38.15 dB (0.0117 per step) with 500 iterations per block.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from accel.quant.capture import end_forward, run_until_unit
from accel.quant.forward_order import forward_order
from accel.quant.layers import QuantLayer

DAMPING = 0.01  # of H's mean diagonal, added to it before inverting (GPTQ's default)
BLOCK = 128  # columns rounded together before their error reaches the rest (GPTQ's lazy batches)
# unfolded input values at once (float64: 256 MiB), samples split to fit: a whole calibration
# batch of a 3x3 convolution with 1280 channels at 64x64 would be 12 GB unfolded
CHUNK_ELEMENTS = 1 << 25


def roundable(layer: QuantLayer) -> bool:
    """Layers GPTQ rounds: those below 8-bit weights (at 8 bits rounding to nearest leaves little,
    and the layers kept at 8 bits by default read the timestep embedding, which a calibration set
    holds at a few timesteps only: fitted to those, their rounding is worse at the others), but no
    grouped convolution, whose weight columns are not the columns of one unfolded input."""
    grouped = layer.is_conv and layer.conv_args["groups"] != 1
    return layer.w_bits < 8 and not grouped


@torch.no_grad()
def gptq_round_(
    denoiser, calib, batch_size: int = 64, progress: bool = True, compensated: bool = False
) -> dict:
    """Round the weights of every quantized layer of ``denoiser`` (activation ranges already fitted)
    by GPTQ, in forward order; returns what the report states: layers, seconds, and the output
    error GPTQ's rounding leaves on the calibration inputs over rounding to nearest's.
    ``compensated`` leaves each layer the weights GPTQ rounded, not yet rounded (their rounding to
    nearest, which the layer's forward applies, is GPTQ's): a reconstruction learns the rounding
    from there (``rounding="gptq-adaround"``)."""
    network = denoiser.module
    layers = {
        name: module
        for name, module in network.named_modules()
        if isinstance(module, QuantLayer) and roundable(module)
    }
    order = forward_order(network, list(layers), lambda _: denoiser(*denoiser.example_inputs(1)))
    batches = list(calib.batches(batch_size))
    start, ratios = time.perf_counter(), []
    for name in tqdm(order, desc="GPTQ rounding", unit="layer", disable=not progress):
        layer = layers[name]
        hessian = input_hessian(denoiser, layer, batches)
        ratios.append(round_layer_(layer, hessian, compensated))
    ratios.sort()
    return {
        "layers": len(order),
        "seconds": time.perf_counter() - start,
        "error_vs_nearest_median": ratios[len(ratios) // 2] if ratios else None,
        "error_vs_nearest_max": ratios[-1] if ratios else None,
    }


def input_hessian(denoiser, layer: QuantLayer, batches) -> torch.Tensor:
    """H = sum of x x^T over the calibration inputs ``layer`` sees (quantized as it quantizes
    them), x a column of its unfolded input; float64, so that the float order of another CPU or
    thread count barely moves the rounding."""
    total = [None]

    def hook(module, args, output):
        x = args[0]
        channels = x.shape[1] if module.is_conv else x.shape[-1]
        unfolded_per_sample = module.weight[0].numel() * x[0].numel() // channels
        for piece in x.split(max(1, CHUNK_ELEMENTS // unfolded_per_sample)):
            columns = layer_columns(module, piece).double()
            part = columns @ columns.T
            total[0] = part if total[0] is None else total[0] + part
        end_forward()

    def run_batch(network, batch):
        x, t, cond = batch
        x, t = x.to(denoiser.device, denoiser.dtype), t.to(denoiser.device)
        denoiser(x, t, denoiser.to_model(cond))

    run_until_unit(denoiser.module, layer.register_forward_hook(hook), batches, run_batch)
    return total[0]


def layer_columns(layer: QuantLayer, x: torch.Tensor) -> torch.Tensor:
    """The inputs the layer's weight multiplies, as (weight columns, tokens): smoothed and quantized
    as the layer does, unfolded for a convolution."""
    x = layer.quantized_input(layer.smoothed_input(x))
    if not layer.is_conv:
        return x.reshape(-1, x.shape[-1]).T
    args = layer.conv_args
    unfolded = F.unfold(
        x,
        layer.weight.shape[2:],
        dilation=args["dilation"],
        padding=args["padding"],
        stride=args["stride"],
    )
    return unfolded.transpose(0, 1).reshape(unfolded.shape[1], -1)


def round_layer_(layer: QuantLayer, hessian: torch.Tensor, compensated: bool = False) -> float:
    """Set the layer's weight to its GPTQ rounding from ``hessian`` (or to the compensated weights
    that rounding came from); returns the output error ((W - Q) H (W - Q)^T, summed) of that
    rounding over rounding to nearest's."""
    weight = layer.weight.detach().reshape(layer.weight.shape[0], -1).double()
    scale, zero = _column_grids(layer)
    q_min, q_max = layer.weight_quantizers[0].q_min, layer.weight_quantizers[0].q_max

    def on_grid(values, columns):
        s, z = scale[:, columns], zero[:, columns]
        return (torch.clamp(torch.round(values / s) + z, q_min, q_max) - z) * s

    rounded, before_rounding = gptq(weight, hessian, on_grid)
    nearest = on_grid(weight, slice(None))
    kept = before_rounding if compensated else rounded
    layer.weight.data = kept.reshape(layer.weight.shape).to(layer.weight.dtype)
    error = _output_error(weight - rounded, hessian)
    return float(error / _output_error(weight - nearest, hessian).clamp(min=1e-30))


def _column_grids(layer: QuantLayer) -> tuple[torch.Tensor, torch.Tensor]:
    """Each weight's step size and zero point, shaped as the (rows, columns) weight matrix."""
    scales, zeros = [], []
    for quantizer, part in zip(layer.weight_quantizers, layer.weight_parts(layer.weight)):
        scales.append(quantizer._shaped(quantizer.scale, part).expand_as(part))
        zeros.append(quantizer._shaped(quantizer.zero_point, part).expand_as(part))
    rows = layer.weight.shape[0]
    return tuple(torch.cat(t, dim=1).reshape(rows, -1).double() for t in (scales, zeros))


def _output_error(delta: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    return ((delta @ hessian) * delta).sum()


def gptq(weight: torch.Tensor, hessian: torch.Tensor, on_grid) -> tuple[torch.Tensor, torch.Tensor]:
    """GPTQ's rounding of ``weight`` (rows, columns) for inputs with second moment ``hessian``, and
    the compensated weights it rounded (each column as it stood when its turn came);
    ``on_grid(values, columns)`` rounds the given columns to nearest on their grid."""
    columns = weight.shape[1]
    hessian = hessian.clone()
    dead = torch.diag(hessian) == 0  # inputs never seen: nothing to compensate, round to nearest
    hessian[dead, dead] = 1.0
    hessian += DAMPING * torch.diag(hessian).mean() * torch.eye(columns, dtype=hessian.dtype)
    order = torch.argsort(torch.diag(hessian), descending=True, stable=True)
    hessian = hessian[order][:, order]
    inverse = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hessian)))
    inverse = inverse.T  # upper factor U of H^-1 = U^T U
    weight = weight[:, order].clone()
    rounded, before_rounding = torch.empty_like(weight), torch.empty_like(weight)
    for first in range(0, columns, BLOCK):
        last = min(first + BLOCK, columns)
        errors = torch.empty_like(weight[:, first:last])
        for i in range(first, last):
            before_rounding[:, i] = weight[:, i]
            rounded[:, i] = on_grid(weight[:, i : i + 1], order[i : i + 1])[:, 0]
            error = (weight[:, i] - rounded[:, i]) / inverse[i, i]
            weight[:, i:last] -= error[:, None] * inverse[i, i:last][None, :]
            errors[:, i - first] = error
        weight[:, last:] -= errors @ inverse[first:last, last:]
    back = torch.argsort(order)
    return rounded[:, back], before_rounding[:, back]
