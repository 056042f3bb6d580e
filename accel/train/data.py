"""Where training images come from (``--data``): the reference model's own training set, an ``.npz`` of uint8
images (the ``--fid-ref`` format), or ``teacher``: samples of the original model itself, for data-free training."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from accel.core.errors import AccelError
from accel.core.weights import file_sha256
from accel.data import digits_images
from accel.metrics.quality import load_images_npz
from accel.sampling import sample

TEACHER = "teacher"
DIGITS = "digits"


@dataclass
class TrainingImages:
    images: torch.Tensor  # N x C x H x W, float32 in [-1, 1]
    source: str           # "digits", "teacher" or the file's path
    identity: dict        # what makes two runs' data the same (a checkpoint is resumed only with the same data)

    def describe(self) -> str:
        if self.source == DIGITS:
            return f"the digits training set ({len(self.images)} images)"
        if self.source == TEACHER:
            return f"{len(self.images)} samples of the original model (data-free)"
        return f"{self.source} ({len(self.images)} images)"


def training_images(data: str | None, original, *, teacher_samples: int = 1000, seed: int = 0,
                    batch_size: int = 500, progress: bool = True) -> TrainingImages:
    """``data``: None (the digits training set, for the built-in model only), ``"teacher"`` or an .npz path;
    ``original`` is the model being compressed (its sample shape is checked; it draws the teacher samples)."""
    if data is None:
        if original.source != DIGITS:
            raise AccelError("this model needs training images: --data FILE.npz (uint8 N x C x H x W) or --data "
                             "teacher (samples of the model itself)")
        data = DIGITS
    if data == DIGITS:
        images, _ = digits_images()
        identity = {"data": DIGITS}
    elif data == TEACHER:
        if teacher_samples < 2:
            raise AccelError(f"--teacher-samples must be at least 2, got {teacher_samples}")
        images = sample(original, teacher_samples, seed, batch_size=batch_size, progress=progress).images.cpu()
        identity = {"data": TEACHER, "samples": teacher_samples, "sampler": original.sampling.to_dict()}
    else:
        path = Path(data)
        if not path.is_file():
            raise AccelError(f"--data {data}: no such file (give an .npz of uint8 images, or 'teacher')")
        images = torch.from_numpy(load_images_npz(path).astype(np.float32) / 127.5 - 1.0)
        identity = {"data": str(path.resolve()), "sha256": file_sha256(path)}
    if tuple(images.shape[1:]) != tuple(original.sample_shape):
        raise AccelError(f"--data {data}: images are {tuple(images.shape[1:])} (C x H x W) and the model takes "
                         f"{tuple(original.sample_shape)}")
    return TrainingImages(images.float(), data if data in (DIGITS, TEACHER) else str(data), identity)
