"""Frechet distance between Gaussian fits of feature sets (FID), in float64, and the reference statistics."""
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
    def of(cls, features: np.ndarray) -> "FeatureStats":
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(f"need a 2-d array of at least 2 feature rows, got shape {features.shape}")
        return cls(features.mean(axis=0), np.cov(features, rowvar=False), len(features))


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)).

    tr((S_a S_b)^(1/2)) equals tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)); the inner matrix is symmetric positive
    semi-definite, so its square root comes from a real eigendecomposition instead of a general (complex,
    sometimes unstable) matrix square root.
    """
    root_a = _symmetric_sqrt(a.cov)
    inner = root_a @ b.cov @ root_a
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2.0), 0.0, None)).sum()
    mean_term = float(np.sum((a.mean - b.mean) ** 2))
    return max(0.0, mean_term + float(np.trace(a.cov) + np.trace(b.cov) - 2.0 * trace_sqrt))


@lru_cache(maxsize=1)
def digits_reference() -> tuple[FeatureStats, float]:
    """Statistics of all 1,797 real digits, and the FID floor: FID between two disjoint random halves."""
    from accel.data import digits_images
    from accel.metrics.digits_cnn import DigitsFeatures, to_uint8

    images, _ = digits_images()
    features = DigitsFeatures()(to_uint8(images))
    order = np.random.default_rng(0).permutation(len(features))
    half = len(order) // 2
    floor = frechet_distance(FeatureStats.of(features[order[:half]]), FeatureStats.of(features[order[half:2 * half]]))
    return FeatureStats.of(features), floor
