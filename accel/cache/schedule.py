"""Which steps of a trajectory run the whole network (and refresh the cache) and which reuse it."""

from __future__ import annotations

import math

from accel.cache.config import CacheConfig

QUADRATIC_POWER = 2.0


def full_steps(steps: int, config: CacheConfig) -> tuple[int, ...]:
    """Sorted indices of the full steps of a ``steps``-step trajectory; always contains step 0 (the
    cache starts empty) and ceil(steps / interval) steps in all, for both schedules, so they cost
    the same."""
    count = math.ceil(steps / config.interval)
    if config.schedule == "uniform" or count >= steps:
        return tuple(range(0, steps, config.interval))
    return _crowded_around(steps, count, config.center * (steps - 1))


def _crowded_around(steps: int, count: int, center: float) -> tuple[int, ...]:
    """``count`` distinct step indices from 0 to steps - 1, the gaps between them growing
    quadratically with the distance from ``center``: step = center + sign(u) |u|^2 for u evenly
    spaced (DeepCache's non-uniform 1:N). Rounding can merge two indices; the free ones are filled
    nearest ``center`` first."""
    low, high = -(center ** (1 / QUADRATIC_POWER)), (steps - 1 - center) ** (1 / QUADRATIC_POWER)
    picked = {0}
    for i in range(count):
        u = low + (high - low) * i / max(count - 1, 1)
        picked.add(
            min(steps - 1, max(0, round(center + math.copysign(abs(u) ** QUADRATIC_POWER, u))))
        )
    by_distance = sorted(range(steps), key=lambda step: (abs(step - center), step))
    for step in by_distance:
        if len(picked) >= count:
            break
        picked.add(step)
    while len(picked) > count:  # step 0 joined a full set: drop the one farthest from the centre
        picked.remove(max(picked - {0}, key=lambda step: (abs(step - center), step)))
    return tuple(sorted(picked))
