"""What each transforming command measures: the model its stage made, side by side with the model it
started from (``accel.evaluate``), and what only that stage's report shows (the FID right after
pruning, the student against the teacher's own few-step DDIM, the cache against the plain sampler at
equal MACs, the optimized model's output parity, the quantization and pruning ablations).

Capabilities transform and measure nothing; this package measures, and writes the markdown of what
it measured with accel.report's one formatter. Goals (is this result good enough?) are the
benchmarks' business (bench/).
"""

from accel.measure.stage import Measured, measure_stage

__all__ = ["Measured", "measure_stage"]
