"""Post-training quantization of denoisers (Q-Diffusion-style): quantizers, quantized layers,
calibration use, reconstruction, packed artifacts, and the Q/DQ form exporters trace. Registered as
the ``quantize`` transform and stage (calibrate, then quantize)."""

from accel.core import registry
from accel.quant import apply, export_form, pack
from accel.quant.config import Q_DIFFUSION, W4A8, W8A8, QuantConfig
from accel.quant.stage import QUANTIZE_STAGE

QUANTIZE = registry.register(
    registry.Transform(
        name="quantize",
        config=QuantConfig,
        apply=apply.quantize,
        # the chain's order (prune -> distill -> cache -> quantize -> optimize): a quantized model
        # is not pruned, distilled or quantized again
        may_follow=("prune", "distill", "cache"),
        rebuild=apply.rebuild,
        pack_state=pack.pack_state,
        unpack_state=pack.unpack_state,
        export=registry.ExportForm(
            blocked_layers=export_form.blocked_layers, convert=export_form.convert
        ),
    )
)


def quantize_(denoiser, config: QuantConfig, calib, progress: bool = True) -> dict:
    """Quantize ``denoiser`` in place with ``config``; ``calib`` is its calibration set
    (``accel.calibrate``), None only for weight-only quantization without reconstruction. Returns
    the record kept in accel.json."""
    return registry.apply(denoiser, QUANTIZE.name, config, calib, progress)


__all__ = ["QUANTIZE_STAGE", "Q_DIFFUSION", "QuantConfig", "W4A8", "W8A8", "quantize_"]
