"""What ``accel prune`` reports beside the evaluation: the FID right after pruning and after
fine-tuning, what was cut, the fine-tuning record, and the ablation (Diff-Pruning's Table 1,
measured on this model): every criterion at the same ratio and fine-tuning budget, then the chosen
criterion at other ratios, every row sampled and timed in one run with the original (same seeds and
initial noise, batches interleaved)."""

from __future__ import annotations

import time
from dataclasses import replace

from accel.core import stages
from accel.core.processes import current_processes
from accel.core.stages import Context, Settings
from accel.evaluate import evaluate_many
from accel.measure.base import Measurer
from accel.metrics.digits_cnn import to_uint8
from accel.metrics.quality import fid_setup
from accel.metrics.size import count_macs, count_params
from accel.prune.config import CRITERIA
from accel.report import format_value, table
from accel.report.markdown import describe_sampler
from accel.sampling import sample

RATIOS = (0.2, 0.3, 0.5)
COLUMNS = {
    "name": "criterion @ ratio",
    "fid": "FID",
    "fid_ratio": "FID ratio",
    "psnr_db": "PSNR to original (dB)",
    "macs_ratio": "MACs ratio",
    "params_ratio": "params ratio",
    "speedup": "speedup (time/image)",
}


class PruneMeasurer(Measurer):
    fid_pruned: float | None = None

    def observe(self, point: str, model) -> None:
        # before fine-tuning: what the fine-tuning recovers (measured by the process that reports)
        if point == "pruned" and current_processes().is_main:
            config = self.eval_config
            fid = fid_setup(
                model.sample_shape, config.inception_weights, config.fid_ref, str(model.device)
            )
            samples = sample(
                model, config.n, config.seed, batch_size=config.batch_size, progress=self.progress
            )
            self.fid_pruned = fid.scores(to_uint8(samples.images))["fid"]

    def add_sections(self, report, result, extras) -> None:
        record, finetune = result.record, result.record.get("finetune")
        section = {
            "params": [report.original.params, report.compressed.params],
            "macs": [report.original.macs, report.compressed.macs],
            "layers_changed": len(record["widths"]),
            "importance": record["importance"],
            "fid_before_finetune": self.fid_pruned,
            "fid_after_finetune": report.compressed.fid if finetune else None,
            "finetune": finetune,
        }
        report.add_section("pruning", section, markdown(section))

    def ablation(self, load_original) -> tuple[dict, str]:
        data = run_ablation(load_original, self.settings, self.eval_config, self.progress)
        return data, ablation_markdown(data)


def markdown(section: dict) -> str:
    importance, finetune = section["importance"], section["finetune"]
    gradients = (
        f", gradients over {importance['timesteps']} of {importance['grid']} timesteps (last t = "
        f"{importance['last_t']}, {importance['images']} images)"
        if "timesteps" in importance
        else ""
    )
    lines = [
        "## Pruning",
        "",
        f"- criterion {importance['criterion']}{gradients}",
        f"- {section['layers_changed']} layers changed width",
        f"- FID right after pruning: {format_value(section['fid_before_finetune'])}; "
        "after fine-tuning: "
        f"{format_value(section['fid_after_finetune']) if finetune else 'not fine-tuned'}",
    ]
    if finetune:
        lines.append(
            f"- fine-tuned {finetune['config']['steps']} steps on {finetune['data']} in "
            f"{finetune['seconds']:.0f} s ({finetune['processes']} process(es)); loss per tenth "
            f"{finetune['loss_per_tenth']}"
        )
    return "\n".join(lines) + "\n"


def ablation_settings(settings: Settings) -> list[tuple[str, Settings]]:
    """Every criterion at the chosen ratio, then the chosen criterion at the other ratios, same
    fine-tuning."""
    chosen = settings["prune"]
    rows = [
        (f"{criterion} @ {chosen.ratio:g}", replace(chosen, criterion=criterion))
        for criterion in CRITERIA
    ]
    rows += [
        (f"{chosen.criterion} @ {ratio:g}", replace(chosen, ratio=ratio))
        for ratio in RATIOS
        if ratio != chosen.ratio
    ]
    return [
        (name, Settings("prune", {**settings.configs, "prune": config})) for name, config in rows
    ]


def run_ablation(load_original, settings: Settings, eval_config, progress: bool = True) -> dict:
    """``load_original()`` gives a fresh copy of the model being pruned; every row is pruned and
    fine-tuned from one (in a temporary folder), then all are sampled with the original in one
    run."""
    stage, rows = stages.get("prune"), []
    for name, row_settings in ablation_settings(settings):
        start = time.perf_counter()
        result = stage.run(
            load_original(),
            row_settings,
            Context(batch_size=eval_config.batch_size, progress=progress),
        )
        rows.append(
            {
                "name": name,
                "model": result.model,
                "config": row_settings["prune"].to_dict(),
                "importance_timesteps": result.record["importance"].get("timesteps"),
                "wall_s": time.perf_counter() - start,
            }
        )
    original = load_original()
    evaluations = evaluate_many(
        [original, *(row.pop("model") for row in rows)], eval_config, command="ablation"
    )
    for row, evaluation in zip(rows, evaluations):
        report = evaluation.report
        row.update(
            fid=report.compressed.fid,
            fid_ratio=report.delta.fid_ratio,
            psnr_db=report.delta.psnr_db_vs_original,
            speedup=report.delta.speedup,
            macs_ratio=report.compressed.macs / count_macs(original),
            params_ratio=report.compressed.params / count_params(original),
        )
    tuning = settings["finetune"]
    return {
        "samples": eval_config.n,
        "sampler": original.sampling.to_dict(),
        "seed": eval_config.seed,
        "original_fid": evaluations[0].report.original.fid,
        "batch_size": eval_config.batch_size,
        "finetune_steps": tuning.steps,
        "train": settings["train"].to_dict(),
        "data": settings["data"].to_dict(),
        "distill_weight": tuning.distill_weight,
        "rows": rows,
    }


def ablation_markdown(ablation: dict) -> str:
    return (
        f"## Pruning ablation ({ablation['samples']} samples, "
        f"{describe_sampler(ablation['sampler'])}, seed {ablation['seed']}; "
        f"original FID {format_value(ablation['original_fid'])}; each row "
        f"fine-tuned {ablation['finetune_steps']} steps; speedup: wall time per "
        "image against the original, sampled in one run at batch "
        f"{ablation['batch_size']})\n\n" + table(COLUMNS, ablation["rows"]) + "\n"
    )
