"""The FID feature network for the reference model: a small CNN classifier trained on the 16x16
digits.

Inception features mean little on 16x16 grey digits, so FID for ``digits`` uses the 64-d penultimate
layer of this classifier (the same recipe as Inception FID, on a network trained for the data). Its
weights and held-out accuracy ship in ``digits_cnn.safetensors`` / ``digits_cnn.json``;
``train_digits_cnn`` rebuilds them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from accel.core.files import atomic_dir, ensure_writable_dir
from accel.data import digits_images, digits_split

WEIGHTS_PATH = Path(__file__).parent / "digits_cnn.safetensors"
RECORD_PATH = WEIGHTS_PATH.with_suffix(".json")
FEATURE_DIM = 64


class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.embed = nn.Linear(64 * 4 * 4, FEATURE_DIM)
        self.classify = nn.Linear(FEATURE_DIM, 10)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations of float images (N, 1, 16, 16) in [-1, 1]."""
        return F.relu(self.embed(self.convs(images).flatten(1)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(images))


def uint8_to_unit_range(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).float() / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float images in [-1, 1] to uint8 as an image file would store them."""
    return (
        ((images.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).cpu().numpy()
    )


class DigitsFeatures:
    """FID features of uint8 digit images (N, 1, 16, 16) from the shipped classifier."""

    name = "digits-cnn"

    def __init__(self, weights_path: Path = WEIGHTS_PATH):
        from safetensors.torch import load_file

        self.network = DigitsCNN().eval()
        self.network.load_state_dict(load_file(weights_path))

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        if images.ndim != 4 or images.shape[1:] != (1, 16, 16):
            raise ValueError(f"digits-cnn features need N x 1 x 16 x 16 images, got {images.shape}")
        return np.concatenate(
            [
                self.network.features(uint8_to_unit_range(chunk)).double().numpy()
                for chunk in np.array_split(images, max(1, len(images) // 1024))
            ]
        )

    @torch.inference_mode()
    def classes(self, images: np.ndarray) -> np.ndarray:
        """The digit the classifier reads in each uint8 image (N, 1, 16, 16)."""
        return np.concatenate(
            [
                self.network(uint8_to_unit_range(chunk)).argmax(1).numpy()
                for chunk in np.array_split(images, max(1, len(images) // 1024))
            ]
        )


def _shifted(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random translations of up to one pixel: handwritten digits are not centred exactly."""
    padded = F.pad(images, (1, 1, 1, 1), value=-1.0)
    dx, dy = torch.randint(0, 3, (2,), generator=generator).tolist()
    return padded[:, :, dy : dy + 16, dx : dx + 16]


def train_digits_cnn(
    out_dir: str | Path, epochs: int = 40, seed: int = 0, overwrite: bool = False
) -> dict:
    """Train the classifier on the fixed training split; report held-out accuracy; write its weights
    and record (``digits_cnn.safetensors``, ``digits_cnn.json``, the names the package ships) into
    the folder ``out_dir``."""
    from safetensors.torch import save_file

    ensure_writable_dir(out_dir, overwrite)  # before minutes of training
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    images, labels = digits_images()
    train_idx, held_idx = digits_split()
    # Train on images as they are stored (uint8), as FID will see them.
    images = uint8_to_unit_range(to_uint8(images))
    network = DigitsCNN()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    for _ in tqdm(range(epochs), desc="train digits-cnn", unit="epoch"):
        network.train()
        for batch in torch.randperm(len(train_idx), generator=generator).split(64):
            index = train_idx[batch]
            loss = F.cross_entropy(network(_shifted(images[index], generator)), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
    network.eval()
    with torch.inference_mode():
        predicted = network(images[held_idx]).argmax(1)
    accuracy = (predicted == labels[held_idx]).float().mean().item()
    record = {
        "held_out_accuracy": round(accuracy, 4),
        "held_out_images": len(held_idx),
        "train_images": len(train_idx),
        "epochs": epochs,
        "seed": seed,
        "feature_dim": FEATURE_DIM,
        "torch": torch.__version__,
    }
    with atomic_dir(out_dir, overwrite) as staging:
        save_file(network.state_dict(), str(staging / WEIGHTS_PATH.name))
        (staging / RECORD_PATH.name).write_text(json.dumps(record, indent=2) + "\n")
    return record
