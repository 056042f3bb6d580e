"""Calibration data from the model's own sampler trajectories (installed as ``accel.calib``)."""

from accel.calib.collect import CalibConfig, CalibFile, CalibrationSet, calibrate

__all__ = ["CalibConfig", "CalibFile", "CalibrationSet", "calibrate"]
