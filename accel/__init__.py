"""accel: make diffusion denoisers smaller and faster, and show what it cost.

    import accel
    model = accel.load("digits")             # or a diffusers folder, an artifact, an exported .onnx
    result = accel.compress(model, "fast", out="digits-fast")  # a built-in recipe, a file or a dict
    print(result.report.to_markdown())
    student = accel.run_stage("distill", model, steps=4).model  # one stage, settings as keywords
    accel.quantize_(model, accel.W8A8, accel.calibrate(model))  # one transform, in place

Importing ``accel`` registers its capabilities (prune, distillation, cache, quant, optimize, export)
in the core's transform and stage registries; this module and the CLI are the only ones that know
all of them.
"""

import copy
from pathlib import Path

# imported in the chain's order, which is the order the stage registry lists them in
from accel.prune import FinetuneConfig, PruneConfig, prune_  # isort: skip
from accel.distillation import DistillConfig, distill  # isort: skip
from accel.cache import CacheConfig, cache_  # isort: skip
from accel.quant import W4A8, W8A8, QuantConfig, quantize_  # isort: skip
from accel.optimize import OptimizeConfig, optimize_  # isort: skip
from accel.export import ExportConfig, ExportTarget  # isort: skip
from accel.calib import CalibConfig, CalibFile, CalibrationSet, calibrate
from accel.compress import CompressResult, Recipe, compress
from accel.core import (
    AccelError,
    ConfigError,
    Denoiser,
    SamplingSpec,
    StepCall,
    StepHook,
    Trajectory,
    stages,
)
from accel.core.sampling_spec import SamplerChange
from accel.core.stages import Context, Settings, StageResult
from accel.core.version import __version__
from accel.evaluate import EvalConfig, Evaluation, evaluate
from accel.models.loading import load
from accel.sampling import Samples, sample
from accel.train import TrainConfig
from accel.train.data import DataConfig

__all__ = [
    "AccelError",
    "CacheConfig",
    "CalibConfig",
    "CalibFile",
    "CalibrationSet",
    "CompressResult",
    "ConfigError",
    "DataConfig",
    "Denoiser",
    "DistillConfig",
    "EvalConfig",
    "Evaluation",
    "ExportConfig",
    "ExportTarget",
    "FinetuneConfig",
    "OptimizeConfig",
    "PruneConfig",
    "QuantConfig",
    "Recipe",
    "SamplerChange",
    "SamplingSpec",
    "Samples",
    "Settings",
    "StageResult",
    "StepCall",
    "StepHook",
    "TrainConfig",
    "Trajectory",
    "W4A8",
    "W8A8",
    "__version__",
    "cache_",
    "calibrate",
    "compress",
    "distill",
    "evaluate",
    "load",
    "optimize_",
    "prune_",
    "quantize_",
    "run_stage",
    "sample",
    "save",
    "stage_settings",
]


def stage_settings(name: str, settings: dict | None = None, *, seed: int = 0, **keys) -> Settings:
    """Stage ``name``'s configs with ``settings`` (and ``keys``) set, checked:
    ``stage_settings("quantize", bits=8)``. Keys are the configs' fields or the command's flags
    (``bits``, ``act-bits``, ``finetune_steps``)."""
    return stages.get(name).settings(settings, seed=seed, **keys)


def run_stage(
    name: str,
    model,
    settings: dict | Settings | None = None,
    *,
    images=None,
    out=None,
    work_dir=None,
    resume: bool = False,
    device=None,
    seed: int = 0,
    progress: bool = True,
    **keys,
) -> StageResult:
    """Run stage ``name`` (prune, distill, cache, quantize, optimize, export) on a copy of ``model``
    (a loaded model, a name or a path): ``run_stage("prune", model, ratio=0.3,
    finetune_steps=300)``. ``images`` (N x C x H x W in [-1, 1]) are training data for the stages
    that train, instead of their ``data`` setting; ``out`` is the file the export stage writes;
    ``work_dir`` keeps a training stage's checkpoints (``resume`` continues from them). Returns the
    new model and what the stage did (its record in accel.json)."""
    if not isinstance(settings, Settings):
        settings = stage_settings(name, settings, seed=seed, **keys)
    target = copy.deepcopy(model) if isinstance(model, Denoiser) else load(model, device)
    context = Context(
        work_dir=None if work_dir is None else Path(work_dir),
        resume=resume,
        out=None if out is None else Path(out),
        images=images,
        progress=progress,
    )
    return stages.get(name).run(target, settings, context)


def save(
    model: Denoiser, out, overwrite: bool = False, evaluation: Evaluation | None = None
) -> None:
    """Write ``model`` as an accel artifact directory (atomically), with its report if given."""
    from accel.artifact import write_model_files
    from accel.core.files import atomic_dir
    from accel.report import write_report

    with atomic_dir(out, overwrite) as staging:
        write_model_files(model, staging)
        if evaluation is not None:
            write_report(staging, evaluation.report, evaluation.images)
