"""The core every capability plugs into, and which imports none of them: errors, the config base, the transform
registry, the Denoiser with its sampling spec and step hooks, and writing files atomically.

Layering (enforced by import-linter, see pyproject.toml): core <- data, kernels <- models, metrics, sampling,
report, artifact <- evaluate, calib <- capabilities (quant, optimize, export, ...) <- cli and the public
``accel`` package. Capabilities never import one another; they meet here.
"""
from accel.core.config import Config
from accel.core.denoiser import Denoiser
from accel.core.errors import AccelError, ConfigError
from accel.core.hooks import StepCall, StepHook, Trajectory
from accel.core.sampling_spec import SamplingSpec
from accel.core.version import __version__

__all__ = ["AccelError", "Config", "ConfigError", "Denoiser", "SamplingSpec", "StepCall", "StepHook", "Trajectory",
           "__version__"]
