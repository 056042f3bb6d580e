"""What ``accel quantize`` reports beside the evaluation: the calibration set used, and the ablation
(Q-Diffusion's story, measured on this model): W4A8 from the naive recipe to the full one, one
ingredient at a time, plus W8A8. Every ablation row samples the same seeds and initial noise as the
original, in one run with it."""

from __future__ import annotations

from dataclasses import replace

from accel.calib.collect import CalibConfig, CalibFile
from accel.core import stages
from accel.core.sampling_spec import SamplerChange
from accel.core.stages import Context, Settings
from accel.evaluate import EvalConfig, evaluate_many
from accel.measure.base import Measurer
from accel.quant.config import RECONSTRUCTING, BitBudget
from accel.report import format_value, table
from accel.report.markdown import describe_sampler

NAIVE = dict(
    w_range="minmax",
    a_range="minmax",
    split_shortcut=False,
    rounding="nearest",
    recon_iters=0,
    bias_correction=False,
)
COLUMNS = {
    "name": "recipe",
    "fid": "FID",
    "fid_ratio": "FID ratio",
    "psnr_db": "PSNR to original (dB)",
}


class QuantizeMeasurer(Measurer):
    def add_sections(self, report, result, extras) -> None:
        report.add_section("calibration", result.record["calibration"])
        if "gptq" in result.record:
            rounded = result.record["gptq"]
            report.add_section("gptq", rounded, _gptq_markdown(rounded))
        if "reconstruction" in result.record:
            times = result.record["reconstruction"]
            report.add_section("reconstruction", times, _reconstruction_markdown(times))
        if "bit_budget" in result.record:
            budget = result.record["bit_budget"]
            report.add_section("bit_budget", budget, _budget_markdown(budget))

    def ablation(self, load_original) -> tuple[dict, str]:
        data = run_ablation(
            load_original,
            self.settings["quant"],
            self.settings["calib"],
            self.eval_config,
            self.progress,
        )
        return data, markdown(data)


def _reconstruction_markdown(times: dict) -> str:
    return (
        f"## Reconstruction\n\n{times['units']} units ({times['blocks']} blocks): "
        f"{times['capture_s']:.0f} s capturing their inputs and targets, {times['learn_s']:.0f} s "
        f"learning; {times['s_per_block']:.1f} s per block. Rounding left undecided (h(V) between "
        f"0.1 and 0.9) when fixed: {times['undecided']:.1%} of the weights; the units' summed loss "
        f"{times['soft_loss']:.3g} with the learned soft rounding, {times['hard_loss']:.3g} "
        "with the fixed one\n"
    )


def _gptq_markdown(rounded: dict) -> str:
    return (
        f"## GPTQ rounding\n\n{rounded['layers']} layers in {rounded['seconds']:.0f} s. The "
        "output error each layer's rounding leaves on its calibration inputs, over rounding to "
        f"nearest's: median {rounded['error_vs_nearest_median']:.2f}, largest "
        f"{rounded['error_vs_nearest_max']:.2f}\n"
    )


def _budget_markdown(budget: dict) -> str:
    wanted = budget["budget"]
    goal = (
        f"FID ratio at most {wanted['max_fid_ratio']:g} (measured, {wanted['fid_samples']} "
        "samples per candidate)"
        if wanted["max_fid_ratio"] is not None
        else f"weights within {wanted['target_size']:g} MB (predicted)"
    )
    chosen = budget["chosen"]
    widths = ", ".join(f"{n} at {b} bits" for b, n in chosen["layers_at_bits"].items())
    text = (
        f"## Bit budget\n\n{goal}. Chosen for the {budget['layers']} free layers: {widths}; "
        f"predicted {chosen['predicted_mb']:.3f} MB, relative eps error "
        f"{chosen['predicted_error']:.3g} (all at 8 bits: {budget['base_error']:.3g}). Each "
        "layer's width is in the artifact's `layer_bits`.\n"
    )
    if budget["measured"]:
        rows = [
            {
                "mb": m["predicted_mb"],
                "widths": ", ".join(f"{n}x{b}" for b, n in m["layers_at_bits"].items()),
                "error": m["predicted_error"],
                "fid_ratio": m["fid_ratio"],
            }
            for m in budget["measured"]
        ]
        columns = {
            "mb": "MB (predicted)",
            "widths": "layers x bits",
            "error": "predicted eps error",
            "fid_ratio": "FID ratio",
        }
        text += "\nCandidates measured:\n\n" + table(columns, rows) + "\n"
    return text


def ablation_configs(full, calib: CalibConfig) -> list[tuple[str, object, CalibConfig]]:
    """(row name, QuantConfig, CalibConfig) from naive W4A8 to ``full``'s recipe at 4 bits, then
    W8A8 with that recipe (reconstructing as ``full`` says, by bits where it does not)."""
    w4a8 = replace(full, w_bits=4, a_bits=8).by_bits()
    naive = replace(w4a8, **NAIVE)
    last_step, timestep_aware = (
        replace(calib, policy="last"),
        calib if calib.policy != "last" else CalibConfig(),
    )
    mse = replace(naive, w_range=full.w_range, a_range=full.a_range)
    split = replace(mse, split_shortcut=True)
    rows = [
        ("W4A8 naive (min/max, last-step calibration)", naive, last_step),
        ("+ timestep-aware calibration", naive, timestep_aware),
        ("+ MSE-searched ranges", mse, timestep_aware),
        ("+ split shortcut", split, timestep_aware),
    ]
    if full.bias_correction:
        rows.append(("+ bias correction", replace(split, bias_correction=True), timestep_aware))
    corrected = replace(split, bias_correction=full.bias_correction)
    rows += _rounding_rows(w4a8, corrected, timestep_aware)
    w8a8 = replace(
        split,
        w_bits=8,
        rounding=full.rounding,
        recon_iters=full.recon_iters,
        bias_correction=full.bias_correction,
    ).by_bits()
    rows.append((f"W8A8 (same recipe, {_reconstruction(w8a8)})", w8a8, timestep_aware))
    return rows


def _rounding_rows(w4a8, before, calib: CalibConfig) -> list[tuple[str, object, CalibConfig]]:
    """The row of ``w4a8``'s rounding, where it is not to nearest, on top of ``before``."""
    if w4a8.weight_rounding == "gptq":
        return [("+ GPTQ rounding", replace(before, rounding="gptq"), calib)]
    if w4a8.weight_rounding in RECONSTRUCTING:
        iters = w4a8.reconstruction_iters
        reconstructed = replace(before, rounding=w4a8.weight_rounding, recon_iters=iters)
        start = " from GPTQ" if w4a8.weight_rounding == "gptq-adaround" else ""
        return [(f"+ reconstruction{start} ({iters} iters/block)", reconstructed, calib)]
    return []


def _reconstruction(config) -> str:
    if config.weight_rounding == "gptq":
        return "GPTQ rounding"
    iters = config.reconstruction_iters
    if config.weight_rounding == "gptq-adaround":
        return f"reconstruction from GPTQ ({iters} iters/block)"
    return f"{iters} reconstruction iters/block" if iters else "calibration only"


def run_ablation(
    load_original, full, calib: CalibConfig, eval_config: EvalConfig, progress: bool = True
) -> dict:
    """``load_original()`` gives a fresh full-precision model; every row is quantized from one and
    all are sampled with the original in one run."""
    stage = stages.get("quantize")
    rows, models = ablation_configs(full, calib), []
    for _, config, calib_config in rows:
        settings = Settings(
            "quantize",
            {
                "quant": config,
                "calib": calib_config,
                "calib_file": CalibFile(),
                "budget": BitBudget(),
                "sampling": SamplerChange(),
            },
        )
        models.append(stage.run(load_original(), settings, Context(progress=progress)).model)
    original = load_original()
    evaluations = evaluate_many([original, *models], eval_config, command="ablation")
    measured = [
        {
            "name": name,
            "config": config.to_dict(),
            "calibration": calib_config.to_dict(),
            "fid": e.report.compressed.fid,
            "fid_ratio": e.report.delta.fid_ratio,
            "psnr_db": e.report.delta.psnr_db_vs_original,
            "class_accuracy": e.report.compressed.class_accuracy,
            "size_bytes": e.report.compressed.size_bytes,
        }
        for (name, config, calib_config), e in zip(rows, evaluations)
    ]
    return {
        "samples": eval_config.n,
        "sampler": original.sampling.to_dict(),
        "seed": eval_config.seed,
        "original_fid": evaluations[0].report.original.fid,
        "rows": measured,
    }


def markdown(ablation: dict) -> str:
    return (
        f"## Ablation ({ablation['samples']} samples, {describe_sampler(ablation['sampler'])}, "
        f"seed {ablation['seed']}; original FID {format_value(ablation['original_fid'])})\n\n"
        + table(COLUMNS, ablation["rows"])
        + "\n"
    )
