"""Quantize a model and measure it against the original: what ``accel quantize`` runs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from accel.calib.collect import CalibConfig, calibrate
from accel.evaluate import EvalConfig, Evaluation, evaluate
from accel.metrics.quality import fid_setup
from accel.models.loading import load
from accel.quant import quantize_
from accel.quant.ablation import markdown as ablation_markdown, run_ablation
from accel.quant.apply import plan_layers
from accel.quant.config import QuantConfig

SIMULATION_NOTE = ("quantized layers run as fake quantization in PyTorch (float arithmetic on the integer grid), "
                   "so this latency is not integer speed; an exported INT8 engine is where that is measured")
# (FID ratio bound, label): the quality goals of the reference recipe on digits at 2,000 samples
GOALS = {(8, 8): (1.10, "W8A8: FID within 10% of the original's"),
         (4, 8): (1.25, "W4A8: FID within 25% of the original's")}


@dataclass
class QuantizeResult:
    model: object
    evaluation: Evaluation


def goal_check(fid_ratio: float | None, config: QuantConfig) -> str | None:
    goal = GOALS.get((config.w_bits, config.a_bits))
    if goal is None or fid_ratio is None:
        return None
    bound, label = goal
    return f"{label}: {'met' if fid_ratio <= bound else 'MISSED'} (FID ratio {fid_ratio:.3f})"


def quantize_and_evaluate(source, config: QuantConfig, calib_config: CalibConfig, eval_config: EvalConfig,
                          device=None, calib_path: str | Path | None = None, ablation: bool = False,
                          sampling: dict | None = None, progress: bool = True) -> QuantizeResult:
    """``sampling``: changes to the model's own sampler, for both models and the calibration trajectories."""
    original = load(source, device, sampling)
    model = load(source, device, sampling)
    plan_layers(model, config)  # bad patterns fail here, before minutes of calibration
    calib = calibrate(original, calib_config, calib_path, progress)
    quantize_(model, config, calib, progress=progress)
    model.notes.append(SIMULATION_NOTE)
    evaluation = evaluate(model, baseline=original, config=eval_config, command="quantize",
                          model_name=str(source), transform_config=config.to_dict())
    report = evaluation.report
    report.add_section("calibration", {**calib.meta, "inputs": len(calib)})
    check = goal_check(report.delta.fid_ratio, config)
    report.add_section("quality_goal", check, f"Quality goal: {check}\n" if check else None)
    if ablation:
        fid = fid_setup(original.sample_shape, eval_config.inception_weights, eval_config.fid_ref, str(original.device))
        table = run_ablation(lambda: load(source, device, sampling), lambda c: calibrate(original, c, None, progress),
                             config, calib_config, fid, eval_config.n, eval_config.seed, eval_config.batch_size,
                             progress)
        report.add_section("ablation", table, ablation_markdown(table))
    return QuantizeResult(model, evaluation)
