"""scikit-learn's bundled handwritten digits (1,797 images, 8x8, 16 grey levels) at 16x16 in [-1,
1].

The images ship inside scikit-learn, so the reference model and its FID classifier can be trained
and evaluated on any machine without a download.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

DIGITS_SHAPE = (1, 16, 16)
_SPLIT_SEED = 0


def digits_images() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as float32 (N, 1, 16, 16) in [-1, 1] and their int64 labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # [0, 1], 8x8
    upsampled = F.interpolate(pixels, size=DIGITS_SHAPE[1:], mode="bilinear", align_corners=False)
    images = upsampled.clamp(0.0, 1.0) * 2.0 - 1.0
    return images, torch.from_numpy(bunch.target.astype(np.int64))


def digits_split(held_out_fraction: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a fixed, class-stratified (train, held-out) split used by the FID classifier."""
    _, labels = digits_images()
    generator = np.random.default_rng(_SPLIT_SEED)
    train, held_out = [], []
    for digit in range(10):
        members = np.flatnonzero(labels.numpy() == digit)
        generator.shuffle(members)
        cut = int(round(len(members) * held_out_fraction))
        held_out.extend(members[:cut])
        train.extend(members[cut:])
    return torch.tensor(sorted(train)), torch.tensor(sorted(held_out))
