"""accel: make diffusion denoisers smaller and faster, and show what it cost.

    import accel
    model = accel.load("digits")                      # or a diffusers folder, an artifact, an exported .onnx
    result = accel.evaluate(model, config=accel.EvalConfig(n=500))
    print(result.report.original.fid)

Importing ``accel`` registers its capabilities (quant, prune, distillation, cache, optimize, export) in the core's transform registry;
this module and the CLI are the only ones that know all of them.
"""
from accel.cache import CacheConfig, cache_
from accel.calib import CalibConfig, CalibrationSet, calibrate
from accel.core import AccelError, ConfigError, Denoiser, SamplingSpec, StepCall, StepHook, Trajectory
from accel.core.version import __version__
from accel.distillation import DistillConfig, distill
from accel.evaluate import EvalConfig, Evaluation, evaluate
from accel.export import ExportConfig
from accel.models.loading import load
from accel.optimize import OptimizeConfig, optimize_
from accel.prune import PruneConfig, prune_
from accel.quant import W4A8, W8A8, QuantConfig, quantize_
from accel.sampling import Samples, sample
from accel.train import TrainConfig

__all__ = ["AccelError", "CacheConfig", "CalibConfig", "CalibrationSet", "ConfigError", "Denoiser", "DistillConfig", "EvalConfig", "Evaluation",
           "ExportConfig", "OptimizeConfig", "PruneConfig", "QuantConfig", "SamplingSpec", "Samples", "StepCall",
           "StepHook", "TrainConfig", "Trajectory", "W4A8", "W8A8", "__version__", "cache_", "calibrate", "distill", "evaluate", "load",
           "optimize_", "prune_", "quantize_", "sample", "save"]


def save(model: Denoiser, out, overwrite: bool = False, evaluation: Evaluation | None = None) -> None:
    """Write ``model`` as an accel artifact directory (atomically), with its report if given."""
    from accel.artifact import write_model_files
    from accel.core.files import atomic_dir
    from accel.report import write_report

    with atomic_dir(out, overwrite) as staging:
        write_model_files(model, staging)
        if evaluation is not None:
            write_report(staging, evaluation.report, evaluation.images)
