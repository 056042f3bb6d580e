"""Prune a model, fine-tune it, and measure it against the original: what ``accel prune`` runs.

Fine-tuning happens in ``<out>.partial`` (checkpoints every N steps; ``resume`` continues an interrupted run of
the same settings). Under ``accelerate launch`` every process prunes identically and trains its share; the main
process measures and returns the result, the others return None.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from accel.core import registry
from accel.core.errors import AccelError
from accel.core.processes import SINGLE
from accel.evaluate import EvalConfig, Evaluation, evaluate
from accel.metrics.digits_cnn import to_uint8
from accel.metrics.latency import step_latency_ms
from accel.metrics.quality import fid_setup
from accel.models.loading import load
from accel.prune import PRUNE, prune_
from accel.prune.ablation import markdown as ablation_markdown, run_ablation
from accel.prune.config import DISTILL_WEIGHT, PruneConfig
from accel.prune.finetune import finetune
from accel.sampling import sample
from accel.train import TrainConfig, checkpoint_state, loss_curve, work_dir_for
from accel.train.data import TEACHER, training_images
from accel.train.loop import check_same_run

GOALS = {"macs": (0.60, "at least 40% fewer MACs"), "fid_ratio": (1.25, "FID within 25% of the original's"),
         "speedup": (1.3, "at least 1.3x faster per step at the sampling batch")}


@dataclass
class PruneResult:
    model: object
    evaluation: Evaluation


def prepare_work_dir(work_dir: Path, resume: bool, run: dict) -> None:
    """Refuse a leftover checkpoint unless resuming, and a checkpoint of another run even then."""
    state = checkpoint_state(work_dir)
    if state is not None and not resume:
        raise AccelError(f"{work_dir} holds the checkpoint of an interrupted run: pass --resume to continue it, or "
                         "remove it to start over")
    if state is not None:
        check_same_run(state, run, work_dir)


def sample_fid(model, fid, n: int, seed: int, batch_size: int, progress: bool) -> float | None:
    return fid.scores(to_uint8(sample(model, n, seed, batch_size=batch_size, progress=progress).images))["fid"]


def goal_checks(report, sampling_batch_ratio: float | None) -> list[str]:
    """The issue's goals for the reference recipe, each met or MISSED with the number measured."""
    o, c, d = report.original, report.compressed, report.delta
    measured = {"macs": c.macs / o.macs if o.macs else None, "fid_ratio": d.fid_ratio, "speedup": sampling_batch_ratio}
    lines = []
    for key, (bound, label) in GOALS.items():
        value = measured[key]
        if value is None:
            continue
        met = value >= bound if key == "speedup" else value <= bound
        lines.append(f"{label}: {'met' if met else 'MISSED'} ({key.replace('_', ' ')} {value:.3f})")
    return lines


def prune_and_evaluate(source, config: PruneConfig, train_config: TrainConfig | None, eval_config: EvalConfig, out,
                       device=None, data: str | None = None, resume: bool = False, sampling: dict | None = None,
                       teacher_samples: int = 1000, distill_weight: float = DISTILL_WEIGHT, ablation: bool = False,
                       progress: bool = True) -> PruneResult | None:
    if distill_weight < 0:
        raise AccelError(f"--distill-weight must be 0 or more, got {distill_weight}")
    original = load(source, device, sampling)
    registry.check_can_follow(original.transforms, PRUNE.name)  # quantized/optimized input: refuse before work
    images = training_images(data, original, teacher_samples=teacher_samples, seed=eval_config.seed,
                             batch_size=eval_config.batch_size, progress=progress)
    run = {"model": str(source), "prune": config.to_dict(), "train": train_config and train_config.to_dict(),
           "data": images.identity, "distill_weight": distill_weight}
    work_dir = work_dir_for(out)
    prepare_work_dir(work_dir, resume, run)
    model = load(source, device, sampling)
    record = prune_(model, config, images.images)
    fid = fid_setup(original.sample_shape, eval_config.inception_weights, eval_config.fid_ref, str(original.device))
    fid_pruned = sample_fid(model, fid, eval_config.n, eval_config.seed, eval_config.batch_size, progress)
    trained = (finetune(model, original, images, train_config, work_dir, run, distill_weight, progress)
               if train_config else None)
    if trained is not None and not trained.is_main:
        return None
    if trained is not None:
        record["finetune"] = {"config": train_config.to_dict(), "data": images.describe(),
                              "distill_weight": distill_weight if images.source != TEACHER else None,
                              "loss_per_tenth": loss_curve(trained.losses), "seconds": round(trained.elapsed_s, 1),
                              "processes": trained.processes, "resumed_at_step": trained.resumed_at}
    evaluation = evaluate(model, baseline=original, config=eval_config, command="prune", model_name=str(source),
                          transform_config=config.to_dict(), processes=SINGLE)  # the other processes are done
    _add_sections(evaluation.report, model, original, record, eval_config, fid_pruned)
    if ablation:
        table = run_ablation(lambda: load(source, device, sampling), images, config, train_config, fid,
                             eval_config.n, eval_config.seed, eval_config.batch_size, distill_weight, progress)
        evaluation.report.add_section("ablation", table, ablation_markdown(table))
    shutil.rmtree(work_dir, ignore_errors=True)  # the artifact is written next; the checkpoint is no longer needed
    return PruneResult(model, evaluation)


def _add_sections(report, model, original, record, eval_config, fid_pruned) -> None:
    batch = eval_config.batch_size
    original_ms, pruned_ms = step_latency_ms([original, model], batch, warmup=2,
                                            repeats=max(3, eval_config.latency_repeats // 3))
    ratio = original_ms / pruned_ms
    after_ft = report.compressed.fid
    finetune = record.get("finetune")
    report.add_section("pruning", {
        "params": [report.original.params, report.compressed.params],
        "macs": [report.original.macs, report.compressed.macs],
        "layers_changed": len(record["widths"]), "importance": record["importance"],
        "fid_before_finetune": fid_pruned, "fid_after_finetune": after_ft if finetune else None,
        "finetune": finetune,
        "latency_at_sampling_batch": {"batch_size": batch, "original_ms": original_ms, "pruned_ms": pruned_ms,
                                      "speedup": ratio}}, _markdown(record, fid_pruned, after_ft, batch,
                                                                    original_ms, pruned_ms, report))
    checks = goal_checks(report, ratio)
    report.add_section("goals", checks, "".join(f"Goal: {line}\n" for line in checks) if checks else None)


def _markdown(record, fid_pruned, after_ft, batch, original_ms, pruned_ms, report) -> str:
    finetune = record.get("finetune")
    importance = record["importance"]
    lines = ["## Pruning", "",
             f"- criterion {importance['criterion']}"
             + (f", gradients over {importance['timesteps']} of {importance['grid']} timesteps (last t = "
                f"{importance['last_t']}, {importance['images']} images)" if "timesteps" in importance else ""),
             f"- {len(record['widths'])} layers changed width",
             f"- FID right after pruning: {_fmt(fid_pruned)}; after fine-tuning: "
             f"{_fmt(after_ft) if finetune else 'not fine-tuned'}"]
    if finetune:
        lines.append(f"- fine-tuned {finetune['config']['steps']} steps on {finetune['data']} in "
                     f"{finetune['seconds']:.0f} s ({finetune['processes']} process(es)); loss per tenth "
                     f"{finetune['loss_per_tenth']}")
    lines.append(f"- step latency at the sampling batch ({batch}): original {original_ms:.1f} ms, pruned "
                 f"{pruned_ms:.1f} ms, {original_ms / pruned_ms:.2f}x")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"
