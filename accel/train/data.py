"""Where training images come from (``--data``): the reference model's own training set, an ``.npz`` of uint8
images (the ``--fid-ref`` format), or ``teacher``: samples of the original model itself, for data-free training."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from accel.core.errors import AccelError
from accel.core.files import atomic_file
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


def data_identity(data: str | None, original, teacher_samples: int = 1000, seed: int = 0) -> dict:
    """What makes two runs' training data the same, known before any image is loaded or drawn; ``data`` as
    for ``training_images``. Refuses data that cannot be used."""
    if data is None:
        if original.origin != DIGITS:  # the built-in model, or an artifact made from it (a pruned teacher)
            raise AccelError("this model needs training images: --data FILE.npz (uint8 N x C x H x W) or --data "
                             "teacher (samples of the model itself)")
        data = DIGITS
    if data == DIGITS:
        return {"data": DIGITS}
    if data == TEACHER:
        if teacher_samples < 2:
            raise AccelError(f"--teacher-samples must be at least 2, got {teacher_samples}")
        return {"data": TEACHER, "samples": teacher_samples, "seed": seed, "sampler": original.sampling.to_dict()}
    path = Path(data)
    if not path.is_file():
        raise AccelError(f"--data {data}: no such file (give an .npz of uint8 images, or 'teacher')")
    return {"data": str(path.resolve()), "sha256": file_sha256(path)}


def training_images(data: str | None, original, *, teacher_samples: int = 1000, seed: int = 0,
                    batch_size: int = 500, progress: bool = True, cache: Path | None = None) -> TrainingImages:
    """``data``: None (the digits training set, for the built-in model only), ``"teacher"`` or an .npz path;
    ``original`` is the model being compressed (its sample shape is checked; it draws the teacher samples).
    With ``cache`` (a .safetensors path), teacher samples are drawn once and read back from there after."""
    identity = data_identity(data, original, teacher_samples, seed)
    if identity["data"] == DIGITS:
        images, _ = digits_images()
    elif identity["data"] == TEACHER:
        images = _teacher_samples(original, teacher_samples, seed, batch_size, progress, cache)
    else:
        images = torch.from_numpy(load_images_npz(Path(data)).astype(np.float32) / 127.5 - 1.0)
    if tuple(images.shape[1:]) != tuple(original.sample_shape):
        raise AccelError(f"--data {data}: images are {tuple(images.shape[1:])} (C x H x W) and the model takes "
                         f"{tuple(original.sample_shape)}")
    source = identity["data"] if identity["data"] in (DIGITS, TEACHER) else str(data)
    return TrainingImages(images.float(), source, identity)


def _teacher_samples(original, count: int, seed: int, batch_size: int, progress: bool, cache: Path | None):
    from safetensors.torch import load_file, save_file

    if cache is not None and cache.is_file():
        return load_file(str(cache))["images"]
    images = sample(original, count, seed, batch_size=batch_size, progress=progress).images.cpu()
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(cache) as partial:
            save_file({"images": images.contiguous()}, str(partial))
    return images
