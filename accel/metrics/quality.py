"""Which FID applies to a model, and PSNR between two sets of samples drawn from the same noise."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from accel.core.errors import AccelError, ConfigError
from accel.metrics.fid import FeatureStats, RealReference, digits_reference, frechet_distance

DIGITS_SHAPE = (1, 16, 16)


@dataclass
class FidSetup:
    """A feature network and the real images to compare generated ones with (None: FID not
    available)."""

    features: Callable[[np.ndarray], np.ndarray] | None
    name: str | None
    real: RealReference | None
    unavailable_reason: str | None = None
    # the class a classifier reads in each image, where the feature network is one (digits-cnn)
    classify: Callable[[np.ndarray], np.ndarray] | None = None

    def class_accuracy(self, images: np.ndarray, labels: np.ndarray | None) -> dict:
        """The share of samples the classifier reads as the class they were drawn with, overall
        and per class (a class that collapses shows there, where FID averages it away)."""
        if labels is None or self.classify is None:
            return {"class_accuracy": None, "class_accuracy_by_class": None}
        correct = self.classify(images) == labels
        by_class = [
            round(float(correct[labels == c].mean()), 4) if (labels == c).any() else None
            for c in range(int(labels.max()) + 1)
        ]
        return {"class_accuracy": float(correct.mean()), "class_accuracy_by_class": by_class}

    def scores(self, images: np.ndarray, features: np.ndarray | None = None) -> dict:
        """``fid`` against all real images, and ``fid_at_floor_size`` (see RealReference);
        ``features``: the images' own, where the caller has them already."""
        if self.features is None:
            return {"fid": None, "fid_at_floor_size": None}
        features = self.features(images) if features is None else features
        half = self.real.half_size
        at_floor_size = (
            frechet_distance(FeatureStats.of(features[:half]), self.real.half_b)
            if len(features) >= half
            else None
        )
        return {
            "fid": frechet_distance(FeatureStats.of(features), self.real.stats),
            "fid_at_floor_size": at_floor_size,
        }

    def feature_distance(self, reference: np.ndarray, images: np.ndarray) -> float | None:
        """How far each image is from the reference image drawn from the same noise, in the feature
        network's eyes, averaged: |f(a)/|f(a)| - f(b)/|f(b)||^2, in [0, 4]. LPIPS's idea (distance
        in a trained network's unit-normalised features) with the FID network: at 4 bits FID
        barely moves while this still separates methods (SVDQuant reports LPIPS beside FID)."""
        if self.features is None:
            return None
        return unit_feature_distance(self.features(reference), self.features(images))


def unit_feature_distance(reference: np.ndarray, features: np.ndarray) -> float:
    """Mean |a/|a| - b/|b||^2 over paired feature rows (``FidSetup.feature_distance``)."""
    a, b = _unit_rows(reference), _unit_rows(features)
    return float(np.mean(np.sum((a - b) ** 2, axis=1)))


def _unit_rows(features: np.ndarray) -> np.ndarray:
    features = features.astype(np.float64).reshape(len(features), -1)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def fid_setup(
    sample_shape: tuple[int, ...],
    inception_weights: str | Path | None = None,
    reference_images: str | Path | None = None,
    device: str = "cpu",
) -> FidSetup:
    """Digits-CNN FID for 1x16x16 models; Inception FID when the user gives the weights file and
    real images; otherwise no FID, with the reason."""
    if inception_weights is not None:
        return _inception_setup(inception_weights, reference_images, device)
    if tuple(sample_shape) == DIGITS_SHAPE:
        from accel.metrics.digits_cnn import DigitsFeatures

        features = DigitsFeatures()
        return FidSetup(features, features.name, digits_reference(), classify=features.classes)
    return FidSetup(
        None,
        None,
        None,
        "FID for this model needs an Inception weights file and real images (.npz; accel eval "
        "--inception-weights, --fid-ref)",
    )


def _inception_setup(
    weights: str | Path, reference_images: str | Path | None, device: str
) -> FidSetup:
    from accel.metrics.inception import InceptionFeatures

    if reference_images is None:
        raise ConfigError(
            "EvalConfig",
            "fid_ref",
            "is needed for Inception FID: real images to compare with (an "
            ".npz with a uint8 array 'images', N x C x H x W)",
        )
    # before the weights: a bad file fails without loading a network
    real = load_images_npz(reference_images)
    features = InceptionFeatures(weights, device=device)
    return FidSetup(features, InceptionFeatures.name, RealReference.of(features(real)))


def load_images_npz(path: str | Path) -> np.ndarray:
    try:
        with np.load(path) as archive:
            images = archive["images"]
    # np.load: a damaged .npz
    except (
        OSError,
        KeyError,
        ValueError,
        EOFError,
        zipfile.BadZipFile,
    ) as error:
        raise AccelError(
            f"cannot read images from {path}: need an .npz with a uint8 array 'images' ({error})"
        )
    if images.dtype != np.uint8 or images.ndim != 4:
        raise AccelError(
            f"{path}: 'images' must be uint8 N x C x H x W, got {images.dtype} {images.shape}"
        )
    if images.shape[1] not in (1, 3) or len(images) < 2:
        raise AccelError(
            f"{path}: 'images' must hold at least 2 images with 1 or 3 channels, got shape "
            f"{images.shape}"
        )
    return images


def psnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    """PSNR in dB over all pixels of two uint8 image sets (peak 255); infinite when identical."""
    mse = np.mean((reference.astype(np.float64) - other.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)
