"""Calibration data from the model's own sampler trajectories (installed as ``accel.calib``)."""
from accel.calib.collect import CalibConfig, CalibrationSet, calibrate

__all__ = ["CalibConfig", "CalibrationSet", "calibrate"]
