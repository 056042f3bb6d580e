"""Where training images come from (``DataConfig.source``, ``--data``): the reference model's own
training set, an ``.npz`` of uint8 images (the ``--fid-ref`` format), or ``teacher``: samples of the
original model itself, for data-free training. A class-conditional model's images come with their
labels where the source has them (the digits set, the teacher's samples), so a training batch pairs
each image with its own class."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from accel.core.config import Config
from accel.core.files import atomic_file
from accel.core.weights import file_sha256
from accel.data import digits_images, digits_split
from accel.metrics.quality import load_images_npz
from accel.sampling import sample

TEACHER = "teacher"
DIGITS = "digits"
DIGITS_MODELS = ("digits", "digits-dit")  # the built-in references, trained on the digits set
GIVEN = "given"  # images a Python caller passed in


@dataclass(frozen=True)
class DataConfig(Config):
    # None: the digits training set (for the built-in model and models made from it); "teacher":
    # samples of the original (data-free); else an .npz of uint8 images N x C x H x W
    source: str | None = None
    teacher_samples: int = 1000  # "teacher": how many samples are drawn, once

    def validate(self) -> None:
        if self.source == TEACHER and self.teacher_samples < 2:
            raise self.invalid("teacher_samples", f"must be at least 2, got {self.teacher_samples}")
        if self.source not in (None, DIGITS, TEACHER) and not Path(self.source).is_file():
            raise self.invalid(
                "source",
                f"{self.source}: no such file (give an .npz of uint8 images, or 'teacher')",
            )


@dataclass
class TrainingImages:
    images: torch.Tensor  # N x C x H x W, float32 in [-1, 1]
    source: str  # "digits", "teacher" or the file's path
    # what makes two runs' data the same (a checkpoint is resumed only with the same data)
    identity: dict
    labels: torch.Tensor | None = None  # each image's class (int64), where the source has them

    def describe(self) -> str:
        if self.source == DIGITS:
            return f"the digits training set ({len(self.images)} images)"
        if self.source == TEACHER:
            return f"{len(self.images)} samples of the original model (data-free)"
        if self.source == GIVEN:
            return f"{len(self.images)} images given by the caller"
        return f"{self.source} ({len(self.images)} images)"


def data_identity(config: DataConfig, original, seed: int = 0) -> dict:
    """What makes two runs' training data the same, known before any image is loaded or drawn.
    Refuses data that cannot be used."""
    source = config.source
    if source is None:
        # the built-in model, or an artifact made from it (a pruned teacher)
        if original.origin not in DIGITS_MODELS:
            raise config.invalid(
                "source",
                "is needed for this model: an .npz of uint8 images (N x C x H x W), "
                "or 'teacher' (samples of the model itself)",
            )
        source = DIGITS
    if source == DIGITS:
        return {"data": DIGITS}
    if source == TEACHER:
        return {
            "data": TEACHER,
            "samples": config.teacher_samples,
            "seed": seed,
            "sampler": original.sampling.to_dict(),
        }
    return {"data": str(Path(source).resolve()), "sha256": file_sha256(Path(source))}


def training_images(
    config: DataConfig,
    original,
    *,
    seed: int = 0,
    batch_size: int = 500,
    progress: bool = True,
    cache: Path | None = None,
) -> TrainingImages:
    """The images ``config`` names for ``original``, the model being compressed (its sample shape is
    checked; it draws the teacher samples). With ``cache`` (a .safetensors path), teacher samples
    are drawn once and read back from there after."""
    identity, labels = data_identity(config, original, seed), None
    if identity["data"] == DIGITS:
        images, labels = _digits_for(original)
    elif identity["data"] == TEACHER:
        images, labels = _teacher_samples(
            original, config.teacher_samples, seed, batch_size, progress, cache
        )
    else:
        images = torch.from_numpy(
            load_images_npz(Path(config.source)).astype(np.float32) / 127.5 - 1.0
        )
    if tuple(images.shape[1:]) != tuple(original.sample_shape):
        raise config.invalid(
            "source",
            f"{config.source}: images are {tuple(images.shape[1:])} (C x H x W) and "
            f"the model takes {tuple(original.sample_shape)}",
        )
    source = identity["data"] if identity["data"] in (DIGITS, TEACHER) else str(config.source)
    return TrainingImages(images.float(), source, identity, labels)


def _digits_for(original) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The digits set as ``original``'s reference was trained on it: all 1,797 images (the
    unconditional UNet), or the class-stratified training split with labels (digits-dit: the
    held-out fifth is the FID classifier's)."""
    images, labels = digits_images()
    if original.cond_kind != "class":
        return images, None
    train_index, _ = digits_split()
    return images[train_index], labels[train_index]


def given_images(images: torch.Tensor, original) -> TrainingImages:
    """Images a Python caller passed directly (N x C x H x W in [-1, 1]), checked against
    ``original``."""
    if tuple(images.shape[1:]) != tuple(original.sample_shape):
        raise DataConfig().invalid(
            "source",
            f"images are {tuple(images.shape[1:])} (C x H x W) and the model "
            f"takes {tuple(original.sample_shape)}",
        )
    return TrainingImages(images.float(), GIVEN, {"data": GIVEN, "sha256": _tensor_sha256(images)})


def _tensor_sha256(tensor: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(tensor.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


def _teacher_samples(
    original, count: int, seed: int, batch_size: int, progress: bool, cache: Path | None
):
    """``count`` samples of ``original`` (and the labels they were drawn with, for a class model),
    drawn once into ``cache``."""
    from safetensors.torch import load_file, save_file

    if cache is not None and cache.is_file():
        saved = load_file(str(cache))
        return saved["images"], saved.get("labels")
    samples = sample(original, count, seed, batch_size=batch_size, progress=progress)
    tensors = {"images": samples.images.cpu().contiguous()}
    if samples.labels is not None:
        tensors["labels"] = samples.labels.cpu().contiguous()
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(cache) as partial:
            save_file(tensors, str(partial))
    return tensors["images"], tensors.get("labels")
