"""Run one stage on a model and measure what it made against the model it started from: what
``accel quantize``, ``prune``, ``distill``, ``cache`` and ``optimize`` run before they write their
artifact."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from accel.core import stages
from accel.core.memory import check_fits
from accel.core.processes import SINGLE, current_processes
from accel.core.stages import Context, Settings, change_sampler
from accel.evaluate import EvalConfig, Evaluation, evaluate_many
from accel.measure.base import Measurer
from accel.measure.cache import CacheMeasurer
from accel.measure.distill import DistillMeasurer
from accel.measure.optimize import OptimizeMeasurer
from accel.measure.prune import PruneMeasurer
from accel.measure.quantize import QuantizeMeasurer
from accel.models.loading import load

MEASURERS: dict[str, type[Measurer]] = {
    "quantize": QuantizeMeasurer,
    "prune": PruneMeasurer,
    "distill": DistillMeasurer,
    "cache": CacheMeasurer,
    "optimize": OptimizeMeasurer,
}


@dataclass
class Measured:
    model: object  # the stage's model
    evaluation: Evaluation  # against the original, with the stage's sections
    record: dict  # what the stage did (its record in accel.json)


def measure_stage(
    name: str,
    source,
    settings: Settings,
    eval_config: EvalConfig = EvalConfig(),
    *,
    device=None,
    work_dir: Path | None = None,
    resume: bool = False,
    ablation: bool = False,
    progress: bool = True,
    prompts=None,
) -> Measured | None:
    """Run stage ``name`` with ``settings`` on the model ``source`` names, then evaluate the result
    beside the original (with the same sampler changes, so both run the sampler the stage was asked
    for).

    Under ``accelerate launch`` every process runs the stage (a training stage shares its work); the
    evaluation is shared too, except after training, where the main process measures alone. The main
    process gets the result, the others None. ``prompts``: as for ``accel.load``.
    """
    stage, processes = stages.get(name), current_processes()
    original = load(source, device, prompts=prompts)
    # the stage's own copy, and its work (a quantizer's float weights beside their codes)
    check_fits(2 * (original.weights_bytes or 0), f"{name} on {source}")
    model = load(source, device, prompts=prompts)
    if "sampling" in settings.configs:
        change_sampler(original, settings)
    measurer = MEASURERS.get(name, Measurer)(original, settings, eval_config, progress)
    context = Context(
        work_dir=work_dir,
        resume=resume,
        batch_size=eval_config.batch_size,
        progress=progress,
        observe=measurer.observe,
    )
    result = stage.run(model, settings, context)
    trained = stage.trains(settings)
    if trained and not processes.is_main:
        return None  # the other processes are done: the main one measures alone
    extras = measurer.extra_models(result.model)
    measurer.before_evaluation(result.model)
    evaluations = evaluate_many(
        [original, *extras, result.model],
        eval_config,
        command=name,
        model_name=str(source),
        transform_config=_primary(settings),
        processes=SINGLE if trained else processes,
    )
    if not processes.is_main:
        return None
    evaluation = evaluations[-1]
    measurer.add_sections(evaluation.report, result, evaluations[:-1])
    if ablation:
        made = measurer.ablation(lambda: _fresh(source, device, settings, prompts))
        if made is not None:
            evaluation.report.add_section("ablation", *made)
    return Measured(result.model, evaluation, result.record)


def _primary(settings: Settings) -> dict:
    """The stage's own config (its first role: the QuantConfig of quantize), as the report's
    ``config``."""
    return next(iter(settings.configs.values())).to_dict()


def _fresh(source, device, settings: Settings, prompts=None):
    """A new copy of the original, with the stage's sampler: what each ablation row starts from."""
    model = load(source, device, prompts=prompts)
    if "sampling" in settings.configs:
        change_sampler(model, settings)
    return model
