"""accel: make diffusion denoisers smaller and faster, and show what it cost.

    import accel
    model = accel.load("digits")                      # or a diffusers folder, an artifact
    result = accel.evaluate(model, config=accel.EvalConfig(n=500))
    print(result.report["original"]["fid"])
"""
__version__ = "0.1.0"

from accel.errors import AccelError
from accel.evaluate import EvalConfig, Evaluation, evaluate
from accel.models.denoiser import Denoiser
from accel.models.loading import load
from accel.optimize import OptimizeConfig, optimize_
from accel.quant.apply import quantize_
from accel.quant.config import W4A8, W8A8, QuantConfig
from accel.sampling import SamplerConfig, Samples, sample

__all__ = ["AccelError", "Denoiser", "EvalConfig", "Evaluation", "OptimizeConfig", "QuantConfig", "SamplerConfig",
           "Samples", "W4A8", "W8A8", "evaluate", "load", "optimize_", "quantize_", "sample", "save"]


def save(model: Denoiser, out, overwrite: bool = False, evaluation: Evaluation | None = None,
         sections: list[str] = ()) -> None:
    """Write ``model`` as an accel artifact directory (atomically), with its report if given."""
    from accel.artifact import atomic_dir, write_model_files
    from accel.report import write_report

    with atomic_dir(out, overwrite) as staging:
        write_model_files(model, staging)
        if evaluation is not None:
            write_report(staging, evaluation.report, evaluation.images, sections)
