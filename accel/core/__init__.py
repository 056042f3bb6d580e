"""The core every capability plugs into, and which imports none of them: errors, the config base,
the transform and stage registries, the Denoiser with its sampling spec and step hooks, writing
files atomically, and processes.

Layers, each importing only those below it (the import-linter contracts in pyproject.toml;
docs/architecture.md): cli <- compress, measure <- capabilities (quant, optimize, export, prune,
distillation, cache) <- calib <- evaluate <- report, models <- train <- metrics <- sampling,
artifact <- kernels, data <- core. Capabilities never import one another; they meet here.
"""

from accel.core.config import Config
from accel.core.denoiser import Denoiser
from accel.core.errors import AccelError, ConfigError
from accel.core.hooks import StepCall, StepHook, Trajectory
from accel.core.sampling_spec import SamplingSpec
from accel.core.version import __version__

__all__ = [
    "AccelError",
    "Config",
    "ConfigError",
    "Denoiser",
    "SamplingSpec",
    "StepCall",
    "StepHook",
    "Trajectory",
    "__version__",
]
