"""CacheConfig: how often the whole network runs, which skip level stays live in between, and where the full
steps fall. Frozen; round-trips to JSON."""
from __future__ import annotations

from dataclasses import dataclass

from accel.core.config import Config

SCHEDULES = ("uniform", "quadratic")


@dataclass(frozen=True)
class CacheConfig(Config):
    # one full step per `interval` steps on average; the steps between reuse the deep features (DeepCache's N)
    interval: int = 3
    # the skip level that stays live on cached steps: down block `branch` (and every shallower one) and its
    # matching up block run; everything deeper is read from the cache. 0 is the shallowest and cheapest.
    branch: int = 0
    # uniform: steps 0, N, 2N, ...; quadratic: as many full steps, quadratically denser around `center`
    # (DeepCache's non-uniform 1:N, for the part of the trajectory where deep features change fastest)
    schedule: str = "uniform"
    center: float = 0.4   # quadratic: where full steps crowd, as a fraction of the trajectory (DeepCache: ~40%)

    def validate(self) -> None:
        if self.interval < 1:
            raise self.invalid("interval", f"must be at least 1 (1: every step runs the whole network), got "
                                           f"{self.interval}")
        if self.branch < 0:
            raise self.invalid("branch", f"must be 0 (the shallowest skip level) or more, got {self.branch}")
        if self.schedule not in SCHEDULES:
            raise self.invalid("schedule", f"must be one of {', '.join(SCHEDULES)}, got '{self.schedule}'")
        if not 0.0 <= self.center <= 1.0:
            raise self.invalid("center", f"must be a fraction of the trajectory in [0, 1], got {self.center}")
