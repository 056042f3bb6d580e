"""What ``accel optimize`` reports beside the evaluation: the precision and modules it swapped, how
many calls ran through the Triton kernels, and whether the optimized model still computes the
original's eps."""

from __future__ import annotations

import torch

from accel.kernels._runtime import interpreted
from accel.measure.base import Measurer
from accel.optimize.apply import kernel_usage, reset_kernel_usage

PARITY_TIMESTEPS = (999, 500, 20)
# eps of the optimized model vs the original, as RMS(difference) / RMS(original). fp32 kernels only
# reorder sums (float rounding, ~1e-6); fp16 keeps 11 mantissa bits, and a UNet's ~20 chained
# convolutions and norms compound its rounding to about 1e-3; bf16 has 8 bits (8x coarser).
PARITY_TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}


class OptimizeMeasurer(Measurer):
    def before_evaluation(self, model) -> None:
        reset_kernel_usage(model.module)  # count the evaluation's calls only

    def add_sections(self, report, result, extras) -> None:
        parity = output_parity(self.original, result.model)
        usage = kernel_usage(result.model.module)
        for name, data in (
            ("dtype", result.record["dtype"]),
            ("swaps", result.record["swaps"]),
            ("kernels", usage),
        ):
            report.add_section(name, data)
        report.add_section(
            "parity",
            parity,
            f"Output check: eps within {parity['tolerance_rel_rms']:g} relative RMS of the "
            f"original's: {'met' if parity['met'] else 'MISSED'} ({parity['rel_rms']:.2e})\n",
        )
        report.notes += kernel_notes(usage, result.model.device)


@torch.inference_mode()
def output_parity(original, optimized, batch_size: int = 2) -> dict:
    """Relative RMS and max abs difference of eps on the same seeded inputs at several timesteps."""
    worst_rel, worst_abs = 0.0, 0.0
    for t in PARITY_TIMESTEPS:
        x, steps, cond = original.example_inputs(batch_size, t=t)
        expected = original(x, steps, cond).float()
        got = optimized(x.to(optimized.dtype), steps, optimized.to_model(cond)).float()
        diff = (got - expected).cpu()
        worst_rel = max(worst_rel, (diff.norm() / expected.cpu().norm().clamp_min(1e-12)).item())
        worst_abs = max(worst_abs, diff.abs().max().item())
    tolerance = PARITY_TOLERANCE[optimized.dtype]
    return {
        "timesteps": list(PARITY_TIMESTEPS),
        "batch_size": batch_size,
        "max_abs": worst_abs,
        "rel_rms": worst_rel,
        "tolerance_rel_rms": tolerance,
        "met": worst_rel <= tolerance,
    }


def kernel_notes(usage: dict, device: torch.device) -> list[str]:
    used = sum(counts["triton"] for counts in usage.values())
    if not used:
        return [
            f"the Triton kernels were not used (device {device.type}): "
            "GroupNorm and attention ran through the PyTorch reference, "
            "so this run measures the precision and layout changes only"
        ]
    if interpreted():
        return [
            "the Triton kernels ran in Triton's CPU interpreter "
            "(TRITON_INTERPRET=1): outputs are checked, latency means nothing"
        ]
    return []
