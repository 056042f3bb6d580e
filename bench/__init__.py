"""Benchmark suites and the benchmark report (not installed with the package)."""

import logging

from accel.cli import IMPORT_NOISE

# as accel's CLI does: torchao's and diffusers' import warnings would fill every benchmark's log
for _name in IMPORT_NOISE:
    logging.getLogger(_name).setLevel(logging.ERROR)
