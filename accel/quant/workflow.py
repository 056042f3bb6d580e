"""Quantize a model and measure it against the original: what ``accel quantize`` runs."""
from __future__ import annotations

from dataclasses import dataclass, field

from accel.calib.collect import load_or_collect
from accel.evaluate import EvalConfig, Evaluation, evaluate
from accel.models.loading import load
from accel.quant.apply import plan_layers, quantize_
from accel.quant.config import QuantConfig

SIMULATION_NOTE = ("quantized layers run as fake quantization in PyTorch (float arithmetic on the integer grid), "
                   "so this latency is not integer speed; an exported INT8 engine is where that is measured")
# (FID ratio bound, label): the quality goals of the reference recipe (issue 3)
GOALS = {(8, 8): (1.10, "W8A8: FID within 10% of the original's"),
         (4, 8): (1.25, "W4A8: FID within 25% of the original's")}


@dataclass
class QuantizeResult:
    model: object
    evaluation: Evaluation
    sections: list[str] = field(default_factory=list)  # extra markdown for report.md


def calibration_for(model, config: QuantConfig, path=None, progress: bool = True):
    return load_or_collect(model, config.calib_policy, config.calib_samples, config.calib_steps, config.calib_every,
                           config.seed, path=path, progress=progress)


def goal_check(report: dict, config: QuantConfig) -> str | None:
    goal = GOALS.get((config.w_bits, config.a_bits))
    ratio = (report.get("delta") or {}).get("fid_ratio")
    if goal is None or ratio is None:
        return None
    bound, label = goal
    return f"{label}: {'met' if ratio <= bound else 'MISSED'} (FID ratio {ratio:.3f})"


def quantize_and_evaluate(source, config: QuantConfig, eval_config: EvalConfig, device=None, calib_path=None,
                          ablation: bool = False, progress: bool = True) -> QuantizeResult:
    from accel.metrics.quality import fid_setup
    from accel.quant.ablation import markdown as ablation_markdown, run_ablation

    original = load(source, device)
    model = load(source, device)
    plan_layers(model, config)  # bad patterns fail here, before minutes of calibration
    calib = calibration_for(original, config, calib_path, progress)
    quantize_(model, config, calib, progress=progress)
    model.notes.append(SIMULATION_NOTE)
    evaluation = evaluate(model, baseline=original, config=eval_config, command="quantize",
                          model_name=str(source), transform_config=config.to_dict())
    evaluation.report["calibration"] = {**calib.meta, "inputs": len(calib)}
    check = goal_check(evaluation.report, config)
    evaluation.report["quality_goal"] = check
    sections = [f"Quality goal: {check}\n"] if check else []
    if ablation:
        fid = fid_setup(original.sample_shape, eval_config.inception_weights, eval_config.fid_ref, str(original.device))
        table = run_ablation(lambda: load(source, device), lambda c: calibration_for(original, c, None, progress),
                             config, fid, eval_config.n, eval_config.sampler, eval_config.seed, progress)
        evaluation.report["ablation"] = table
        sections.append(ablation_markdown(table))
    return QuantizeResult(model, evaluation, sections)
