import numpy as np
import pytest
import scipy.linalg
import torch

from accel.data import digits_images, digits_split
from accel.metrics.digits_cnn import RECORD_PATH, WEIGHTS_PATH, DigitsCNN, DigitsFeatures, to_uint8
from accel.metrics.fid import FeatureStats, RealReference, digits_reference, frechet_distance


def scipy_fid(a: FeatureStats, b: FeatureStats) -> float:
    """The textbook route (pytorch-fid's): general matrix square root of S_a S_b with scipy."""
    root = scipy.linalg.sqrtm(a.cov @ b.cov).real
    return float(
        np.sum((a.mean - b.mean) ** 2) + np.trace(a.cov) + np.trace(b.cov) - 2 * np.trace(root)
    )


@pytest.mark.parametrize("dim,scale,shift", [(8, 1.0, 0.0), (64, 1.3, 0.2), (64, 0.5, -1.0)])
def test_frechet_distance_matches_scipy_sqrtm(dim, scale, shift):
    rng = np.random.default_rng(dim)
    mixing = rng.normal(size=(dim, dim))
    a = FeatureStats.of(rng.normal(size=(600, dim)) @ mixing)
    b = FeatureStats.of((rng.normal(size=(500, dim)) * scale + shift) @ mixing)
    # Both routes are exact in float64; they differ only by rounding in eigen/Schur decompositions.
    assert frechet_distance(a, b) == pytest.approx(scipy_fid(a, b), rel=1e-8, abs=1e-8)


def test_frechet_distance_of_identical_and_shifted_stats():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, 16))
    stats = FeatureStats.of(features)
    assert frechet_distance(stats, stats) == pytest.approx(0.0, abs=1e-9)
    shifted = FeatureStats.of(features + 0.5)  # same covariance, mean moved by 0.5 in 16 dims
    assert frechet_distance(stats, shifted) == pytest.approx(16 * 0.25, rel=1e-9)


def test_feature_stats_rejects_too_few_rows():
    with pytest.raises(ValueError):
        FeatureStats.of(np.zeros((1, 4)))


def test_shipped_classifier_held_out_accuracy_is_at_least_97_percent():
    images, labels = digits_images()
    _, held_out = digits_split()
    network = DigitsCNN().eval()
    from safetensors.torch import load_file

    network.load_state_dict(load_file(WEIGHTS_PATH))
    stored = torch.from_numpy(to_uint8(images[held_out])).float() / 127.5 - 1
    with torch.inference_mode():
        accuracy = (network(stored).argmax(1) == labels[held_out]).float().mean().item()
    assert accuracy >= 0.97
    import json

    assert json.loads(RECORD_PATH.read_text())["held_out_accuracy"] == pytest.approx(
        accuracy, abs=1e-4
    )


def test_split_is_disjoint_stratified_and_complete():
    train, held_out = digits_split()
    _, labels = digits_images()
    assert set(train.tolist()).isdisjoint(held_out.tolist())
    assert len(train) + len(held_out) == len(labels) == 1797
    counts = torch.bincount(labels[held_out], minlength=10)
    assert counts.min() >= 35  # about 20% of each class's ~180 images


def test_digits_reference_floor_and_real_vs_real():
    real = digits_reference()
    stats, floor = real.stats, real.floor
    assert stats.count == 1797 and real.half_size == 898
    assert 0 < floor < 1e3 and np.isfinite(floor)
    images, _ = digits_images()
    assert frechet_distance(
        FeatureStats.of(DigitsFeatures()(to_uint8(images))), stats
    ) == pytest.approx(0, abs=1e-6)
    # Noise images are far from digits: FID must be much larger than the floor.
    noise = np.random.default_rng(0).integers(0, 256, size=(500, 1, 16, 16), dtype=np.uint8)
    assert frechet_distance(FeatureStats.of(DigitsFeatures()(noise)), stats) > 10 * floor


def test_digits_features_reject_other_shapes():
    with pytest.raises(ValueError):
        DigitsFeatures()(np.zeros((2, 3, 16, 16), dtype=np.uint8))


def test_real_reference_halves_are_disjoint_and_floor_shrinks_with_more_samples():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2000, 8))
    small, large = RealReference.of(features[:200]), RealReference.of(features)
    assert small.half_size == 100 and large.half_size == 1000
    # the finite-sample bias of FID, which is why sizes must match
    assert small.floor > large.floor > 0
