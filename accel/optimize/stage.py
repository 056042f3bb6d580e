"""The optimize stage (``accel optimize``, a recipe's ``optimize`` stage): fused kernels, precision,
layout and CUDA graphs, no weight changed."""

from __future__ import annotations

from accel.core import registry, stages
from accel.core.sampling_spec import SamplerChange
from accel.core.stages import SAMPLER_KEYS, Context, Key, Settings, StageResult, change_sampler
from accel.optimize.config import OptimizeConfig


def run(model, settings: Settings, context: Context) -> StageResult:
    change_sampler(model, settings)
    return StageResult(model, registry.apply(model, "optimize", settings["optimize"]))


OPTIMIZE_STAGE = stages.register(
    stages.Stage(
        name="optimize",
        roles={"optimize": OptimizeConfig(), "sampling": SamplerChange()},
        run=run,
        keys={
            "no-channels-last": Key(
                "optimize", "channels_last", convert=lambda on: not on, switch=True
            ),
            **SAMPLER_KEYS,
        },
        open_roles=("optimize",),
    )
)
