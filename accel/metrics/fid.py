"""Frechet distance between Gaussian fits of feature sets (FID), in float64, and the reference
statistics."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class FeatureStats:
    mean: np.ndarray
    cov: np.ndarray
    count: int

    @classmethod
    def of(cls, features: np.ndarray) -> FeatureStats:
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(
                f"need a 2-d array of at least 2 feature rows, got shape {features.shape}"
            )
        return cls(features.mean(axis=0), np.cov(features, rowvar=False), len(features))


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)).

    tr((S_a S_b)^(1/2)) equals tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)); the inner matrix is symmetric
    positive semi-definite, so its square root comes from a real eigendecomposition instead of a
    general (complex, sometimes unstable) matrix square root.
    """
    root_a = _symmetric_sqrt(a.cov)
    inner = root_a @ b.cov @ root_a
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2.0), 0.0, None)).sum()
    mean_term = float(np.sum((a.mean - b.mean) ** 2))
    return max(0.0, mean_term + float(np.trace(a.cov) + np.trace(b.cov) - 2.0 * trace_sqrt))


@dataclass(frozen=True)
class RealReference:
    """Statistics of the real images, and the FID floor: FID between two disjoint random halves A
    and B.

    FID shrinks as the sample count grows, so the floor (at half the real set) is comparable only
    with a model's FID at the same size: ``fid_at_floor_size`` scores a model's first ``half_size``
    samples against half B, the same real images the floor uses.
    """

    stats: FeatureStats
    floor: float
    half_b: FeatureStats

    @property
    def half_size(self) -> int:
        return self.half_b.count

    @classmethod
    def of(cls, real_features: np.ndarray, seed: int = 0) -> RealReference:
        order = np.random.default_rng(seed).permutation(len(real_features))
        half = len(order) // 2
        half_a = FeatureStats.of(real_features[order[:half]])
        half_b = FeatureStats.of(real_features[order[half : 2 * half]])
        return cls(FeatureStats.of(real_features), frechet_distance(half_a, half_b), half_b)


@lru_cache(maxsize=1)
def digits_reference() -> RealReference:
    """The reference for the digits: all 1,797 real images through the shipped classifier."""
    from accel.data import digits_images
    from accel.metrics.digits_cnn import DigitsFeatures, to_uint8

    images, _ = digits_images()
    return RealReference.of(DigitsFeatures()(to_uint8(images)))
