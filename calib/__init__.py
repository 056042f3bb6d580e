"""Calibration data from the full-precision sampler's trajectories (installed as ``accel.calib``)."""
